//! A node serving a PostgreSQL database. Until nodes share the work (the
//! queue, the sensors and timers under leases), one node serves a database
//! at a time: it holds the `server` lease and renews it, on a connection
//! of its own, from the moment it takes it until it gives it up; another
//! node started on the same database waits as a standby and takes over
//! once the lease runs out (the serving node stopped or died). A node that
//! cannot renew its lease before it runs out exits at once, before the
//! lease can pass to another node.
//!
//! The executions a node writes are claimed in its name (the connections
//! of its store say who they are); its reactor renews those claims, and
//! takes over those of nodes whose claims ran out (see
//! `squall_reactor::ClusterNode`), so the database itself refuses a write
//! from one of them still running.

use std::sync::Arc;
use std::time::{Duration, Instant};

use squall_store::pg::{LeaseClock, PgStore};

/// The lease a serving node holds.
const LEASE: &str = "server";

/// How long the lease lasts unrenewed: the longest a standby waits after
/// the serving node died.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(30);

/// How often the serving node renews it.
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// The exit status of a node that lost its lease.
const LOST_LEASE: i32 = 75;

/// This process's node: its name in the database's leases, and the
/// connection its lease goes through.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pg: PgStore,
    name: String,
    /// When the lease was last renewed: the node's other stores send
    /// nothing once it is overdue.
    clock: Arc<LeaseClock>,
}

impl Node {
    /// A node on `pg` (a store of its own, `PgStore::connect_for_lease`),
    /// with a name of this process's own, so a node restarted on the same
    /// host never renews the leases of the one it replaced.
    pub(crate) fn new(pg: PgStore) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".into())
            // A node's name is a setting of its connections: plain
            // characters only.
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '.', "-");
        let name = format!(
            "{host}-{}-{}",
            std::process::id(),
            &squall_core::trigger::new_id()[20..]
        );
        // Surely held until a renewal is overdue by a margin: the lease
        // runs out on the database no earlier than its time to live after
        // the renewal's statement, which ends before the clock is set.
        let clock = Arc::new(LeaseClock::new(LEASE_TTL - RENEW_EVERY));
        Self { pg, name, clock }
    }

    /// The clock of this node's lease, which its other stores go by.
    pub(crate) fn lease_clock(&self) -> Arc<LeaseClock> {
        self.clock.clone()
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Wait until this node holds the database's `server` lease, saying on
    /// stderr (once) which node it waits for; then renew it in a task of
    /// its own until [`Serving::release`]. A database that cannot be
    /// reached meanwhile is waited for, and said.
    pub(crate) async fn serve_when_free(&self) -> Serving {
        let mut said_holder = false;
        let mut said_error = false;
        loop {
            match self.pg.acquire_lease(LEASE, &self.name, LEASE_TTL).await {
                Ok(Some(_)) => {
                    self.clock.renewed();
                    break;
                }
                Ok(None) if !said_holder => {
                    let holder = match self.pg.lease_holder(LEASE).await {
                        Ok(Some((holder, _))) => holder,
                        _ => "another node".into(),
                    };
                    eprintln!(
                        "squall: node {holder} serves this database; waiting as a standby until it stops (at most {} s after it does)",
                        LEASE_TTL.as_secs()
                    );
                    tracing::info!(node = %self.name, %holder, "standby: waiting for the server lease");
                    said_holder = true;
                }
                Ok(None) => {}
                Err(e) => {
                    if !said_error {
                        eprintln!("squall: the database cannot be reached ({e}); trying again");
                        said_error = true;
                    }
                    tracing::warn!(node = %self.name, error = %e, "could not take the server lease");
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let node = self.clone();
        Serving {
            node: self.clone(),
            renewing: tokio::spawn(node.keep_serving()),
        }
    }

    /// Renew the lease for as long as this node serves. One that could
    /// not be renewed before it runs out (the database unreachable, or the
    /// lease taken) ends the process at once, before another node can take
    /// over: it must not go on running executions.
    async fn keep_serving(self) {
        let mut renewed = Instant::now();
        let mut tick = tokio::time::interval(RENEW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            // Within the lease's life, less a margin for the statement's
            // own time.
            let left = LEASE_TTL
                .saturating_sub(renewed.elapsed())
                .saturating_sub(RENEW_EVERY);
            let attempt = tokio::time::timeout(
                left.max(Duration::from_millis(100)),
                self.pg.acquire_lease(LEASE, &self.name, LEASE_TTL),
            )
            .await;
            match attempt {
                Ok(Ok(Some(_))) => {
                    renewed = Instant::now();
                    self.clock.renewed();
                }
                Ok(Ok(None)) => self.stop_now("the server lease was taken by another node"),
                Ok(Err(e)) => {
                    tracing::warn!(node = %self.name, error = %e, "could not renew the server lease")
                }
                Err(_) => tracing::warn!(node = %self.name, "renewing the server lease timed out"),
            }
            if renewed.elapsed() + RENEW_EVERY >= LEASE_TTL {
                self.stop_now("the server lease could not be renewed before it ran out");
            }
        }
    }

    fn stop_now(&self, why: &str) -> ! {
        tracing::error!(node = %self.name, why, "stopping at once");
        eprintln!("squall: {why}; this node stops at once (another node may serve now)");
        std::process::exit(LOST_LEASE);
    }
}

/// A node holding the `server` lease, renewed until released.
#[derive(Debug)]
pub(crate) struct Serving {
    node: Node,
    renewing: tokio::task::JoinHandle<()>,
}

impl Serving {
    /// Give the lease up (a graceful stop, once the work in flight is
    /// done): a standby takes over at once.
    pub(crate) async fn release(self) {
        self.renewing.abort();
        let node = &self.node;
        if let Err(e) = node.pg.release_lease(LEASE, &node.name).await {
            tracing::warn!(node = %node.name, error = %e, "could not release the server lease");
        }
    }
}
