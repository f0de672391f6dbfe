//! Squall's domain: typed IDs, execution statuses, pack and action manifests,
//! parameter schemas, and the traits that the store and the sandbox meet at.
//!
//! This crate does no IO: it parses text it is given and validates values.
//! Reading pack directories is the reactor's job; persisting is the store's.

#![forbid(unsafe_code)]

pub mod auth;
pub mod egress;
pub mod events;
pub mod execution;
pub mod functions;
pub mod ids;
pub mod inquiry;
pub mod kv;
pub mod manifest;
pub mod metrics;
pub mod operators;
pub mod params;
pub mod policy;
pub mod rule;
pub mod template;
pub mod time;
pub mod trigger;

pub use execution::{Execution, ExecutionStatus, StatusChange};
pub use ids::{ActionRef, ExecutionId, PackRef, TenantId};
