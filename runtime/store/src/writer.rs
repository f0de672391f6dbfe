//! The single writer: one thread, one connection, batched commits.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rusqlite::{Connection, Transaction};
use tokio::sync::oneshot;

use crate::{Error, Result};

/// Most jobs applied in one transaction.
const MAX_BATCH: usize = 512;

/// What a job hands back: the caller's answer, to deliver after commit.
type Reply = Box<dyn FnOnce(std::result::Result<(), &Error>) + Send>;
type Job = Box<dyn FnOnce(&Transaction<'_>) -> Reply + Send>;

#[derive(Debug, Clone)]
pub(crate) struct Writer {
    jobs: Sender<Job>,
}

impl Writer {
    pub(crate) fn spawn(conn: Connection, commit_interval: Duration) -> Self {
        let (jobs, rx) = crossbeam_channel::unbounded::<Job>();
        std::thread::Builder::new()
            .name("squall-store-writer".into())
            .spawn(move || run(conn, rx, commit_interval))
            .expect("failed to spawn the store writer thread");
        Self { jobs }
    }

    pub(crate) fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<R> + Send + 'static,
    ) -> Result<oneshot::Receiver<Result<R>>> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |txn| {
            let outcome = apply_in_savepoint(txn, f);
            Box::new(move |commit| {
                let answer = match commit {
                    Ok(()) => outcome,
                    Err(e) => Err(Error::Corrupt(format!("commit failed: {e}"))),
                };
                // The caller may have gone away; the write stands regardless.
                let _ = tx.send(answer);
            })
        });
        self.jobs.send(job).map_err(|_| Error::WriterGone)?;
        Ok(rx)
    }
}

/// Run one job inside a savepoint so its failure rolls back only its own
/// changes.
fn apply_in_savepoint<R>(
    txn: &Transaction<'_>,
    f: impl FnOnce(&Transaction<'_>) -> Result<R>,
) -> Result<R> {
    txn.prepare_cached("SAVEPOINT job")?.execute([])?;
    match f(txn) {
        Ok(r) => {
            txn.prepare_cached("RELEASE job")?.execute([])?;
            Ok(r)
        }
        Err(e) => {
            txn.prepare_cached("ROLLBACK TO job")?.execute([])?;
            txn.prepare_cached("RELEASE job")?.execute([])?;
            Err(e)
        }
    }
}

fn run(mut conn: Connection, rx: Receiver<Job>, commit_interval: Duration) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut last_commit: Option<Instant> = None;
    while let Ok(first) = rx.recv() {
        // Group commit: everything that queued up while the previous batch
        // was committing goes into this one. Under load, commits are also
        // paced to one per `commit_interval`: a job that arrives right after
        // a commit waits out the rest of the interval, so the pages every
        // batch touches (the right edges of the id-ordered indexes, the WAL
        // index) are written once for many jobs instead of once for a few.
        // A job arriving after a quiet spell is committed at once.
        // (Never while a full batch is already waiting.)
        batch.push(first);
        if let Some(last) = last_commit {
            let since = last.elapsed();
            if since < commit_interval && rx.len() + 1 < MAX_BATCH {
                std::thread::sleep(commit_interval - since);
            }
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        last_commit = Some(Instant::now());
        apply_batch(&mut conn, &mut batch);
    }
    tracing::debug!("store writer stopped");
}

fn apply_batch(conn: &mut Connection, batch: &mut Vec<Job>) {
    let m = squall_core::metrics::metrics();
    m.store_batch_size.observe(batch.len() as f64);
    let txn = match conn.transaction() {
        Ok(txn) => txn,
        Err(e) => {
            let err = Error::Sqlite(e);
            tracing::error!(error = %err, "store writer could not begin a transaction");
            for job in batch.drain(..) {
                // Jobs never ran; answer each with the failure.
                fail_unrun(job, &err);
            }
            return;
        }
    };
    let replies: Vec<Reply> = batch.drain(..).map(|job| job(&txn)).collect();
    let committing = std::time::Instant::now();
    let committed = txn.commit();
    m.store_commit_seconds
        .observe(committing.elapsed().as_secs_f64());
    match committed {
        Ok(()) => replies.into_iter().for_each(|reply| reply(Ok(()))),
        Err(e) => {
            let err = Error::Sqlite(e);
            tracing::error!(error = %err, "store writer commit failed");
            replies.into_iter().for_each(|reply| reply(Err(&err)));
        }
    }
}

fn fail_unrun(job: Job, err: &Error) {
    // A job can only report through its reply, which needs a transaction to
    // produce. Dropping it drops the caller's sender, which the caller sees
    // as `WriterGone`.
    drop(job);
    tracing::warn!(error = %err, "dropped a write that could not start");
}
