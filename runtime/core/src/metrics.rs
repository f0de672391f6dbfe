//! Process-wide metrics, served by the API at `/metrics` in Prometheus'
//! text format. Counting is an atomic add; gauges that mirror live state
//! (queue depth, executions running) are set when scraped.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `status` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

/// The labels of a sensor's metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SensorLabel {
    pub tenant: String,
    pub sensor: String,
}

/// The `table` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    pub table: String,
}

/// The `state` label of a pool's connections (`in_use`, `idle`, `waiting`
/// for callers waiting for one).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// The labels of the cluster's executions: the node holding them, their
/// status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeStatusLabel {
    pub node: String,
    pub status: String,
}

/// The labels of a lease.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseLabel {
    pub lease: String,
    pub holder: String,
}

/// Every metric Squall keeps.
#[derive(Debug)]
pub struct Metrics {
    /// Executions recorded (requested or delayed).
    pub executions_requested: Counter,
    /// Executions that reached a final status, by status.
    pub executions_completed: Family<StatusLabel, Counter>,
    /// Executions running now (set when scraped).
    pub executions_running: Gauge,
    /// Executions queued for a worker now (set when scraped).
    pub queue_depth: Gauge,
    /// Trigger instances recorded.
    pub trigger_instances: Counter,
    /// Seconds to instantiate an action's component.
    pub sandbox_instantiation_seconds: Histogram,
    /// Jobs per store transaction.
    pub store_batch_size: Histogram,
    /// Seconds per store commit.
    pub store_commit_seconds: Histogram,
    /// Store batches applied a second time because one of their writes
    /// failed.
    pub store_batches_reapplied: Counter,
    /// Sensor instances alive now, by tenant and sensor: from the moment
    /// one is instantiated until it is dropped. Never above 1.
    pub sensor_instances: Family<SensorLabel, Gauge>,
    /// On PostgreSQL (set when scraped): dead rows of the tables every
    /// execution writes, which autovacuum must keep up with.
    pub database_dead_tuples: Family<TableLabel, Gauge>,
    /// On PostgreSQL (set when scraped): this node's pooled connections.
    pub database_connections: Family<StateLabel, Gauge>,
    /// On PostgreSQL (set when scraped): seconds until each lease held now
    /// runs out unrenewed, by lease and holder.
    pub lease_seconds_left: Family<LeaseLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub cluster_executions: Family<NodeStatusLabel, Gauge>,
    pub execution_start_delay_seconds: Histogram,
    registry: Registry,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process' metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let executions_requested = Counter::default();
        let executions_completed = Family::<StatusLabel, Counter>::default();
        let executions_running = Gauge::default();
        let queue_depth = Gauge::default();
        let trigger_instances = Counter::default();
        let sandbox_instantiation_seconds = Histogram::new(exponential_buckets(5e-6, 2.0, 16));
        let store_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let store_commit_seconds = Histogram::new(exponential_buckets(1e-5, 2.0, 18));
        let store_batches_reapplied = Counter::default();
        let sensor_instances = Family::<SensorLabel, Gauge>::default();
        let database_dead_tuples = Family::<TableLabel, Gauge>::default();
        let database_connections = Family::<StateLabel, Gauge>::default();
        let lease_seconds_left =
            Family::<LeaseLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let cluster_executions = Family::<NodeStatusLabel, Gauge>::default();
        let execution_start_delay_seconds = Histogram::new(exponential_buckets(1e-3, 2.0, 18));
        let mut registry = Registry::with_prefix("squall");
        registry.register(
            "executions_requested",
            "Executions recorded as requested or delayed",
            executions_requested.clone(),
        );
        registry.register(
            "executions_completed",
            "Executions that reached a final status, by status",
            executions_completed.clone(),
        );
        registry.register(
            "executions_running",
            "Executions running now",
            executions_running.clone(),
        );
        registry.register(
            "queue_depth",
            "Executions queued for a worker now",
            queue_depth.clone(),
        );
        registry.register(
            "trigger_instances",
            "Trigger instances recorded",
            trigger_instances.clone(),
        );
        registry.register(
            "sandbox_instantiation_seconds",
            "Seconds to instantiate an action's component",
            sandbox_instantiation_seconds.clone(),
        );
        registry.register(
            "store_batch_size",
            "Jobs per store transaction (group commit)",
            store_batch_size.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "Seconds per store commit",
            store_commit_seconds.clone(),
        );
        registry.register(
            "store_batches_reapplied",
            "Store batches applied again, a savepoint per write, because one write failed",
            store_batches_reapplied.clone(),
        );
        registry.register(
            "sensor_instances",
            "Sensor instances alive now, by tenant and sensor",
            sensor_instances.clone(),
        );
        registry.register(
            "database_dead_tuples",
            "PostgreSQL: dead rows of the tables every execution writes",
            database_dead_tuples.clone(),
        );
        registry.register(
            "database_connections",
            "PostgreSQL: this node's pooled connections, by state",
            database_connections.clone(),
        );
        registry.register(
            "lease_seconds_left",
            "PostgreSQL: seconds until each lease held now runs out unrenewed",
            lease_seconds_left.clone(),
        );
        registry.register(
            "cluster_executions",
            "PostgreSQL: unfinished executions of every node, by the node holding them and status",
            cluster_executions.clone(),
        );
        registry.register(
            "execution_start_delay_seconds",
            "Seconds from an execution's request to its start on this node (those asked to wait excepted)",
            execution_start_delay_seconds.clone(),
        );
        Self {
            executions_requested,
            executions_completed,
            executions_running,
            queue_depth,
            trigger_instances,
            sandbox_instantiation_seconds,
            store_batch_size,
            store_commit_seconds,
            store_batches_reapplied,
            sensor_instances,
            database_dead_tuples,
            database_connections,
            lease_seconds_left,
            cluster_executions,
            execution_start_delay_seconds,
            registry,
        }
    }

    /// Count an execution that reached `status`.
    pub fn completed(&self, status: &str) {
        self.executions_completed
            .get_or_create(&StatusLabel {
                status: status.to_owned(),
            })
            .inc();
    }

    /// Everything, in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_counted() {
        let m = metrics();
        m.completed("succeeded");
        m.store_batch_size.observe(3.0);
        let text = m.render();
        assert!(
            text.contains("squall_executions_completed_total{status=\"succeeded\"}"),
            "{text}"
        );
        assert!(text.contains("squall_store_batch_size_bucket"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
