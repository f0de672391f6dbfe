//! Sensors: long-lived components that watch something and dispatch
//! triggers, as StackStorm's sensors do.
//!
//! A sensor is a type implementing [`Sensor`]; `#[squall_sdk::sensor]` on
//! the `impl` exports it. Squall creates one instance per enabled sensor,
//! calls [`Sensor::setup`] once, then [`Sensor::poll`] every
//! `poll_interval` seconds (from the sensor's YAML). Memory is kept between
//! calls; what must survive a restart goes through [`crate::kv`], where a
//! sensor's keys are its own.
//!
//! A **polling sensor** looks for changes in `poll`:
//!
//! ```no_run
//! use squall_sdk::sensor::{self, Sensor};
//! use squall_sdk::{kv, Result};
//!
//! struct Counter {
//!     n: u64,
//! }
//!
//! #[squall_sdk::sensor]
//! impl Sensor for Counter {
//!     fn setup() -> Result<Self> {
//!         // Carry on from where the last instance stopped.
//!         let n = kv::get("count")?.and_then(|v| v.parse().ok()).unwrap_or(0);
//!         Ok(Counter { n })
//!     }
//!
//!     fn poll(&mut self) -> Result<()> {
//!         self.n += 1;
//!         kv::set("count", &self.n.to_string())?;
//!         sensor::dispatch("counted", &serde_json::json!({ "count": self.n }))
//!     }
//! }
//! # fn main() {}
//! ```
//!
//! A **trigger-parameterised sensor** learns from Squall which triggers the
//! rules use — for example which URL or directory to watch — through
//! [`Sensor::add_trigger`] and [`Sensor::remove_trigger`], and dispatches
//! to a trigger by its [`Trigger::id`], so the event carries that trigger's
//! parameters:
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use squall_sdk::sensor::{self, Sensor, Trigger};
//! use squall_sdk::Result;
//!
//! #[derive(Default)]
//! struct Watcher {
//!     watched: BTreeMap<String, String>, // trigger id -> url
//! }
//!
//! #[squall_sdk::sensor]
//! impl Sensor for Watcher {
//!     fn setup() -> Result<Self> {
//!         Ok(Watcher::default())
//!     }
//!
//!     fn add_trigger(&mut self, t: Trigger) {
//!         let url = t.parameters["url"].as_str().unwrap_or_default().to_owned();
//!         self.watched.insert(t.id, url);
//!     }
//!
//!     fn remove_trigger(&mut self, t: Trigger) {
//!         self.watched.remove(&t.id);
//!     }
//!
//!     fn poll(&mut self) -> Result<()> {
//!         for (id, url) in &self.watched {
//!             sensor::dispatch(id, &serde_json::json!({ "url": url, "up": true }))?;
//!         }
//!         Ok(())
//!     }
//! }
//! # fn main() {}
//! ```
//!
//! A panic or a trap ends the instance; Squall starts a new one after a
//! backoff and shows the panic message in `squall sensor get`.

use serde::Serialize;

use crate::sensor_bindings::squall::automation::events;
use crate::{Error, Result};

/// A trigger a rule uses, announced to the sensor.
///
/// ```no_run
/// struct Watch { urls: Vec<(String, String)> }
/// impl squall_sdk::sensor::Sensor for Watch {
///     fn setup() -> squall_sdk::Result<Self> { Ok(Watch { urls: Vec::new() }) }
///     fn add_trigger(&mut self, t: squall_sdk::sensor::Trigger) {
///         let url = t.parameters["url"].as_str().unwrap_or_default().to_owned();
///         self.urls.push((t.id, url));
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// Stable while the trigger exists; pass it to [`dispatch`] to emit an
    /// event with this trigger's parameters.
    pub id: String,
    /// The trigger type's ref, e.g. `examples.url_up`.
    pub trigger_type: String,
    /// The trigger's parameters (a JSON object).
    pub parameters: serde_json::Value,
}

/// What a sensor does. Only `setup` is required.
///
/// ```no_run
/// use squall_sdk::sensor::{self, Sensor};
///
/// struct Heartbeat { beats: u64 }
///
/// #[squall_sdk::sensor]
/// impl Sensor for Heartbeat {
///     fn setup() -> squall_sdk::Result<Self> {
///         Ok(Heartbeat { beats: 0 })
///     }
///     fn poll(&mut self) -> squall_sdk::Result<()> {
///         self.beats += 1;
///         sensor::dispatch("heartbeat", &serde_json::json!({ "beats": self.beats }))
///     }
/// }
/// # fn main() {}
/// ```
pub trait Sensor: Sized + 'static {
    /// Called once when the instance starts; an error restarts it later.
    ///
    /// ```no_run
    /// # use squall_sdk::sensor::Sensor;
    /// struct Watch { dir: String }
    /// impl Sensor for Watch {
    ///     fn setup() -> squall_sdk::Result<Self> {
    ///         let dir = squall_sdk::config()["dir"].as_str().unwrap_or("/srv/in").to_owned();
    ///         Ok(Watch { dir })
    ///     }
    /// }
    /// ```
    fn setup() -> Result<Self>;

    /// Called every `poll_interval` seconds. An error is logged and counted;
    /// polling goes on.
    ///
    /// ```no_run
    /// # use squall_sdk::sensor::Sensor;
    /// struct Counter(u64);
    /// impl Sensor for Counter {
    ///     fn setup() -> squall_sdk::Result<Self> { Ok(Counter(0)) }
    ///     fn poll(&mut self) -> squall_sdk::Result<()> {
    ///         self.0 += 1;
    ///         squall_sdk::sensor::dispatch("tick", &serde_json::json!({ "n": self.0 }))
    ///     }
    /// }
    /// ```
    fn poll(&mut self) -> Result<()> {
        Ok(())
    }

    /// A rule now uses `trigger`.
    ///
    /// ```no_run
    /// # use squall_sdk::sensor::{Sensor, Trigger};
    /// struct Watch(Vec<Trigger>);
    /// impl Sensor for Watch {
    ///     fn setup() -> squall_sdk::Result<Self> { Ok(Watch(Vec::new())) }
    ///     fn add_trigger(&mut self, trigger: Trigger) { self.0.push(trigger); }
    /// }
    /// ```
    fn add_trigger(&mut self, trigger: Trigger) {
        let _ = trigger;
    }

    /// The trigger `trigger.id` has new parameters.
    ///
    /// ```no_run
    /// # use squall_sdk::sensor::{Sensor, Trigger};
    /// struct Watch(Vec<Trigger>);
    /// impl Sensor for Watch {
    ///     fn setup() -> squall_sdk::Result<Self> { Ok(Watch(Vec::new())) }
    ///     fn update_trigger(&mut self, trigger: Trigger) {
    ///         if let Some(t) = self.0.iter_mut().find(|t| t.id == trigger.id) {
    ///             *t = trigger;
    ///         }
    ///     }
    /// }
    /// ```
    fn update_trigger(&mut self, trigger: Trigger) {
        let _ = trigger;
    }

    /// No rule uses `trigger` any more.
    ///
    /// ```no_run
    /// # use squall_sdk::sensor::{Sensor, Trigger};
    /// struct Watch(Vec<Trigger>);
    /// impl Sensor for Watch {
    ///     fn setup() -> squall_sdk::Result<Self> { Ok(Watch(Vec::new())) }
    ///     fn remove_trigger(&mut self, trigger: Trigger) { self.0.retain(|t| t.id != trigger.id); }
    /// }
    /// ```
    fn remove_trigger(&mut self, trigger: Trigger) {
        let _ = trigger;
    }

    /// Called before the instance is dropped.
    ///
    /// ```no_run
    /// # use squall_sdk::sensor::Sensor;
    /// struct Poller { polls: u64 }
    /// impl Sensor for Poller {
    ///     fn setup() -> squall_sdk::Result<Self> { Ok(Poller { polls: 0 }) }
    ///     fn cleanup(&mut self) {
    ///         let _ = squall_sdk::kv::set("polls", &self.polls.to_string());
    ///     }
    /// }
    /// ```
    fn cleanup(&mut self) {}
}

/// Emit an event: `trigger` is a trigger type this sensor declares (by
/// name, e.g. `changed_file`, or ref) or the id of a [`Trigger`]. Returns
/// once the event is durable and rules have decided; an invalid payload is
/// refused with a message naming the field.
///
/// ```no_run
/// squall_sdk::sensor::dispatch(
///     "changed_file",
///     &serde_json::json!({ "path": "/srv/in/a.csv", "status": "created" }),
/// )?;
/// # Ok::<(), squall_sdk::Error>(())
/// ```
pub fn dispatch(trigger: &str, payload: &impl Serialize) -> Result<()> {
    dispatch_traced(trigger, payload, None)
}

/// [`dispatch`] with a trace tag that links the event to what it causes.
///
/// ```no_run
/// let payload = serde_json::json!({ "host": "web-1", "status": "down" });
/// squall_sdk::sensor::dispatch_traced("host_down", &payload, Some("incident-4711"))?;
/// # Ok::<(), squall_sdk::Error>(())
/// ```
pub fn dispatch_traced(
    trigger: &str,
    payload: &impl Serialize,
    trace_tag: Option<&str>,
) -> Result<()> {
    let payload = serde_json::to_string(payload)
        .map_err(|e| Error::failed(format!("payload is not serializable: {e}")))?;
    events::dispatch(trigger, &payload, trace_tag).map_err(Error::Failed)
}

#[doc(hidden)]
pub mod __private {
    use std::cell::RefCell;

    use super::{Sensor, Trigger};
    use crate::sensor_bindings::exports::sensor::Trigger as WitTrigger;

    /// The one instance of the sensor type, between calls.
    #[allow(missing_debug_implementations)]
    pub struct Slot<S>(RefCell<Option<S>>);

    impl<S: Sensor> Default for Slot<S> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<S: Sensor> Slot<S> {
        pub const fn new() -> Self {
            Self(RefCell::new(None))
        }

        pub fn setup(&self) -> Result<(), String> {
            let sensor = S::setup().map_err(|e| e.to_string())?;
            *self.0.borrow_mut() = Some(sensor);
            Ok(())
        }

        pub fn with<R>(&self, default: R, f: impl FnOnce(&mut S) -> R) -> R {
            match self.0.borrow_mut().as_mut() {
                Some(sensor) => f(sensor),
                None => default,
            }
        }

        pub fn poll(&self) -> Result<(), String> {
            self.with(Err("poll before setup".into()), |s| {
                s.poll().map_err(|e| e.to_string())
            })
        }

        pub fn cleanup(&self) {
            self.with((), |s| s.cleanup());
            *self.0.borrow_mut() = None;
        }
    }

    pub fn trigger(t: WitTrigger) -> Trigger {
        Trigger {
            parameters: serde_json::from_str(&t.parameters)
                .unwrap_or(serde_json::Value::Object(Default::default())),
            id: t.id,
            trigger_type: t.type_,
        }
    }
}

/// Export a [`Sensor`] type as this component's sensor.
/// `#[squall_sdk::sensor]` on the `impl Sensor for T` block expands to this.
///
/// ```no_run
/// struct Quiet;
/// impl squall_sdk::sensor::Sensor for Quiet {
///     fn setup() -> squall_sdk::Result<Self> { Ok(Quiet) }
/// }
/// squall_sdk::export_sensor!(Quiet);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_sensor {
    ($sensor:ty) => {
        const _: () = {
            ::std::thread_local! {
                static SLOT: $crate::sensor::__private::Slot<$sensor> =
                    const { $crate::sensor::__private::Slot::new() };
            }
            use $crate::sensor_bindings::exports::sensor::Trigger as WitTrigger;
            struct SquallSensor;
            impl $crate::sensor_bindings::exports::sensor::Guest for SquallSensor {
                fn setup() -> ::std::result::Result<(), ::std::string::String> {
                    SLOT.with(|s| s.setup())
                }
                fn poll() -> ::std::result::Result<(), ::std::string::String> {
                    SLOT.with(|s| s.poll())
                }
                fn add_trigger(t: WitTrigger) {
                    let t = $crate::sensor::__private::trigger(t);
                    SLOT.with(|s| s.with((), |s| $crate::sensor::Sensor::add_trigger(s, t)))
                }
                fn update_trigger(t: WitTrigger) {
                    let t = $crate::sensor::__private::trigger(t);
                    SLOT.with(|s| s.with((), |s| $crate::sensor::Sensor::update_trigger(s, t)))
                }
                fn remove_trigger(t: WitTrigger) {
                    let t = $crate::sensor::__private::trigger(t);
                    SLOT.with(|s| s.with((), |s| $crate::sensor::Sensor::remove_trigger(s, t)))
                }
                fn cleanup() {
                    SLOT.with(|s| s.cleanup())
                }
            }
            // Interface exports are named `sensor#poll` etc., which a native
            // linker refuses: export only when building the component (a
            // native build, e.g. `cargo test --workspace`, only checks it).
            #[cfg(target_arch = "wasm32")]
            $crate::sensor_bindings::export!(SquallSensor with_types_in $crate::sensor_bindings);
            #[cfg(not(target_arch = "wasm32"))]
            const _: [fn(); 1] = [|| {
                let _ = <SquallSensor as $crate::sensor_bindings::exports::sensor::Guest>::setup;
                let _ = <SquallSensor as $crate::sensor_bindings::exports::sensor::Guest>::poll;
                let _ = <SquallSensor as $crate::sensor_bindings::exports::sensor::Guest>::add_trigger;
                let _ = <SquallSensor as $crate::sensor_bindings::exports::sensor::Guest>::update_trigger;
                let _ = <SquallSensor as $crate::sensor_bindings::exports::sensor::Guest>::remove_trigger;
                let _ = <SquallSensor as $crate::sensor_bindings::exports::sensor::Guest>::cleanup;
            }];
        };
    };
}
