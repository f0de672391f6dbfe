//! The reactor: where packs are loaded and actions are taken from a request
//! to a durable execution record.
//!
//! [`packs`] reads pack directories, [`runner`] takes one action from a
//! request to a final status, [`rules`] and [`engine`] decide what an event
//! causes, [`policies`] and the scheduler decide when an execution may run,
//! and [`dispatch`] ties them into the running [`Reactor`].

#![forbid(unsafe_code)]

mod claims;
pub mod dispatch;
pub mod engine;
mod file_watch;
mod follow;
pub mod host;
pub mod inquiries;
pub mod install;
mod lifecycle;
pub mod packs;
pub mod policies;
mod quota;
pub mod rules;
pub mod runner;
mod scheduler;
mod sensor_leases;
pub mod sensors;
pub mod ssh;
mod throttles;
pub mod timers;
pub mod vet;
mod workflows;

pub use dispatch::{ClusterNode, DispatchError, Quotas, Reactor, ReactorConfig, RuleChangeError};
pub use host::{HostRunners, RunAs};
pub use inquiries::InquiryError;
pub use install::{
    ArchiveLimits, BuildError, InstallError, Installed, PackBuilder, PackStore, Reloaded, Synced,
};
pub use lifecycle::{ExecutionError, ExecutionEvent, ExecutionEventKind};
pub use packs::{LoadedPack, PackError, PackRegistry, PackSet, Refusal};
pub use runner::{RunError, RunRequest, Runner};
pub use sensors::{SensorConfig, SensorState, SensorView};
pub use vet::vet_packs;
