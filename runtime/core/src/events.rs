//! Events a sensor dispatches, as the sandbox sees them. The reactor
//! implements [`EventSink`]; the sandbox's `events` host interface calls it.

use async_trait::async_trait;

/// Where a sensor's events go.
#[async_trait]
pub trait EventSink: Send + Sync + std::fmt::Debug {
    /// Emit a trigger instance of `trigger` (a trigger type the sensor
    /// declares, by ref or name, or the id of a trigger announced to it)
    /// with `payload` (JSON text). `Err` carries a message for the guest.
    async fn dispatch(
        &self,
        trigger: &str,
        payload: &str,
        trace_tag: Option<String>,
    ) -> Result<(), String>;
}
