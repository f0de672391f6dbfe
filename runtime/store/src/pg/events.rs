//! The cluster's event log, which every node's stream reads: an event is
//! appended in the transaction that made it, and read in commit-safe
//! order. Sequence numbers are handed out before their transactions
//! commit, and commit out of order, so a reader that followed them alone
//! could pass over an event still being written. Each event also records
//! its transaction's id, and a reader takes only events of transactions
//! older than the oldest one still running (`pg_snapshot_xmin`), in
//! (transaction, sequence) order: nothing can later appear before what it
//! has read. A reader's position is that pair, as the stream's
//! `Last-Event-ID`, so a client can reconnect to any node and miss
//! nothing.

use squall_core::TenantId;

use super::PgStore;
use crate::{Error, Result};

/// A position in the event log: the event's transaction and sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventId {
    pub tx: i64,
    pub seq: i64,
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.tx, self.seq)
    }
}

impl std::str::FromStr for EventId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (tx, seq) = s
            .split_once('-')
            .ok_or_else(|| format!("event id '{s}' is not <transaction>-<sequence>"))?;
        let number = |n: &str| {
            n.parse::<i64>()
                .map_err(|_| format!("event id '{s}' is not <transaction>-<sequence>"))
        };
        Ok(Self {
            tx: number(tx)?,
            seq: number(seq)?,
        })
    }
}

/// One event of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    pub id: EventId,
    pub kind: String,
    pub body: String,
}

/// Append an event of `tenant` inside the open transaction that made it.
pub(super) async fn append(
    client: &impl deadpool_postgres::GenericClient,
    tenant: &TenantId,
    kind: &str,
    body: &str,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO events (tenant_id, kind, body) VALUES ($1, $2, $3)",
            &[&tenant.as_str(), &kind, &body],
        )
        .await?;
    Ok(())
}

impl PgStore {
    /// Append one event of `tenant` in a transaction of its own.
    pub async fn append_event(&self, tenant: &TenantId, kind: &str, body: &str) -> Result<()> {
        let client = self.client().await?;
        append(&client, tenant, kind, body).await
    }

    /// Delete events older than `age`, `batch` rows a statement; how many.
    /// A stream resumes from `Last-Event-ID` within that window.
    /// The position up to which events may have been purged: a reader
    /// resuming from before it may have missed some.
    pub async fn events_purged_through(&self) -> Result<Option<EventId>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT value FROM squall_settings WHERE name = 'events_purged_through'",
                &[],
            )
            .await?;
        row.map(|r| {
            r.get::<_, String>(0)
                .parse()
                .map_err(|e: String| Error::Corrupt(format!("events_purged_through: {e}")))
        })
        .transpose()
    }

    pub async fn purge_events(&self, age: std::time::Duration, batch: usize) -> Result<u64> {
        let client = self.client().await?;
        let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        let mut purged = 0;
        let mut through: Option<EventId> = None;
        loop {
            let gone = client
                .query(
                    "DELETE FROM events WHERE ctid IN (SELECT ctid FROM events
                     WHERE at < now() - make_interval(secs => $1) LIMIT $2)
                     RETURNING tx, seq",
                    &[&age.as_secs_f64(), &batch],
                )
                .await?;
            let n = gone.len() as u64;
            purged += n;
            through = gone
                .iter()
                .map(|r| EventId {
                    tx: r.get(0),
                    seq: r.get(1),
                })
                .chain(through)
                .max();
            if i64::try_from(n).unwrap_or(i64::MAX) < batch {
                break;
            }
        }
        // Kept as the furthest position purged so far.
        if let Some(at) = through {
            let before = self.events_purged_through().await?;
            if before.is_none_or(|b| b < at) {
                client
                    .execute(
                        "INSERT INTO squall_settings (name, value) VALUES ('events_purged_through', $1)
                         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                        &[&at.to_string()],
                    )
                    .await?;
            }
        }
        // Requests between nodes whose sender never came back for the
        // reply (it stopped meanwhile).
        client
            .execute(
                "DELETE FROM node_requests WHERE at < now() - interval '1 hour'",
                &[],
            )
            .await?;
        // Nodes said busy that stopped without saying otherwise (their
        // claims ran out, or they hold none).
        client
            .execute(
                "DELETE FROM busy_nodes b WHERE since < now() - interval '1 hour'
                   AND NOT EXISTS (SELECT 1 FROM execution_queue q
                                   WHERE q.node = b.node AND q.lease_until > now())",
                &[],
            )
            .await?;
        Ok(purged)
    }

    /// The last event of `tenant` a reader can take now: a stream that
    /// starts without a position starts after it.
    pub async fn event_head(&self, tenant: &TenantId) -> Result<Option<EventId>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT tx, seq FROM events
                 WHERE tenant_id = $1 AND tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
                 ORDER BY tx DESC, seq DESC LIMIT 1",
                &[&tenant.as_str()],
            )
            .await?;
        Ok(row.map(|r| EventId {
            tx: r.get(0),
            seq: r.get(1),
        }))
    }

    /// Up to `limit` events of `tenant` after `after` (from the start
    /// without), in the order no later commit can change.
    pub async fn events_after(
        &self,
        tenant: &TenantId,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>> {
        let after = after.unwrap_or(EventId { tx: -1, seq: -1 });
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        client
            .query(
                "SELECT tx, seq, kind, body FROM events
                 WHERE tenant_id = $1 AND (tx, seq) > ($2, $3)
                   AND tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
                 ORDER BY tx, seq LIMIT $4",
                &[&tenant.as_str(), &after.tx, &after.seq, &limit],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(LoggedEvent {
                    id: EventId {
                        tx: r.try_get(0).map_err(Error::from)?,
                        seq: r.try_get(1).map_err(Error::from)?,
                    },
                    kind: r.try_get(2).map_err(Error::from)?,
                    body: r.try_get(3).map_err(Error::from)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use squall_tests::postgres::Postgres;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_never_pass_an_event_still_being_written() {
        let pg = Postgres::start();
        let store = PgStore::connect(&pg.create_database("events"), 8)
            .await
            .expect("connect");
        let tenant = TenantId::default_tenant();
        // A transaction writes an event and has not committed...
        let mut slow = store.client().await.expect("client");
        let slow = slow.transaction().await.expect("begin");
        append(&slow, &tenant, "st2.execution__create", "A")
            .await
            .expect("append");
        // ...while a later one writes and commits.
        store
            .append_event(&tenant, "st2.execution__update", "B")
            .await
            .expect("append");
        // B is held back: A, before it, could still commit.
        assert!(
            store
                .events_after(&tenant, None, 10)
                .await
                .expect("read")
                .is_empty()
        );
        slow.commit().await.expect("commit");
        let read = store.events_after(&tenant, None, 10).await.expect("read");
        assert_eq!(
            read.iter().map(|e| e.body.as_str()).collect::<Vec<_>>(),
            ["A", "B"]
        );
        // From a position: only what follows, which a later commit cannot
        // precede; positions read back from their text.
        let last = read[1].id.to_string().parse::<EventId>().expect("parses");
        assert_eq!(last, read[1].id);
        assert!(
            store
                .events_after(&tenant, Some(last), 10)
                .await
                .expect("read")
                .is_empty()
        );
        store
            .append_event(&tenant, "st2.execution__update", "C")
            .await
            .expect("append");
        let more = store
            .events_after(&tenant, Some(last), 10)
            .await
            .expect("read");
        assert_eq!(
            more.iter().map(|e| e.body.as_str()).collect::<Vec<_>>(),
            ["C"]
        );
        assert!(more[0].id > last);
        let first = store
            .events_after(&tenant, Some(read[0].id), 1)
            .await
            .expect("read");
        assert_eq!(first[0].body, "B", "a page of one");
        // Another tenant's log is its own.
        let other = TenantId::new("other").expect("tenant");
        assert!(
            store
                .events_after(&other, None, 10)
                .await
                .expect("read")
                .is_empty()
        );
        assert!("12".parse::<EventId>().is_err());
        // Kept for a window: a young log loses nothing, an old one goes.
        assert_eq!(
            store
                .purge_events(std::time::Duration::from_secs(3600), 2)
                .await
                .expect("purge"),
            0
        );
        assert_eq!(store.events_purged_through().await.expect("read"), None);
        assert_eq!(
            store
                .purge_events(std::time::Duration::ZERO, 2)
                .await
                .expect("purge"),
            3,
            "every event, two a statement"
        );
        assert_eq!(
            store.events_purged_through().await.expect("read"),
            Some(more[0].id),
            "the furthest position purged is kept"
        );
        assert!(
            store
                .events_after(&tenant, None, 10)
                .await
                .expect("read")
                .is_empty()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_write_of_an_execution_is_logged_in_its_transaction() {
        use squall_core::ExecutionStatus;
        let pg = Postgres::start();
        let store = PgStore::connect(&pg.create_database("logged"), 8)
            .await
            .expect("connect");
        let tenant = TenantId::default_tenant();
        assert_eq!(store.event_head(&tenant).await.expect("head"), None);
        let mut e = crate::contract::execution("core.echo", ExecutionStatus::Requested);
        store.insert_execution(&e).await.expect("insert");
        let head = store.event_head(&tenant).await.expect("head").expect("one");
        assert!(e.transition(ExecutionStatus::Scheduled));
        store.update_execution(&e).await.expect("update");
        let other = crate::contract::execution("core.noop", ExecutionStatus::Requested);
        store.insert_execution(&other).await.expect("insert");
        let logged = store.events_after(&tenant, None, 10).await.expect("read");
        let seen: Vec<(&str, &str)> = logged
            .iter()
            .map(|l| (l.kind.as_str(), l.body.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("st2.execution__create", e.id.as_str()),
                ("st2.execution__update", e.id.as_str()),
                ("st2.execution__create", other.id.as_str()),
            ]
        );
        assert_eq!(logged[0].id, head);
        let after_head = store
            .events_after(&tenant, Some(head), 10)
            .await
            .expect("read");
        assert_eq!(
            after_head.len(),
            2,
            "a stream from the head sees what follows"
        );
        let found = store
            .executions_by_id(&tenant, &[e.id.as_str(), other.id.as_str(), "nope"])
            .await
            .expect("read");
        assert_eq!(found.len(), 2);
        assert_eq!(found[e.id.as_str()].status, ExecutionStatus::Scheduled);
        let elsewhere = TenantId::new("other").expect("tenant");
        assert!(
            store
                .executions_by_id(&elsewhere, &[e.id.as_str()])
                .await
                .expect("read")
                .is_empty(),
            "another tenant's ids find nothing"
        );
    }
}
