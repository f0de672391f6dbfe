//! The reactor: where packs are loaded and actions are taken from a request
//! to a durable execution record.
//!
//! Later issues add dispatch, the rules engine, the scheduler and sensors
//! here; today it holds [`packs`] (reading pack directories) and [`runner`]
//! (validate → record → run in the sandbox → record).

#![forbid(unsafe_code)]

pub mod dispatch;
pub mod engine;
pub mod packs;
pub mod rules;
pub mod runner;
pub mod timers;

pub use dispatch::{DispatchError, Reactor, ReactorConfig, RuleChangeError};
pub use packs::{LoadedPack, PackError, PackSet};
pub use runner::{RunError, RunRequest, Runner};
