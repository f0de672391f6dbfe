//! A node's claims on PostgreSQL (see [`crate::ReactorConfig::cluster`]).
//! Every execution a node writes is claimed in its name by the database; the
//! node renews all its claims in one statement, six times per claim time to
//! live. The executions of a node whose claims ran out (it died, or stalled
//! past them) are taken over by whichever live node gets there first, and
//! picked up as a restarted server picks up what its previous run left: a
//! running one ends `abandoned` (or is retried by its policy), a waiting one
//! runs, a workflow resumes from its last step, an inquiry waits on. From
//! the takeover on, the database refuses the previous holder's writes.

use std::collections::HashSet;

use squall_core::ExecutionId;
use squall_store::pg::PgStore;

use crate::dispatch::{ClusterNode, Reactor};

impl Reactor {
    /// What this node is to pick up at start. Without a cluster node (a
    /// SQLite file, or a store of one server): `None`, everything left
    /// unfinished. With one: the unfinished executions nobody claims and
    /// those of nodes whose claims ran out, now this node's; executions
    /// that live nodes hold are theirs.
    pub(crate) async fn claim_left_over(
        &self,
    ) -> Result<Option<HashSet<ExecutionId>>, squall_store::Error> {
        let (Some(node), Some(pg)) = (&self.inner.config.cluster, self.inner.store.postgres())
        else {
            return Ok(None);
        };
        let mut left: HashSet<ExecutionId> = pg
            .claim_unclaimed(&node.name, node.claim_ttl)
            .await?
            .into_iter()
            .collect();
        let adopted = pg.adopt_expired_claims(&node.name, node.claim_ttl).await?;
        left.extend(adopted.into_iter().map(|(_, id)| id));
        if !left.is_empty() {
            tracing::info!(
                executions = left.len(),
                "taking over the executions no live node holds"
            );
        }
        Ok(Some(left))
    }

    /// Renew this node's claims, and take over the executions of nodes
    /// whose claims ran out, for as long as this reactor runs.
    pub(crate) fn keep_claims(&self) {
        let (Some(node), Some(pg)) = (
            self.inner.config.cluster.clone(),
            self.inner.store.postgres().cloned(),
        ) else {
            return;
        };
        let reactor = self.clone();
        self.spawn(async move {
            let mut tick = tokio::time::interval(node.claim_ttl / 6);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for n in 0u64.. {
                tick.tick().await;
                if let Err(e) = pg.renew_leases(&node.name, node.claim_ttl).await {
                    tracing::warn!(node = %node.name, error = %e, "could not renew this node's claims");
                }
                // A third of the time to live: a dead node's executions
                // are taken over at most that long after its claims ran
                // out.
                if n % 2 == 1 {
                    reactor.take_over(&pg, &node).await;
                }
            }
        });
    }

    /// Take over and pick up the executions of nodes whose claims ran out.
    async fn take_over(&self, pg: &PgStore, node: &ClusterNode) {
        let adopted = match pg.adopt_expired_claims(&node.name, node.claim_ttl).await {
            Ok(adopted) if adopted.is_empty() => return,
            Ok(adopted) => adopted,
            Err(e) => {
                tracing::warn!(node = %node.name, error = %e, "could not look for executions of nodes that died");
                return;
            }
        };
        tracing::warn!(
            executions = adopted.len(),
            "took over the executions of a node whose claims ran out"
        );
        let scope: HashSet<ExecutionId> = adopted.into_iter().map(|(_, id)| id).collect();
        if let Err(e) = self.recover(Some(&scope)).await {
            tracing::error!(error = %e, "could not pick up the executions taken over");
        }
        if let Err(e) = self.recover_inquiries(Some(&scope)) {
            tracing::error!(error = %e, "could not pick up the inquiries taken over");
        }
    }

    /// Let this node's claims run out now, so that another node takes over
    /// at once what it leaves unfinished: after a graceful stop
    /// ([`Reactor::shutdown`]), when it runs nothing more.
    pub async fn release_claims(&self) {
        let (Some(node), Some(pg)) = (&self.inner.config.cluster, self.inner.store.postgres())
        else {
            return;
        };
        match pg.release_claims(&node.name).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(executions = n, "left unfinished executions to other nodes"),
            Err(e) => {
                tracing::warn!(error = %e, "could not release this node's claims; they run out on their own")
            }
        }
    }
}
