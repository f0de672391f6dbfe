//! A node's claims on PostgreSQL (see [`crate::ReactorConfig::cluster`]).
//! Every execution a node writes is claimed in its name by the database; the
//! node renews all its claims in one statement, six times per claim time to
//! live. The executions of a node whose claims ran out (it died, or stalled
//! past them) are taken over by whichever live node gets there first, and
//! picked up as a restarted server picks up what its previous run left: a
//! running one ends `abandoned` (or is retried by its policy), a waiting one
//! runs, a workflow resumes from its last step, an inquiry waits on. From
//! the takeover on, the database refuses the previous holder's writes.
//!
//! Work is shared the same way: a node whose workers are all taken says
//! it is busy; a node with free workers takes over the executions that
//! have waited on a busy node for a worker ([`SHARE_WAITED`]), and the
//! busy node, refused when it reaches one, drops it.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use squall_core::{Execution, ExecutionId, ExecutionStatus, TenantId};
use squall_store::pg::PgStore;

use crate::ExecutionError;
use crate::dispatch::{ClusterNode, Reactor};
use crate::runner::Work;

/// How long a node waits for the node holding an execution to answer.
const REPLY_WITHIN: Duration = Duration::from_secs(15);

/// How often a node with free workers looks for executions waiting on
/// busy nodes; sooner again after it took some (by then what it took is
/// queued here, and counted).
const SHARE_EVERY: Duration = Duration::from_millis(100);

/// How long an execution must have waited for a worker on its node before
/// a node with room takes it: a node that starts what it is asked at once
/// keeps it.
const SHARE_WAITED: Duration = Duration::from_millis(100);

/// What one node asks of the node holding an execution.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    Cancel {
        tenant: TenantId,
        execution: ExecutionId,
    },
    /// Pause (`pausing`) or resume (`resuming`) a workflow.
    SetStatus {
        tenant: TenantId,
        execution: ExecutionId,
        status: ExecutionStatus,
    },
    /// Answer an inquiry, for `user` (checked by the asking node first).
    Answer {
        tenant: TenantId,
        execution: ExecutionId,
        user: String,
        role: squall_core::auth::Role,
        response: serde_json::Value,
    },
}

/// The holder's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    /// Done: the execution as it stands now.
    Done(Box<Execution>),
    /// Answered: StackStorm's reply.
    Answered(serde_json::Value),
    /// It had ended already, as this.
    Ended(ExecutionStatus),
    /// It could not be done, for this reason.
    Failed(String),
}

impl Reactor {
    /// This node and its database, in a cluster (a node of several on
    /// PostgreSQL).
    pub(crate) fn cluster(&self) -> Option<(&ClusterNode, &PgStore)> {
        Some((
            self.inner.config.cluster.as_ref()?,
            self.inner.store.postgres()?,
        ))
    }

    /// What this node is to pick up at start. Without a cluster node (a
    /// SQLite file, or a store of one server): `None`, everything left
    /// unfinished. With one: the unfinished executions nobody claims and
    /// those of nodes whose claims ran out, now this node's; executions
    /// that live nodes hold are theirs.
    pub(crate) async fn claim_left_over(
        &self,
    ) -> Result<Option<HashSet<ExecutionId>>, squall_store::Error> {
        let Some((node, pg)) = self.cluster() else {
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
        let Some((node, pg)) = self.cluster() else {
            return;
        };
        let (node, pg) = (node.clone(), pg.clone());
        let (renewing, node_of) = (pg.clone(), node.clone());
        let (sharing, node_sharing) = (pg.clone(), node.clone());
        self.spawn(async move {
            let mut tick = tokio::time::interval(node_of.claim_ttl / 6);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = renewing.renew_leases(&node_of.name, node_of.claim_ttl).await {
                    tracing::warn!(node = %node_of.name, error = %e, "could not renew this node's claims");
                }
            }
        });
        // Apart from the renewals, which a long takeover must not hold up.
        // A third of the time to live: a dead node's executions are taken
        // over at most that long after its claims ran out.
        let reactor = self.clone();
        self.spawn(async move {
            let mut tick = tokio::time::interval(node.claim_ttl / 3);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                reactor.take_over(&pg, &node).await;
            }
        });
        let reactor = self.clone();
        self.spawn(async move { reactor.share_work(&sharing, &node_sharing).await });
    }

    /// Say whether this node is busy (executions wait for a worker), and
    /// take, while it has free workers, the executions that have waited
    /// on busy nodes for one, and run them here.
    async fn share_work(&self, pg: &PgStore, node: &ClusterNode) {
        let mut took = false;
        let mut said_busy = false;
        loop {
            tokio::time::sleep(if took { SHARE_EVERY / 2 } else { SHARE_EVERY }).await;
            took = false;
            if self.inner.closed.load(std::sync::atomic::Ordering::Acquire) {
                if said_busy {
                    let _ = pg.set_busy(&node.name, false).await;
                }
                return;
            }
            let busy = self.queue_depth() > 0;
            if busy != said_busy {
                match pg.set_busy(&node.name, busy).await {
                    Ok(()) => said_busy = busy,
                    Err(e) => {
                        tracing::warn!(node = %node.name, error = %e, "could not say whether this node is busy")
                    }
                }
            }
            let room = self.idle_workers();
            if room == 0 {
                continue;
            }
            let taken = match pg
                .take_waiting(&node.name, room, node.claim_ttl, SHARE_WAITED)
                .await
            {
                Ok(taken) => taken,
                Err(e) => {
                    tracing::warn!(node = %node.name, error = %e, "could not look for executions waiting on busy nodes");
                    continue;
                }
            };
            if taken.is_empty() {
                continue;
            }
            took = true;
            tracing::debug!(
                executions = taken.len(),
                "took executions that waited on busy nodes"
            );
            let mut ready = Vec::new();
            for (execution, from) in taken {
                // Taken back: the job still waiting here runs it.
                if self.inner.scheduler.live(&execution.id).is_some() {
                    continue;
                }
                // Kept where it was: a workflow or a question, which need
                // no worker. One that passes a concurrency gate is taken:
                // its slots are counted in the database, and the slots it
                // took there on its node are its own here.
                let prepared = match self.inner.runner.resume(execution.clone()) {
                    Ok(p) if matches!(p.work, Work::Workflow(_) | Work::Inquiry) => None,
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::debug!(execution_id = %execution.id, error = %e, "this node cannot prepare an execution it took");
                        None
                    }
                };
                match prepared {
                    Some(prepared) => {
                        self.track(&prepared);
                        ready.push(prepared);
                    }
                    None => {
                        if let Err(e) = pg.give_back(&node.name, &execution.id, &from).await {
                            tracing::warn!(execution_id = %execution.id, error = %e, "could not give back an execution this node cannot run; it is taken over once its claim runs out");
                        }
                    }
                }
            }
            self.spawn_enqueue(ready);
        }
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
        let picked = match self.recover(Some(&scope)).await {
            Ok(()) => self.recover_inquiries(Some(&scope)),
            Err(e) => Err(e),
        };
        if let Err(e) = picked {
            // Not left held by a live node that never picks them up: let
            // them run out for the next round.
            tracing::error!(error = %e, "could not pick up the executions taken over; letting them go for another try");
            let ids: Vec<&str> = scope.iter().map(ExecutionId::as_str).collect();
            if let Err(e) = pg.release_executions(&node.name, &ids).await {
                tracing::error!(error = %e, "could not let go of the executions taken over");
            }
        }
    }

    /// Let this node's claims run out now, so that another node takes over
    /// at once what it leaves unfinished: after a graceful stop
    /// ([`Reactor::shutdown`]), when it runs nothing more.
    pub async fn release_claims(&self) {
        let Some((node, pg)) = self.cluster() else {
            return;
        };
        self.release_sensor_leases().await;
        match pg.release_claims(&node.name).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(executions = n, "left unfinished executions to other nodes"),
            Err(e) => {
                tracing::warn!(error = %e, "could not release this node's claims; they run out on their own")
            }
        }
    }

    /// Whether this node runs what must run once (sensors, timers, file
    /// watches): always alone; in a cluster, once it leads.
    pub(crate) fn leads(&self) -> bool {
        self.inner
            .leading
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Run, from now on, what must run once in a cluster: this node holds
    /// the lease that says it leads. Its timers and file watches start, and
    /// its sensors, unless each sensor has a lease of its own (in a
    /// cluster: see `sensor_leases.rs`).
    pub fn lead(&self) {
        if self
            .inner
            .leading
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        tracing::info!("this node leads: it runs the timers and file watches");
        self.reconcile_timers();
        self.inner.sensors.sync(&self.rules());
        self.start_sensors();
    }

    /// Whether `node` is this node.
    pub(crate) fn is_node(&self, node: &str) -> bool {
        self.inner
            .config
            .cluster
            .as_ref()
            .is_some_and(|c| c.name == node)
    }

    /// The live node holding `id`, when it is another: what only it can do
    /// (cancel a guest it runs) is asked of it. A holder whose claim ran
    /// out is about to be taken over: the caller is told to try again.
    pub(crate) async fn held_elsewhere(
        &self,
        id: &ExecutionId,
    ) -> Result<Option<String>, ExecutionError> {
        let Some((me, pg)) = self.cluster() else {
            return Ok(None);
        };
        match pg.claim_holder(id).await? {
            Some(holder) if holder.node != me.name && holder.live => Ok(Some(holder.node)),
            Some(holder) if holder.node != me.name => Err(ExecutionError::Elsewhere {
                id: id.clone(),
                node: holder.node,
                why: format!(
                    "stopped; a live node takes its executions over within {} s: try again then",
                    (me.claim_ttl / 3).as_secs().max(1)
                ),
            }),
            _ => Ok(None),
        }
    }

    /// Ask, in a task of its own, the node holding `e` now to cancel it:
    /// a cancel that reached this node as another took it over.
    pub(crate) fn forward_cancel(&self, e: &Execution) {
        let (reactor, tenant, id) = (self.clone(), e.tenant.clone(), e.id.clone());
        tokio::spawn(async move {
            let forwarded = match reactor.held_elsewhere(&id).await {
                Ok(Some(node)) => reactor.cancel_on(node, &tenant, &id).await.map(|_| ()),
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = forwarded {
                tracing::warn!(execution_id = %id, error = %e, "a cancel could not reach the node that took the execution over");
            }
        });
    }

    /// Ask `node`, which holds it, to cancel `tenant`'s execution `id`, and
    /// wait for its answer.
    pub(crate) async fn cancel_on(
        &self,
        node: String,
        tenant: &TenantId,
        id: &ExecutionId,
    ) -> Result<Execution, ExecutionError> {
        let request = Request::Cancel {
            tenant: tenant.clone(),
            execution: id.clone(),
        };
        self.ask_holder(node, id, &request).await
    }

    /// Ask `node`, which holds it, to pause or resume `tenant`'s workflow
    /// `id` (`status`), and wait for its answer.
    pub(crate) async fn set_status_on(
        &self,
        node: String,
        tenant: &TenantId,
        id: &ExecutionId,
        status: ExecutionStatus,
    ) -> Result<Execution, ExecutionError> {
        let request = Request::SetStatus {
            tenant: tenant.clone(),
            execution: id.clone(),
            status,
        };
        self.ask_holder(node, id, &request).await
    }

    /// Ask `node`, which holds it, to record `caller`'s answer to inquiry
    /// `id` (checked here already), and wait for its answer: StackStorm's
    /// reply, else why not.
    pub(crate) async fn answer_on(
        &self,
        node: String,
        caller: &squall_core::auth::Principal,
        id: &ExecutionId,
        response: serde_json::Value,
    ) -> Result<serde_json::Value, ExecutionError> {
        let request = Request::Answer {
            tenant: caller.tenant.clone(),
            execution: id.clone(),
            user: caller.user.clone(),
            role: caller.role,
            response,
        };
        self.ask_holder(node, id, &request).await
    }

    /// Address `request` to `node`, which holds execution `id`, and wait
    /// for its reply.
    async fn ask_holder<T: FromReply>(
        &self,
        node: String,
        id: &ExecutionId,
        request: &Request,
    ) -> Result<T, ExecutionError> {
        let pg = self
            .inner
            .store
            .postgres()
            .expect("only a node on PostgreSQL asks others");
        let body = serde_json::to_string(request).expect("a request serializes");
        let request = pg.send_request(&node, &body).await?;
        let deadline = tokio::time::Instant::now() + REPLY_WITHIN;
        let reply = loop {
            if let Some(reply) = pg.request_reply(request).await? {
                break reply;
            }
            if tokio::time::Instant::now() >= deadline {
                pg.withdraw_request(request).await?;
                return Err(ExecutionError::Elsewhere {
                    id: id.clone(),
                    node,
                    why: format!("did not answer within {} s", REPLY_WITHIN.as_secs()),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let elsewhere = |why: String| ExecutionError::Elsewhere {
            id: id.clone(),
            node: node.clone(),
            why,
        };
        match serde_json::from_str::<Reply>(&reply) {
            Ok(Reply::Ended(status)) => Err(ExecutionError::AlreadyCompleted {
                id: id.clone(),
                status,
            }),
            Ok(Reply::Failed(why)) => Err(elsewhere(why)),
            Ok(done) => {
                T::from_reply(done).ok_or_else(|| elsewhere("answered another question".to_owned()))
            }
            Err(e) => Err(elsewhere(format!(
                "answered what this node cannot read ({e})"
            ))),
        }
    }

    /// Carry out the requests other nodes addressed to this one, and answer
    /// each.
    pub(crate) async fn serve_requests(&self, pg: &PgStore) {
        let Some(me) = &self.inner.config.cluster else {
            return;
        };
        let requests = match pg.take_requests(&me.name).await {
            Ok(requests) => requests,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the requests of other nodes");
                return;
            }
        };
        for (number, body) in requests {
            let done = |done: Result<Execution, ExecutionError>| match done {
                Ok(e) => Reply::Done(Box::new(e)),
                Err(ExecutionError::AlreadyCompleted { status, .. }) => Reply::Ended(status),
                Err(e) => Reply::Failed(e.to_string()),
            };
            let reply = match serde_json::from_str::<Request>(&body) {
                Ok(Request::Cancel { tenant, execution }) => {
                    done(self.cancel(&tenant, &execution).await)
                }
                Ok(Request::SetStatus {
                    tenant,
                    execution,
                    status,
                }) => done(self.set_workflow_status(&tenant, &execution, status).await),
                Ok(Request::Answer {
                    tenant,
                    execution,
                    user,
                    role,
                    response,
                }) => {
                    let caller = squall_core::auth::Principal { tenant, user, role };
                    match self.respond(&caller, &execution, response).await {
                        Ok(answer) => Reply::Answered(answer),
                        Err(e) => Reply::Failed(e.to_string()),
                    }
                }
                Err(e) => Reply::Failed(format!("a request this node cannot read ({e})")),
            };
            let reply = serde_json::to_string(&reply).expect("a reply serializes");
            if let Err(e) = pg.reply_to_request(number, &reply).await {
                tracing::warn!(request = number, error = %e, "could not answer another node's request");
            }
        }
    }
}

/// What a reply carries, for the request that asked for it.
trait FromReply: Sized {
    fn from_reply(reply: Reply) -> Option<Self>;
}

impl FromReply for Execution {
    fn from_reply(reply: Reply) -> Option<Self> {
        match reply {
            Reply::Done(e) => Some(*e),
            _ => None,
        }
    }
}

impl FromReply for serde_json::Value {
    fn from_reply(reply: Reply) -> Option<Self> {
        match reply {
            Reply::Answered(answer) => Some(answer),
            _ => None,
        }
    }
}
