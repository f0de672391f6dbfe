//! Rules' throttle windows: at most one enforcement of a rule per window
//! and throttle key. A node knows the windows it opened or heard of; on
//! PostgreSQL the window is also taken in the database
//! ([`squall_store::pg::PgStore::take_throttle_window`]), so the nodes
//! share it. A window opens only when an execution is requested: one
//! reserved for an enforcement that then fails is given back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use squall_core::TenantId;
use squall_core::rule::Rule;
use squall_core::trigger::TriggerInstance;
use squall_store::pg::Window;

use crate::dispatch::Reactor;

/// The windows a node knows open: (tenant, rule, key) -> (started, until).
#[derive(Debug, Default)]
pub(crate) struct Throttles {
    open: HashMap<(TenantId, String, String), (Instant, Instant)>,
    /// Windows opened so far; closed ones are swept every 4,096.
    starts: u64,
}

/// A window an enforcement holds, until its execution is requested.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeldWindow {
    started: Instant,
    /// Taken in the database too.
    shared: bool,
}

/// Why a match was suppressed: its rule's window of `window` for `key`
/// opened `ago`.
fn suppressed(window: Duration, key: &str, ago: Duration) -> String {
    format!(
        "suppressed by throttle: at most one enforcement per {} s{}; the last was {:.1} s ago",
        window.as_secs_f64(),
        if key.is_empty() {
            String::new()
        } else {
            format!(" for key '{key}'")
        },
        ago.as_secs_f64()
    )
}

impl Reactor {
    /// Take `rule`'s window for `key` for this match, or the reason it is
    /// suppressed: the window is open, here or, on PostgreSQL, through any
    /// node. `None`: the rule has no window.
    pub(crate) async fn pass_throttle(
        &self,
        instance: &TriggerInstance,
        rule: &Rule,
        key: &str,
    ) -> Result<Option<HeldWindow>, String> {
        let Some(t) = &rule.throttle else {
            return Ok(None);
        };
        let started = self.reserve_throttle(instance, rule, key, t.window)?;
        let Some(pg) = self.inner.store.postgres() else {
            return Ok(Some(HeldWindow {
                started,
                shared: false,
            }));
        };
        let window = pg
            .take_throttle_window(
                &instance.tenant,
                &rule.rule_ref(),
                key,
                t.window,
                &instance.id,
            )
            .await;
        match window {
            Ok(Window::Taken) => Ok(Some(HeldWindow {
                started,
                shared: true,
            })),
            Ok(Window::Open { ago, left }) => {
                // Opened through another node: known here until it closes.
                let now = Instant::now();
                let opened = now.checked_sub(ago).unwrap_or(now);
                self.note_throttle(instance, rule, key, opened, now + left);
                Err(suppressed(t.window, key, ago))
            }
            Err(e) => {
                self.forget_throttle(instance, rule, key, started);
                Err(format!("could not check the rule's throttle window: {e}"))
            }
        }
    }

    /// Give back `window`, which this match took: no execution was
    /// requested.
    pub(crate) async fn give_back_throttle(
        &self,
        instance: &TriggerInstance,
        rule: &Rule,
        key: &str,
        window: HeldWindow,
    ) {
        self.forget_throttle(instance, rule, key, window.started);
        if window.shared
            && let Some(pg) = self.inner.store.postgres()
            && let Err(e) = pg
                .give_back_throttle_window(&instance.tenant, &rule.rule_ref(), key, &instance.id)
                .await
        {
            tracing::warn!(rule = %rule.rule_ref(), error = %e, "could not close a throttle window no execution was requested in; it closes when it runs out");
        }
    }

    /// Open `rule`'s window of `window` for `key` here now, unless it is
    /// open: when it opened, or why the match is suppressed. One look and
    /// one write under the lock, so two matches at once never both open it.
    fn reserve_throttle(
        &self,
        instance: &TriggerInstance,
        rule: &Rule,
        key: &str,
        window: Duration,
    ) -> Result<Instant, String> {
        let now = Instant::now();
        let at = (instance.tenant.clone(), rule.rule_ref(), key.to_owned());
        let mut throttles = self.inner.throttles.lock().expect("throttle lock poisoned");
        if let Some((started, until)) = throttles.open.get(&at)
            && now < *until
        {
            return Err(suppressed(window, key, now.duration_since(*started)));
        }
        sweep(&mut throttles, now);
        throttles.open.insert(at, (now, now + window));
        Ok(now)
    }

    /// Know `rule`'s window for `key` open from `started` until `until`.
    fn note_throttle(
        &self,
        instance: &TriggerInstance,
        rule: &Rule,
        key: &str,
        started: Instant,
        until: Instant,
    ) {
        let mut throttles = self.inner.throttles.lock().expect("throttle lock poisoned");
        throttles.open.insert(
            (instance.tenant.clone(), rule.rule_ref(), key.to_owned()),
            (started, until),
        );
    }

    /// Forget `rule`'s window for `key` if it is the one opened at
    /// `started`.
    fn forget_throttle(
        &self,
        instance: &TriggerInstance,
        rule: &Rule,
        key: &str,
        started: Instant,
    ) {
        let at = (instance.tenant.clone(), rule.rule_ref(), key.to_owned());
        let mut throttles = self.inner.throttles.lock().expect("throttle lock poisoned");
        if throttles.open.get(&at).is_some_and(|(s, _)| *s == started) {
            throttles.open.remove(&at);
        }
    }
}

/// Now and then, forget the windows that have closed.
fn sweep(throttles: &mut Throttles, now: Instant) {
    throttles.starts += 1;
    if throttles.starts.is_multiple_of(4096) {
        throttles.open.retain(|_, (_, until)| *until > now);
    }
}
