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
//! A checkpoint that runs beside writes seldom empties the WAL: the WAL
//! restarts only when a write begins with every frame copied back, and by
//! the time the checkpointer is done new frames are there. So the WAL
//! stays past the threshold, and nudging at every commit past it would
//! checkpoint after every commit, with two fsyncs each. The checkpointer is
//! therefore nudged once per [`NUDGE_PAGES`] the WAL grows, and goes on
//! with a few shorter passes for what was committed while it ran, so that
//! it usually catches up and the next write restarts the WAL. When it has
//! not by [`EAGER_PAGES`] (writes keep coming), it is nudged after every
//! commit until it has, and only should the WAL still reach
//! [`INLINE_PAGES`] does the committing connection checkpoint itself,
//! between its transactions, as SQLite would have: that stalls every write
//! waiting behind it (see [`Pacer`]).

use std::path::Path;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use rusqlite::Connection;

/// WAL pages after which the checkpointer is nudged (SQLite's default
/// automatic checkpoint threshold).
pub(crate) const NUDGE_PAGES: i32 = 1000;

/// WAL pages from which the checkpointer is nudged after every commit.
pub(crate) const EAGER_PAGES: i32 = 4 * NUDGE_PAGES;

/// WAL pages after which the writer checkpoints in its own commit.
pub(crate) const INLINE_PAGES: i32 = 8 * NUDGE_PAGES;

/// Start the checkpointer for the database at `path` and hand its nudges
/// to `writer`'s commits. The thread stops once `writer` is closed.
pub(crate) fn install(writer: &mut Connection, path: &Path) -> rusqlite::Result<()> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let (nudge, nudged) = crossbeam_channel::bounded::<()>(1);
    let mut pacer = Pacer::default();
    writer.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: i32| {
        match pacer.after_commit(pages) {
            Checkpoint::Inline => {
                if let Err(e) = wal.checkpoint() {
                    tracing::debug!(error = %e, pages, "the writer's own checkpoint did not finish");
                }
            }
            Checkpoint::Nudge => nudge_once(&nudge),
            Checkpoint::None => {}
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

/// What a commit that left the WAL at some size asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checkpoint {
    None,
    /// Wake the checkpointer.
    Nudge,
    /// Checkpoint in the committing connection.
    Inline,
}

/// When to checkpoint, from the WAL's size (in pages) after each commit:
/// the checkpointer once per [`NUDGE_PAGES`] of growth from
/// [`NUDGE_PAGES`] on, after every commit from [`EAGER_PAGES`] on, the
/// writer itself once the WAL reaches [`INLINE_PAGES`] (and again per
/// [`NUDGE_PAGES`] should the WAL still not restart, readers holding it).
/// A WAL smaller than at the last commit has restarted: the count starts
/// over.
#[derive(Debug)]
struct Pacer {
    nudge_at: i32,
    inline_at: i32,
    last: i32,
}

impl Default for Pacer {
    fn default() -> Self {
        Self {
            nudge_at: NUDGE_PAGES,
            inline_at: INLINE_PAGES,
            last: 0,
        }
    }
}

impl Pacer {
    fn after_commit(&mut self, pages: i32) -> Checkpoint {
        if pages < self.last {
            *self = Self::default();
        }
        self.last = pages;
        if pages >= self.inline_at {
            self.inline_at = pages + NUDGE_PAGES;
            self.nudge_at = pages + NUDGE_PAGES;
            Checkpoint::Inline
        } else if pages >= self.nudge_at || pages >= EAGER_PAGES {
            self.nudge_at = pages + NUDGE_PAGES;
            Checkpoint::Nudge
        } else {
            Checkpoint::None
        }
    }
}

fn nudge_once(nudge: &Sender<()>) {
    // Full: a nudge is already waiting; disconnected: shutting down.
    match nudge.try_send(()) {
        Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
    }
}

/// Checkpoint passes per nudge at most: each copies what was committed
/// while the one before ran.
const PASSES: usize = 4;

fn run(conn: &Connection, nudged: &Receiver<()>) {
    while nudged.recv().is_ok() {
        for _ in 0..PASSES {
            // PASSIVE: copies what no reader still needs, never waits for
            // one. Once every frame is copied, the next write restarts
            // the WAL; the few committed meanwhile are copied by the next
            // pass, each shorter than the last.
            match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
            }) {
                Ok((frames, copied)) if copied < frames => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "checkpoint did not finish");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Checkpoint, EAGER_PAGES, INLINE_PAGES, NUDGE_PAGES, Pacer};
    use crate::{SqliteStore, StoreConfig};

    /// A WAL growing by 20 pages a commit, never restarted by the
    /// checkpointer: one nudge per 1000 pages, not one per commit past
    /// 1000, then one per commit from 4000; the writer's own checkpoint at
    /// 8000; after a restart, the same again.
    #[test]
    fn checkpoints_are_paced_by_the_wal_growing_not_by_every_commit() {
        let mut pacer = Pacer::default();
        for _cycle in 0..2 {
            let mut asked = Vec::new();
            let mut pages = 0;
            while pages < INLINE_PAGES + 2 * NUDGE_PAGES {
                pages += 20;
                match pacer.after_commit(pages) {
                    Checkpoint::None => {}
                    other => asked.push((pages, other)),
                }
            }
            let nudges: Vec<i32> = asked
                .iter()
                .filter(|(_, c)| *c == Checkpoint::Nudge)
                .map(|(p, _)| *p)
                .collect();
            let paced: Vec<i32> = (1..4).map(|k| k * NUDGE_PAGES).collect();
            let eager: Vec<i32> = (EAGER_PAGES / 20..INLINE_PAGES / 20)
                .map(|k| k * 20)
                .collect();
            assert_eq!(nudges[..3], paced);
            assert_eq!(nudges[3..3 + eager.len()], eager);
            let inline: Vec<i32> = asked
                .iter()
                .filter(|(_, c)| *c == Checkpoint::Inline)
                .map(|(p, _)| *p)
                .collect();
            // Readers kept the WAL from restarting: again per 1000 pages.
            assert_eq!(
                inline,
                [
                    INLINE_PAGES,
                    INLINE_PAGES + NUDGE_PAGES,
                    INLINE_PAGES + 2 * NUDGE_PAGES
                ]
            );
            // The next write restarted the WAL.
            assert_eq!(pacer.after_commit(20), Checkpoint::None);
        }
    }

    /// Writes that grow the WAL past the nudge threshold (and below the
    /// writer's own) get copied back into the database file.
    #[tokio::test]
    async fn the_checkpointer_copies_a_grown_wal_back_into_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let store = SqliteStore::open(&path, &StoreConfig::default()).expect("open");
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
