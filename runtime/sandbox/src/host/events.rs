//! `squall:automation/events`: a sensor's dispatches, handed to the
//! reactor's [`EventSink`](squall_core::events::EventSink).

use super::HostState;
use crate::bindings::sensor::squall::automation::events::Host;

impl Host for HostState {
    async fn dispatch(
        &mut self,
        trigger: String,
        payload: String,
        trace_tag: Option<String>,
    ) -> Result<(), String> {
        let Some(sink) = self.events.clone() else {
            return Err("events can only be dispatched by sensors".into());
        };
        sink.dispatch(&trigger, &payload, trace_tag).await
    }
}
