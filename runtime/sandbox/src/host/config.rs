//! `squall:automation/config`: the pack's validated config, as JSON.

use super::HostState;
use crate::bindings::squall::automation::config::Host;

impl Host for HostState {
    fn get(&mut self) -> String {
        self.config.to_string()
    }
}
