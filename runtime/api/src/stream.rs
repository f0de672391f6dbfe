//! `/stream/v1/stream` (StackStorm's event stream, Server-Sent Events) and
//! `/metrics` (Prometheus).

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use serde::Deserialize;
use squall_core::TenantId;
use squall_store::pg::{EventId, PgStore};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiQuery;
use crate::shapes;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/stream/v1/stream", get(stream))
        .route("/metrics", get(metrics))
}

#[derive(Debug, Deserialize)]
pub(crate) struct StreamQuery {
    /// Comma-separated event names; all when absent.
    events: Option<String>,
}

/// The caller's tenant's execution events as they happen (until its key
/// or token is no longer valid):
/// `st2.execution__create` and `st2.execution__update`, each with the
/// execution in the API's shape.
#[utoipa::path(
    get,
    path = "/stream/v1/stream",
    tag = "stream",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<StreamQuery>,
    headers: axum::http::HeaderMap,
    used: Option<axum::Extension<crate::auth::UsedCredential>>,
) -> Result<impl IntoResponse, crate::error::ApiError> {
    // The stream lives as long as the credential that opened it: checked
    // again every few seconds, it ends once the key is disabled or the
    // token expires. (On `/ui/stream`, the page's session cookie.)
    let credential = used.map(|u| u.0.0).unwrap_or_default();
    let revoked = {
        let state = state.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                match crate::auth::resolve(&state, credential.clone()).await {
                    Ok(Some(_)) => {}
                    _ => return,
                }
            }
        }
    };
    let wanted: Option<Vec<String>> = q
        .events
        .map(|e| e.split(',').map(|s| s.trim().to_owned()).collect());
    let wants = move |name: &str| wanted.as_ref().is_none_or(|w| w.iter().any(|n| n == name));
    let tenant = caller.tenant();
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<EventId>().ok())
                .ok_or_else(|| {
                    crate::error::ApiError::BadRequest(format!(
                        "Last-Event-ID '{}' is not an event id of this stream (<transaction>-<sequence>)",
                        String::from_utf8_lossy(v.as_bytes())
                    ))
                })
        })
        .transpose()?;
    let log = state
        .event_log
        .clone()
        .or_else(|| state.reactor.store().postgres().cloned());
    let events: futures_util::stream::BoxStream<'static, Result<Event, Infallible>> = match log {
        // A cluster's: from the database's event log, which every node
        // writes, resumable on any node from `Last-Event-ID`.
        Some(pg) => Box::pin(logged(
            pg,
            tenant,
            last_event_id,
            state.reactor.subscribe(),
            wants,
        )),
        None => {
            if last_event_id.is_some() {
                return Err(crate::error::ApiError::BadRequest(
                        "Last-Event-ID: this server keeps no event log to resume from (it runs on SQLite, not a cluster's PostgreSQL)".into(),
                    ));
            }
            Box::pin(
                BroadcastStream::new(state.reactor.subscribe()).filter_map(
                    move |item| match item {
                        Ok(e) if e.execution.tenant == tenant && wants(e.kind.name()) => {
                            Some(Ok::<_, Infallible>(
                                Event::default()
                                    .event(e.kind.name())
                                    .data(shapes::execution(&e.execution).to_string()),
                            ))
                        }
                        Ok(_) => None,
                        // Told, not hidden: the reader was too slow and missed events.
                        Err(BroadcastStreamRecvError::Lagged(n)) => Some(Ok(Event::default()
                            .event("st2.stream__lagged")
                            .data(format!("{{\"missed\": {n}}}")))),
                    },
                ),
            )
        }
    };
    // Or as the server stops, which waits for every response to end.
    let mut stopping = state.stopping.subscribe();
    let ended = async move {
        tokio::select! {
            () = revoked => {}
            _ = stopping.wait_for(|stopping| *stopping) => {}
        }
    };
    Ok(
        Sse::new(futures_util::StreamExt::take_until(events, Box::pin(ended)))
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    )
}

/// How often a log reader looks for events other nodes wrote, when this
/// node's own have not woken it first.
const LOG_POLL: Duration = Duration::from_millis(500);

/// Events read from the log per query.
const LOG_PAGE: usize = 256;

/// `tenant`'s events from the cluster's event log, after `from` (else
/// after the last one now), each with its position as its SSE `id`; each
/// carries the execution as it is when read. `wake`: this node's own
/// events, which are in the log once committed.
fn logged(
    pg: PgStore,
    tenant: TenantId,
    from: Option<EventId>,
    wake: tokio::sync::broadcast::Receiver<squall_reactor::ExecutionEvent>,
    wants: impl Fn(&str) -> bool + Send + 'static,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let reader = LogReader {
        pg,
        tenant,
        started: from.is_some(),
        resumed: from.is_none(),
        at: from,
        ready: std::collections::VecDeque::new(),
        wake,
        wants,
    };
    futures_util::stream::unfold(reader, |mut r| async move {
        loop {
            if let Some(event) = r.ready.pop_front() {
                return Some((Ok(event), r));
            }
            match r.read().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reading the event log failed; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            tokio::select! {
                woken = own_event(&mut r.wake, &r.tenant) => {
                    // The server is stopping: so does the stream.
                    if !woken {
                        return None;
                    }
                }
                () = tokio::time::sleep(LOG_POLL) => {}
            }
        }
    })
}

/// Wait for this node's next event of `tenant` (another tenant's wakes no
/// reader of this one); false once the server stops.
async fn own_event(
    wake: &mut tokio::sync::broadcast::Receiver<squall_reactor::ExecutionEvent>,
    tenant: &TenantId,
) -> bool {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match wake.recv().await {
            Ok(e) if e.execution.tenant == *tenant => return true,
            Ok(_) => {}
            // Missed some: one of them may have been this tenant's.
            Err(RecvError::Lagged(_)) => return true,
            Err(RecvError::Closed) => return false,
        }
    }
}

/// [`logged`]'s state.
struct LogReader<W> {
    pg: PgStore,
    tenant: TenantId,
    /// Where reading resumes (`None`: from the log's start).
    at: Option<EventId>,
    /// Whether `at` is set: a stream without a position starts after the
    /// last event there is when it first reads.
    started: bool,
    /// Whether a stream given a position checked it against what the log
    /// still keeps.
    resumed: bool,
    ready: std::collections::VecDeque<Event>,
    wake: tokio::sync::broadcast::Receiver<squall_reactor::ExecutionEvent>,
    wants: W,
}

impl<W: Fn(&str) -> bool> LogReader<W> {
    /// Read the next page of the log into `ready`; whether there was one.
    async fn read(&mut self) -> squall_store::Result<bool> {
        if !self.started {
            self.at = self.pg.event_head(&self.tenant).await?;
            self.started = true;
        } else if !self.resumed {
            // Resuming from before what the log still keeps: said, not
            // hidden, and read on from what it keeps.
            self.resumed = true;
            if let (Some(at), Some(purged)) = (self.at, self.pg.events_purged_through().await?)
                && at < purged
            {
                self.at = Some(purged);
                self.ready.push_back(
                    Event::default().event("st2.stream__lagged").data(
                        serde_json::json!({
                            "purged_through": purged.to_string(),
                            "message": "events after Last-Event-ID may have been purged (older than the event log keeps): read the state again",
                        })
                        .to_string(),
                    ),
                );
                return Ok(true);
            }
        }
        let page = self
            .pg
            .events_after(&self.tenant, self.at, LOG_PAGE)
            .await?;
        let Some(last) = page.last() else {
            return Ok(false);
        };
        let ids: Vec<&str> = page
            .iter()
            .filter(|l| (self.wants)(&l.kind))
            .map(|l| l.body.as_str())
            .collect();
        let found = self.pg.executions_by_id(&self.tenant, &ids).await?;
        for l in &page {
            // Purged since, or not asked for: passed over.
            let Some(e) = found.get(&l.body).filter(|_| (self.wants)(&l.kind)) else {
                continue;
            };
            self.ready.push_back(
                Event::default()
                    .id(l.id.to_string())
                    .event(&l.kind)
                    .data(shapes::execution(e).to_string()),
            );
        }
        self.at = Some(last.id);
        Ok(true)
    }
}

/// The database's figures, read now; a figure that cannot be read is left
/// out, and the rest still served.
async fn database_figures(pg: &PgStore, m: &squall_core::metrics::Metrics) {
    use squall_core::metrics::{LeaseLabel, NodeStatusLabel, StateLabel, TableLabel};
    for (state, n) in pg.pool_state() {
        m.database_connections
            .get_or_create(&StateLabel {
                state: state.to_owned(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    match pg.dead_tuples().await {
        Ok(tables) => {
            for (table, dead) in tables {
                m.database_dead_tuples
                    .get_or_create(&TableLabel { table })
                    .set(dead);
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read the tables' dead rows"),
    }
    match pg.leases_held().await {
        Ok(leases) => {
            // Only the leases held now: a holder that changed goes.
            m.lease_seconds_left.clear();
            for (lease, holder, left) in leases {
                m.lease_seconds_left
                    .get_or_create(&LeaseLabel { lease, holder })
                    .set(left);
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read the leases"),
    }
    match pg.cluster_executions().await {
        Ok(counts) => {
            // Only what is there now: a node gone goes.
            m.cluster_executions.clear();
            for (node, status, n) in counts {
                m.cluster_executions
                    .get_or_create(&NodeStatusLabel { node, status })
                    .set(n);
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not count the cluster's executions"),
    }
}

/// Prometheus' text format; the live gauges are read now.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "server",
    responses((status = 200, description = "OK"), crate::openapi::Faults)
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let m = squall_core::metrics::metrics();
    m.executions_running
        .set(i64::try_from(state.reactor.running_now()).unwrap_or(i64::MAX));
    m.queue_depth
        .set(i64::try_from(state.reactor.queue_depth()).unwrap_or(i64::MAX));
    if let Some(pg) = state.reactor.store().postgres() {
        database_figures(pg, m).await;
    }
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_resuming_before_what_the_log_keeps_is_told() {
        let pg = squall_tests::postgres::Postgres::start();
        let store = PgStore::connect(&pg.create_database("lagged"), 2)
            .await
            .expect("connect");
        let tenant = TenantId::default_tenant();
        store
            .append_event(&tenant, "st2.execution__create", "gone")
            .await
            .expect("append");
        let purged = store.events_after(&tenant, None, 1).await.expect("read")[0].id;
        store.purge_events(Duration::ZERO, 10).await.expect("purge");
        let (tx, rx) = tokio::sync::broadcast::channel(4);
        let mut events = Box::pin(logged(
            store,
            tenant,
            Some(EventId { tx: 0, seq: 0 }),
            rx,
            |_| true,
        ));
        let first = tokio::time::timeout(Duration::from_secs(60), events.next())
            .await
            .expect("an event within the deadline")
            .expect("the stream goes on")
            .expect("events are infallible");
        let text = format!("{first:?}");
        assert!(text.contains("st2.stream__lagged"), "{text}");
        assert!(text.contains(&purged.to_string()), "{text}");
        drop(tx);
    }
}
