//! A node serving a PostgreSQL database. Until nodes share the work (the
//! queue, the sensors and timers under leases), one node serves a database
//! at a time: it holds the `server` lease and renews it; another node
//! started on the same database waits as a standby and takes over once the
//! lease runs out (the serving node stopped or died). A node that cannot
//! renew its lease before it runs out stops serving, so two nodes never
//! serve at once.

use std::time::{Duration, Instant};

use squall_store::pg::PgStore;

/// The lease a serving node holds.
const LEASE: &str = "server";

/// How long the lease lasts unrenewed: the longest a standby waits after
/// the serving node died.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(30);

/// How often the serving node renews it.
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// This process's node: its name in the database's leases.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pg: PgStore,
    name: String,
}

impl Node {
    /// A name of this process's own, so a node restarted on the same host
    /// never renews the leases of the one it replaced.
    pub(crate) fn new(pg: PgStore) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".into());
        let name = format!(
            "{host}-{}-{}",
            std::process::id(),
            &squall_core::trigger::new_id()[20..]
        );
        Self { pg, name }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Wait until this node holds the database's `server` lease, saying on
    /// stderr (once) which node it waits for.
    pub(crate) async fn serve_when_free(&self) -> anyhow::Result<()> {
        let mut said = false;
        loop {
            if self
                .pg
                .acquire_lease(LEASE, &self.name, LEASE_TTL)
                .await?
                .is_some()
            {
                return Ok(());
            }
            if !said {
                let holder = self.pg.lease_holder(LEASE).await?;
                let holder = holder.map_or_else(|| "another node".into(), |(h, _)| h);
                eprintln!(
                    "squall: node {holder} serves this database; waiting as a standby until it stops (at most {} s after it does)",
                    LEASE_TTL.as_secs()
                );
                tracing::info!(node = %self.name, %holder, "standby: waiting for the server lease");
                said = true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Renew the lease until it is lost: resolves when this node could not
    /// renew it before it ran out (the database unreachable, or the lease
    /// taken), at which point it must stop serving.
    pub(crate) async fn keep_serving(self) {
        let mut renewed = Instant::now();
        let mut tick = tokio::time::interval(RENEW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Within the lease's life, less a margin for the clocks' drift
            // and the statement's own time.
            let left = LEASE_TTL
                .saturating_sub(renewed.elapsed())
                .saturating_sub(RENEW_EVERY);
            let attempt = tokio::time::timeout(
                left.max(Duration::from_millis(100)),
                self.pg.acquire_lease(LEASE, &self.name, LEASE_TTL),
            )
            .await;
            match attempt {
                Ok(Ok(Some(_))) => renewed = Instant::now(),
                Ok(Ok(None)) => {
                    tracing::error!(node = %self.name, "the server lease was taken by another node; stopping");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!(node = %self.name, error = %e, "could not renew the server lease")
                }
                Err(_) => tracing::warn!(node = %self.name, "renewing the server lease timed out"),
            }
            if renewed.elapsed() + RENEW_EVERY >= LEASE_TTL {
                tracing::error!(node = %self.name, "the server lease could not be renewed before it ran out; stopping");
                return;
            }
        }
    }

    /// Give the lease up (a graceful stop): a standby takes over at once.
    pub(crate) async fn release(&self) {
        if let Err(e) = self.pg.release_lease(LEASE, &self.name).await {
            tracing::warn!(node = %self.name, error = %e, "could not release the server lease");
        }
    }
}
