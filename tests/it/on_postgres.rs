//! The behaviour suite again, on PostgreSQL: these modules are the files
//! of the SQLite suite, compiled a second time under this module, where
//! [`server::on_postgres`] is true and each test server opens a database of
//! its own on one PostgreSQL server shared by the test process (as `squall
//! serve --database` opens it). The same tests, the same expectations.

// Nodes sharing a database: on PostgreSQL only.
#[path = "cluster.rs"]
mod cluster;
#[path = "inquiries.rs"]
pub(crate) mod inquiries;
#[path = "lifecycle.rs"]
mod lifecycle;
#[path = "packs.rs"]
pub(crate) mod packs;
#[path = "sensors.rs"]
mod sensors;
#[path = "server.rs"]
pub(crate) mod server;
#[path = "tenants.rs"]
mod tenants;
#[path = "ui.rs"]
mod ui;
#[path = "workflows.rs"]
pub(crate) mod workflows;
