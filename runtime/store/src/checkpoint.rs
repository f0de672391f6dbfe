//! WAL checkpoints on a thread of their own.
//!
//! SQLite's automatic checkpoint runs inside the commit that grows the WAL
//! past its threshold, so that one commit pays for copying every page the
//! WAL holds back into the database (and, at `synchronous=NORMAL`, for two
//! fsyncs). A workflow's task waits for its commit: measured on a
//! sequential workflow, those occasional commits were more than half of all
//! commit time. Here the commit only nudges a checkpointer thread, which
//! checkpoints through its own connection while writing goes on.
//!
//! A checkpoint that runs beside writes cannot always empty the WAL (the
//! WAL restarts only once every frame is copied back), so should the WAL
//! still reach [`INLINE_PAGES`], the committing connection checkpoints
//! itself, as SQLite would have.

use std::path::Path;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use rusqlite::Connection;

/// WAL pages after which the checkpointer is nudged (SQLite's default
/// automatic checkpoint threshold).
pub(crate) const NUDGE_PAGES: i32 = 1000;

/// WAL pages after which the writer checkpoints in its own commit.
pub(crate) const INLINE_PAGES: i32 = 8 * NUDGE_PAGES;

/// Start the checkpointer for the database at `path` and hand its nudges
/// to `writer`'s commits. The thread stops once `writer` is closed.
pub(crate) fn install(writer: &mut Connection, path: &Path) -> rusqlite::Result<()> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let (nudge, nudged) = crossbeam_channel::bounded::<()>(1);
    writer.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: i32| {
        if pages >= INLINE_PAGES {
            if let Err(e) = wal.checkpoint() {
                tracing::debug!(error = %e, pages, "the writer's own checkpoint did not finish");
            }
        } else if pages >= NUDGE_PAGES {
            nudge_once(&nudge);
        }
        // The commit has happened whatever a checkpoint did.
        Ok(())
    }))?;
    std::thread::Builder::new()
        .name("squall-store-checkpointer".into())
        .spawn(move || run(&conn, &nudged))
        .expect("failed to spawn the store checkpointer thread");
    Ok(())
}

fn nudge_once(nudge: &Sender<()>) {
    // Full: a nudge is already waiting; disconnected: shutting down.
    match nudge.try_send(()) {
        Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
    }
}

fn run(conn: &Connection, nudged: &Receiver<()>) {
    while nudged.recv().is_ok() {
        // PASSIVE: copies what no reader still needs, never waits for one.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "checkpoint did not finish");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::{Store, StoreConfig};

    /// Writes that grow the WAL past the nudge threshold (and below the
    /// writer's own) get copied back into the database file.
    #[tokio::test]
    async fn the_checkpointer_copies_a_grown_wal_back_into_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let store = Store::open(&path, &StoreConfig::default()).expect("open");
        store
            .write(|txn| Ok(txn.execute_batch("CREATE TABLE blobs (b BLOB NOT NULL)")?))
            .await
            .expect("create");
        let before = std::fs::metadata(&path).expect("db file").len();
        // A page of data per commit, about 2 WAL pages with the tree's: the
        // WAL crosses the nudge threshold at least once (and stays far
        // below the writer's own).
        let rows = super::NUDGE_PAGES as u64;
        for _ in 0..rows {
            store
                .write(|txn| {
                    txn.execute("INSERT INTO blobs (b) VALUES (zeroblob(4000))", [])?;
                    Ok(())
                })
                .await
                .expect("insert");
        }
        // What the first checkpoint copies back holds at least a quarter
        // of the rows; without one the file would not grow at all.
        let wanted = before + rows / 4 * 4000;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let now = std::fs::metadata(&path).expect("db file").len();
            if now >= wanted {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the database file stayed at {now} bytes (wanted {wanted}): nothing was checkpointed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
