//! A node on a PostgreSQL database. Every node serves the API and runs the
//! executions it is asked for; one node at a time **leads**: it holds the
//! database's `leader` lease and runs what must run once (the timers and
//! file watches, the housekeeping; each sensor has a lease of its own, and
//! the sensors spread over the nodes). Each node tries to take the
//! lease at start and every sixth of its lifetime after (`--lease-seconds`,
//! 30 by default: every 5 s), on a connection of its own, and the leader
//! renews it as often; when the leader stops or dies, another node leads
//! at most one lifetime later (at once after a graceful stop). A leader that
//! finds its lease taken, and any node that cannot reach the database
//! before its lease would run out, exits at once (status 75): a supervisor
//! starts it again.
//!
//! The executions a node writes are claimed in its name (the connections
//! of its store say who they are); its reactor renews those claims, and
//! takes over those of nodes whose claims ran out (see
//! `squall_reactor::ClusterNode`), so the database itself refuses a write
//! from one of them still running.

use std::sync::Arc;
use std::time::{Duration, Instant};

use squall_store::pg::{LeaseClock, PgStore};

/// The lease the leading node holds.
const LEASE: &str = "leader";

/// The exit status of a node that lost its lease.
const LOST_LEASE: i32 = 75;

/// This process's node: its name in the database's leases, and the
/// connection its lease goes through.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pg: PgStore,
    name: String,
    /// When the database last answered this node's lease statement: its
    /// other stores send nothing once that is overdue.
    clock: Arc<LeaseClock>,
    /// How long its lease (and its claims) last unrenewed.
    ttl: Duration,
    /// How often it renews them, or tries to take the lease: a sixth of
    /// `ttl`.
    every: Duration,
}

impl Node {
    /// A node on `pg` (a store of its own, `PgStore::connect_for_lease`),
    /// with a name of this process's own, so a node restarted on the same
    /// host never renews the leases of the one it replaced, whose lease
    /// lasts `ttl` unrenewed.
    pub(crate) fn new(pg: PgStore, ttl: Duration) -> Self {
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
        let every = ttl / 6;
        let clock = Arc::new(LeaseClock::new(ttl - every));
        Self {
            pg,
            name,
            clock,
            ttl,
            every,
        }
    }

    /// The clock of this node's lease, which its other stores go by.
    pub(crate) fn lease_clock(&self) -> Arc<LeaseClock> {
        self.clock.clone()
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// How long this node's lease and claims last unrenewed.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Get ready to serve. A node of a build whose schema is newer than
    /// the database's waits until it leads, and migrates it then (older
    /// nodes serving never see their schema change under them): `true`
    /// when it leads already. A database that cannot be reached meanwhile
    /// is waited for, and said.
    pub(crate) async fn ready(&self) -> bool {
        let mut said_holder = false;
        let mut said_error = false;
        let mut said_old = false;
        loop {
            // A node of the build before nodes served side by side holds
            // the `server` lease while it serves: wait for it to stop.
            if let Ok(Some((holder, _))) = self.pg.lease_holder("server").await {
                if !said_old {
                    eprintln!(
                        "squall: node {holder} serves this database alone (an older build); this node waits until it stops"
                    );
                    said_old = true;
                }
                tokio::time::sleep(self.every).await;
                continue;
            }
            let current = self.pg.schema_is_current().await;
            let attempt = match current {
                Ok(true) => return false,
                Ok(false) => self.pg.acquire_lease(LEASE, &self.name, self.ttl).await,
                Err(e) => Err(e.into()),
            };
            match attempt {
                Ok(Some(_)) => {
                    self.clock.renewed();
                    return true;
                }
                Ok(None) if !said_holder => {
                    eprintln!(
                        "squall: this build's database schema is newer than the database's; waiting to lead (at most {} s after the leader stops) to bring it up to date",
                        self.ttl.as_secs()
                    );
                    said_holder = true;
                }
                Ok(None) => {}
                Err(e) => {
                    if !said_error {
                        eprintln!("squall: the database cannot be reached ({e}); trying again");
                        said_error = true;
                    }
                    tracing::warn!(node = %self.name, error = %e, "could not reach the database");
                }
            }
            tokio::time::sleep(self.every).await;
        }
    }

    /// Stay in the cluster until [`Member::leave`]: in a task of its own,
    /// take the `leader` lease when no live node holds it (now, and every
    /// sixth of its lifetime), then say so on [`Member::leading`] and renew the lease for as
    /// long as this node runs. A leader whose lease was taken, or a node
    /// that cannot reach the database before its lease would run out, ends
    /// the process at once.
    pub(crate) fn join(&self) -> Member {
        let (tell, leading) = tokio::sync::watch::channel(false);
        let node = self.clone();
        Member {
            node: self.clone(),
            renewing: tokio::spawn(node.keep_membership(tell)),
            leading,
        }
    }

    async fn keep_membership(self, tell: tokio::sync::watch::Sender<bool>) {
        let mut leading = false;
        let mut said_leader = false;
        let mut answered = Instant::now();
        self.clock.renewed();
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // A process that was paused, or starved, past its lease: its
            // claims may be another node's now, its leadership too.
            if answered.elapsed() + self.every >= self.ttl {
                self.stop_now("this node's lease ran out (the process was paused, or the database out of reach)");
            }
            // Within the lease's life, less a margin for the statement's
            // own time.
            let left = self
                .ttl
                .saturating_sub(answered.elapsed())
                .saturating_sub(self.every);
            // The database counts the lease from the statement's start:
            // so does this node.
            let sent = Instant::now();
            let attempt = tokio::time::timeout(
                left.max(Duration::from_millis(100)),
                self.pg.hold_lease(LEASE, &self.name, self.ttl),
            )
            .await;
            match attempt {
                Ok(Ok(Some(_))) => {
                    answered = sent;
                    self.clock.renewed_at(sent);
                    if !leading {
                        leading = true;
                        eprintln!(
                            "squall: this node ({}) leads: it runs the timers and housekeeping",
                            self.name
                        );
                        tracing::info!(node = %self.name, "leading");
                        let _ = tell.send(true);
                    }
                }
                Ok(Ok(None)) if leading => {
                    self.stop_now("the leader lease was taken by another node")
                }
                Ok(Ok(None)) => {
                    // The database answers (and renewed this node's
                    // claims): it lives on.
                    answered = sent;
                    self.clock.renewed_at(sent);
                    if !said_leader {
                        let holder = match self.pg.lease_holder(LEASE).await {
                            Ok(Some((holder, _))) => holder,
                            _ => "another node".into(),
                        };
                        eprintln!(
                            "squall: node {holder} leads (timers, housekeeping); this node serves beside it, runs its share of the sensors, and leads if it stops"
                        );
                        said_leader = true;
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(node = %self.name, error = %e, "could not renew the leader lease")
                }
                Err(_) => tracing::warn!(node = %self.name, "the leader lease statement timed out"),
            }
            if answered.elapsed() + self.every >= self.ttl {
                self.stop_now("the database could not be reached before this node's lease ran out");
            }
        }
    }

    fn stop_now(&self, why: &str) -> ! {
        tracing::error!(node = %self.name, why, "stopping at once");
        eprintln!("squall: {why}; this node stops at once (other nodes carry on)");
        std::process::exit(LOST_LEASE);
    }
}

/// A node in the cluster, until it leaves.
#[derive(Debug)]
pub(crate) struct Member {
    node: Node,
    renewing: tokio::task::JoinHandle<()>,
    leading: tokio::sync::watch::Receiver<bool>,
}

impl Member {
    /// Whether this node leads, as it changes (once, to `true`).
    pub(crate) fn leading(&self) -> tokio::sync::watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Leave (a graceful stop, once the work in flight is done): the lease,
    /// if this node leads, is given up, and another node leads at once.
    pub(crate) async fn leave(self) {
        self.renewing.abort();
        let node = &self.node;
        if let Err(e) = node.pg.release_lease(LEASE, &node.name).await {
            tracing::warn!(node = %node.name, error = %e, "could not release the leader lease");
        }
    }
}
