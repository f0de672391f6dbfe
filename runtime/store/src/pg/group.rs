//! Group commit: what callers ask for while a transaction is being written
//! waits, and goes in the next one, together. One task writes at a time;
//! the first caller to find none writing starts it, on the store's
//! runtime, so a caller that gives up cannot strand the others.

use crate::Error;

/// What a caller is told when the writing task ended before answering.
pub(super) fn writer_stopped() -> Error {
    Error::Batch("the store's writer stopped".into())
}

/// One caller's part of a group, with the way to answer it.
pub(super) trait Member {
    /// Tell the caller its part failed.
    fn fail(self, error: Error);
}

/// What waits to be written, and whether a task writes.
pub(super) struct Group<T>(std::sync::Mutex<Waiting<T>>);

struct Waiting<T> {
    members: Vec<T>,
    writing: bool,
}

impl<T> Default for Group<T> {
    fn default() -> Self {
        Self(std::sync::Mutex::new(Waiting {
            members: Vec::new(),
            writing: false,
        }))
    }
}

impl<T: Member> Group<T> {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting<T>> {
        // Nothing is left half-changed under this lock.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Add `member`; whether the caller must start the writing task.
    pub(super) fn join(&self, member: T) -> bool {
        let mut waiting = self.waiting();
        waiting.members.push(member);
        !std::mem::replace(&mut waiting.writing, true)
    }

    /// The writing task's hold on the group.
    pub(super) fn writer(&self) -> Writer<'_, T> {
        Writer {
            group: self,
            done: false,
        }
    }
}

/// Held by the writing task: if that task ends any other way than by
/// finding nothing to write (a panic; its runtime shutting down), what
/// waits is told, and the next caller starts a writer again.
pub(super) struct Writer<'a, T: Member> {
    group: &'a Group<T>,
    done: bool,
}

impl<T: Member> Writer<'_, T> {
    /// The next members to write, at most `n`, oldest first; `None` when
    /// nothing waits (the task then ends).
    pub(super) fn next(&mut self, n: usize) -> Option<Vec<T>> {
        let mut waiting = self.group.waiting();
        if waiting.members.is_empty() {
            waiting.writing = false;
            self.done = true;
            return None;
        }
        let n = waiting.members.len().min(n.max(1));
        Some(waiting.members.drain(..n).collect())
    }
}

impl<T: Member> Drop for Writer<'_, T> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut waiting = self.group.waiting();
        waiting.writing = false;
        for member in waiting.members.drain(..) {
            member.fail(writer_stopped());
        }
    }
}
