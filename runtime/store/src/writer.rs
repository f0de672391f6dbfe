//! The single writer: one thread, one connection, batched commits.
//!
//! A batch is first applied without savepoints: that is the common case and
//! the cheap one (a savepoint copies every page a job touches into its
//! sub-journal). When a job fails, the whole transaction is rolled back and
//! the batch applied again with a savepoint around each job, so the failure
//! undoes only its own changes. Jobs are therefore `Fn`: they may run twice,
//! and only the outcome of the run that is committed is reported.
//!
//! A caller whose next step waits on its write (a workflow's task, an
//! execution's `running` record) may apply it on its own thread instead
//! ([`Writer::submit_here`]), when the writer is idle: nothing queued, and
//! its last batch held a single job. Handing a lone write to the thread
//! costs two thread wake-ups, each tens of microseconds on a virtual
//! machine, which is more than the write itself. Under load the thread
//! batches as before.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rusqlite::{Connection, Transaction};
use tokio::sync::oneshot;

use crate::{Error, Result};

/// Most jobs applied in one transaction.
const MAX_BATCH: usize = 512;

/// One caller's write: applied (perhaps twice, see the module docs), then
/// answered after the commit.
trait Job: Send {
    /// Run the write in `txn`; `false` when it failed. A failed write may
    /// have left changes behind: the caller rolls them back.
    fn apply(&mut self, txn: &Transaction<'_>) -> bool;
    /// Tell the caller how its write ended, given how the commit went.
    fn answer(self: Box<Self>, commit: std::result::Result<(), &Error>);
}

/// What the caller gets back: its answer, and its closure, to be dropped on
/// the caller's thread. The closure holds the rows the caller encoded; freed
/// here they would be freed across threads, which the allocator handles on
/// a slow path (see `SqliteStore::write`).
pub(crate) type Answer<R, F> = (Result<R>, F);

struct Write<F, R> {
    f: F,
    outcome: Option<Result<R>>,
    reply: oneshot::Sender<Answer<R, F>>,
}

impl<F, R> Job for Write<F, R>
where
    F: Fn(&Transaction<'_>) -> Result<R> + Send,
    R: Send,
{
    fn apply(&mut self, txn: &Transaction<'_>) -> bool {
        let outcome = (self.f)(txn);
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn answer(self: Box<Self>, commit: std::result::Result<(), &Error>) {
        let Write { f, outcome, reply } = *self;
        let answer = match (commit, outcome) {
            (Ok(()), Some(outcome)) => outcome,
            (Ok(()), None) => Err(Error::Batch("the write was never applied".into())),
            (Err(e), _) => Err(Error::Batch(e.to_string())),
        };
        // The caller may have gone away; the write stands regardless.
        let _ = reply.send((answer, f));
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Writer {
    jobs: Sender<Box<dyn Job>>,
    shared: Arc<Shared>,
}

/// What the writer thread and callers writing on their own thread share.
#[derive(Debug)]
struct Shared {
    conn: Mutex<Connection>,
    /// Jobs sent to the thread and not yet committed.
    queued: AtomicUsize,
    /// The thread's last batch held more than one job.
    loaded: AtomicBool,
}

impl Shared {
    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while applying leaves no transaction behind that the
        // next batch does not roll back first (see `apply_and_commit`).
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection if no one holds it; poisoned or not, as [`conn`]
    /// (a panic in an inline write must not turn inline writes off).
    ///
    /// [`conn`]: Shared::conn
    fn try_conn(&self) -> Option<MutexGuard<'_, Connection>> {
        match self.conn.try_lock() {
            Ok(conn) => Some(conn),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

impl Writer {
    pub(crate) fn spawn(conn: Connection, commit_interval: Duration) -> Self {
        let (jobs, rx) = crossbeam_channel::unbounded::<Box<dyn Job>>();
        let shared = Arc::new(Shared {
            conn: Mutex::new(conn),
            queued: AtomicUsize::new(0),
            loaded: AtomicBool::new(false),
        });
        let thread = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("squall-store-writer".into())
            .spawn(move || run(&thread, rx, commit_interval))
            .expect("failed to spawn the store writer thread");
        Self { jobs, shared }
    }

    /// [`Writer::submit`], but applied and committed on this thread before
    /// it returns when the writer is idle (see the module docs). Blocks for
    /// one transaction: only for callers on an async runtime's worker (not
    /// inside a guest's host call, whose stack is small).
    pub(crate) fn submit_here<R, F>(&self, f: F) -> Result<oneshot::Receiver<Answer<R, F>>>
    where
        R: Send + 'static,
        F: Fn(&Transaction<'_>) -> Result<R> + Send + 'static,
    {
        let shared = &self.shared;
        if !shared.loaded.load(Ordering::Acquire)
            && shared.queued.load(Ordering::Acquire) == 0
            && let Some(mut conn) = shared.try_conn()
            // Checked again under the lock: every job queued before this
            // one is committed, so this one lands after them.
            && shared.queued.load(Ordering::Acquire) == 0
        {
            let (reply, rx) = oneshot::channel();
            let mut batch: Vec<Box<dyn Job>> = vec![Box::new(Write {
                f,
                outcome: None,
                reply,
            })];
            let committed = apply_batch(&mut conn, &mut batch);
            drop(conn);
            answer_all(&mut batch, committed);
            return Ok(rx);
        }
        self.submit(f)
    }

    pub(crate) fn submit<R, F>(&self, f: F) -> Result<oneshot::Receiver<Answer<R, F>>>
    where
        R: Send + 'static,
        F: Fn(&Transaction<'_>) -> Result<R> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Write {
            f,
            outcome: None,
            reply,
        };
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        if self.jobs.send(Box::new(job)).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::WriterGone);
        }
        Ok(rx)
    }
}

impl std::fmt::Debug for dyn Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

/// Run one job inside a savepoint so its failure rolls back only its own
/// changes.
fn apply_in_savepoint(txn: &Transaction<'_>, job: &mut dyn Job) -> Result<()> {
    txn.prepare_cached("SAVEPOINT job")?.execute([])?;
    if !job.apply(txn) {
        txn.prepare_cached("ROLLBACK TO job")?.execute([])?;
    }
    txn.prepare_cached("RELEASE job")?.execute([])?;
    Ok(())
}

fn run(shared: &Shared, rx: Receiver<Box<dyn Job>>, commit_interval: Duration) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut last_commit: Option<Instant> = None;
    let mut last_batch = 0;
    while let Ok(first) = rx.recv() {
        // Group commit: everything that queued up while the previous batch
        // was committing goes into this one. Under load, commits are also
        // paced to one per `commit_interval`: a job that arrives right after
        // a commit waits out the rest of the interval, so the pages every
        // batch touches (the right edges of the id-ordered indexes, the WAL
        // index) are written once for many jobs instead of once for a few.
        // A job arriving after a quiet spell is committed at once, and so
        // is a lone writer's (the previous batch held one job and nothing
        // else waits): a chain of writes each waiting for the one before,
        // as a workflow's tasks do, is not slowed to one per interval.
        // (Never while a full batch is already waiting.)
        batch.push(first);
        if let Some(last) = last_commit {
            let since = last.elapsed();
            let loaded = last_batch > 1 || !rx.is_empty();
            if loaded && since < commit_interval && rx.len() + 1 < MAX_BATCH {
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
        last_batch = batch.len();
        shared.loaded.store(last_batch > 1, Ordering::Release);
        let mut conn = shared.conn();
        let committed = apply_batch(&mut conn, &mut batch);
        shared.queued.fetch_sub(batch.len(), Ordering::AcqRel);
        drop(conn);
        answer_all(&mut batch, committed);
    }
    tracing::debug!("store writer stopped");
}

fn apply_batch(conn: &mut Connection, batch: &mut [Box<dyn Job>]) -> Result<()> {
    let m = squall_core::metrics::metrics();
    m.store_batch_size.observe(batch.len() as f64);
    let committed = apply_and_commit(conn, batch);
    if let Err(e) = &committed {
        tracing::error!(error = %e, "store writer could not commit a batch");
    }
    committed
}

fn answer_all(batch: &mut Vec<Box<dyn Job>>, committed: Result<()>) {
    for job in batch.drain(..) {
        job.answer(committed.as_ref().map(|_| ()));
    }
}

/// Apply every job of `batch` in one transaction and commit it.
fn apply_and_commit(conn: &mut Connection, batch: &mut [Box<dyn Job>]) -> Result<()> {
    // A transaction a failed commit or rollback left open would make every
    // later BEGIN fail: end it first.
    if !conn.is_autocommit() {
        conn.execute_batch("ROLLBACK")?;
    }
    // The fast path, without savepoints.
    let txn = conn.transaction()?;
    if batch.iter_mut().all(|job| job.apply(&txn)) {
        return commit(txn);
    }
    // A job failed: roll everything back and apply the batch again, each
    // job in its own savepoint.
    txn.rollback()?;
    squall_core::metrics::metrics()
        .store_batches_reapplied
        .inc();
    tracing::warn!(
        jobs = batch.len(),
        "a write failed; applying its batch again with a savepoint per write"
    );
    let txn = conn.transaction()?;
    for job in batch.iter_mut() {
        apply_in_savepoint(&txn, job.as_mut())?;
    }
    commit(txn)
}

fn commit(txn: Transaction<'_>) -> Result<()> {
    let committing = Instant::now();
    let committed = txn.commit();
    squall_core::metrics::metrics()
        .store_commit_seconds
        .observe(committing.elapsed().as_secs_f64());
    Ok(committed?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn writer() -> (tempfile::TempDir, Writer) {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = Connection::open(dir.path().join("db")).expect("open");
        conn.execute_batch("CREATE TABLE t (v INTEGER NOT NULL)")
            .expect("create");
        (dir, Writer::spawn(conn, Duration::ZERO))
    }

    /// Hold the writer busy until the returned sender is dropped, so that
    /// what is submitted meanwhile lands in one batch. Returns once the
    /// writer is held.
    fn hold(
        writer: &Writer,
    ) -> (
        std::sync::mpsc::Sender<()>,
        impl Future<Output = Result<()>>,
    ) {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, is_started) = std::sync::mpsc::channel::<()>();
        let wait = std::sync::Mutex::new(wait);
        let held = writer
            .submit(move |_| {
                let _ = started.send(());
                let _ = wait.lock().expect("lock").recv();
                Ok(())
            })
            .expect("submit");
        is_started.recv().expect("the writer runs the held write");
        (release, answer(held))
    }

    fn insert(
        writer: &Writer,
        v: i64,
        runs: &Arc<AtomicUsize>,
    ) -> impl Future<Output = Result<()>> {
        let runs = Arc::clone(runs);
        answer(
            writer
                .submit(move |txn| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    txn.execute("INSERT INTO t (v) VALUES (?1)", [v])?;
                    Ok(())
                })
                .expect("submit"),
        )
    }

    fn count(writer: &Writer) -> impl Future<Output = Result<i64>> {
        answer(
            writer
                .submit(|txn| Ok(txn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
                .expect("submit"),
        )
    }

    /// A submitted write's answer (its closure dropped).
    async fn answer<R, F>(rx: oneshot::Receiver<Answer<R, F>>) -> Result<R> {
        rx.await.expect("answer").0
    }

    #[tokio::test]
    async fn a_batch_without_failures_runs_each_job_once() {
        let (_dir, writer) = writer();
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, held) = hold(&writer);
        let inserts: Vec<_> = (0..10).map(|v| insert(&writer, v, &runs)).collect();
        let counted = count(&writer);
        drop(release);
        held.await.expect("held");
        for i in inserts {
            i.await.expect("insert");
        }
        assert_eq!(counted.await.expect("count"), 10);
        assert_eq!(runs.load(Ordering::SeqCst), 10);
    }

    #[tokio::test]
    async fn a_failing_job_is_undone_alone_and_its_neighbours_see_the_batch_without_it() {
        let (_dir, writer) = writer();
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, held) = hold(&writer);
        let before = insert(&writer, 1, &runs);
        // Writes a row, then fails: the row must not survive.
        let failing = answer(
            writer
                .submit(|txn| {
                    txn.execute("INSERT INTO t (v) VALUES (2)", [])?;
                    Err::<(), _>(Error::Corrupt("this write fails on purpose".into()))
                })
                .expect("submit"),
        );
        let after = insert(&writer, 3, &runs);
        let counted = count(&writer);
        drop(release);
        held.await.expect("held");
        before.await.expect("insert before");
        let err = failing.await.expect_err("must fail");
        assert!(err.to_string().contains("fails on purpose"), "{err}");
        after.await.expect("insert after");
        // Counted after the failed write was rolled back: the rows of the
        // jobs before and after it, not its own.
        assert_eq!(counted.await.expect("count"), 2);
        // The batch was applied twice: optimistically up to the failure
        // (the insert before it), then whole with savepoints.
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(rows(&writer).await.expect("rows"), [1, 3]);
    }

    /// `v` inserted through [`Writer::submit_here`]; also says on which
    /// thread it was applied.
    fn insert_here(
        writer: &Writer,
        v: i64,
    ) -> oneshot::Receiver<
        Answer<std::thread::ThreadId, impl Fn(&Transaction<'_>) -> Result<std::thread::ThreadId>>,
    > {
        writer
            .submit_here(move |txn| {
                txn.execute("INSERT INTO t (v) VALUES (?1)", [v])?;
                Ok(std::thread::current().id())
            })
            .expect("submit")
    }

    /// The table's values in insertion order.
    fn rows(writer: &Writer) -> impl Future<Output = Result<Vec<i64>>> {
        answer(
            writer
                .submit(|txn| {
                    let mut stmt = txn.prepare("SELECT v FROM t ORDER BY rowid")?;
                    let rows = stmt.query_map([], |r| r.get(0))?;
                    Ok(rows.collect::<rusqlite::Result<Vec<i64>>>()?)
                })
                .expect("submit"),
        )
    }

    #[tokio::test]
    async fn a_lone_write_is_committed_on_the_callers_thread_before_submit_returns() {
        let (_dir, writer) = writer();
        let mut here = insert_here(&writer, 1);
        let (applied_on, _) = here
            .try_recv()
            .expect("answered before submit_here returned");
        assert_eq!(applied_on.expect("insert"), std::thread::current().id());
        assert_eq!(rows(&writer).await.expect("rows"), [1]);
    }

    #[tokio::test]
    async fn a_panic_in_a_write_on_the_callers_thread_leaves_later_ones_there() {
        let (_dir, writer) = writer();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            writer.submit_here(|txn| -> Result<()> {
                txn.execute("INSERT INTO t (v) VALUES (1)", [])?;
                panic!("a bug in a write");
            })
        }));
        assert!(panicked.is_err(), "the panic reaches the caller");
        let mut here = insert_here(&writer, 2);
        let (applied_on, _) = here
            .try_recv()
            .expect("answered before submit_here returned");
        assert_eq!(applied_on.expect("insert"), std::thread::current().id());
        assert_eq!(
            rows(&writer).await.expect("rows"),
            [2],
            "the first rolled back"
        );
    }

    #[tokio::test]
    async fn a_write_submitted_here_lands_after_the_writes_queued_before_it() {
        let (_dir, writer) = writer();
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, held) = hold(&writer);
        let queued = insert(&writer, 1, &runs);
        // The writer is busy and a write is queued: this one queues too,
        // behind it, instead of overtaking it on this thread.
        let here = insert_here(&writer, 2);
        drop(release);
        held.await.expect("held");
        queued.await.expect("queued insert");
        let (applied_on, _) = here.await.expect("answer");
        assert_ne!(applied_on.expect("insert"), std::thread::current().id());
        assert_eq!(rows(&writer).await.expect("rows"), [1, 2]);
    }
}
