//! Squall's in-process integration tests: real guests built from source by
//! tests/build.rs, a real store in a temp dir, the runner end to end.
// The behaviour modules are compiled twice on purpose: once here on
// SQLite, once under `on_postgres` on PostgreSQL.
#![allow(clippy::duplicate_mod)]

mod actions;
mod automaton;
mod browser;
mod egress;
mod host;
mod hostile;
mod inquiries;
mod lifecycle;
// The suite's helpers each copy does not use are not dead in the other.
#[allow(dead_code)]
mod on_postgres;
mod packs;
mod sandbox;
mod sensors;
mod server;
mod ssh;
mod st2client;
mod tenants;
mod ui;
mod util;
mod workflows;

/// The test that covers each guest. A guest added to tests/guests without a
/// line here is a compile error (see `foreach_guest!` below).
mod guest_tests {
    pub(crate) use super::actions::core_actions_all_behave as CORE_ACTIONS;
    pub(crate) use super::actions::probe_sees_context_config_log_and_kv as PROBE;
    pub(crate) use super::automaton::query_hits_notify_then_launch_and_repeats_are_throttled as AUTOMATON_SENSOR;
    pub(crate) use super::automaton::query_hits_notify_then_launch_and_repeats_are_throttled as AUTOMATON_ACTIONS;
    pub(crate) use super::hostile::flood_is_truncated_not_fatal as FLOOD;
    pub(crate) use super::hostile::infinite_loop_times_out as LOOP;
    pub(crate) use super::hostile::memory_bomb_hits_the_limit as MEMBOMB;
    pub(crate) use super::hostile::panic_text_is_reported as PANIC;
    pub(crate) use super::hostile::stack_overflow_is_reported as STACKOVERFLOW;
    pub(crate) use super::hostile::wrong_world_is_refused_before_running as WRONG_WORLD;
    pub(crate) use super::lifecycle::output_is_readable_while_running_and_after as TALKER;
    pub(crate) use super::packs::an_execution_started_on_v1_finishes_on_v1_while_v2_is_installed as VERSIONED;
    pub(crate) use super::sensors::directory_sensor_logs_created_modified_deleted as EXAMPLES_SENSOR;
    pub(crate) use super::sensors::file_watch_drives_the_same_action as EXAMPLES_ACTIONS;
    pub(crate) use super::sensors::sensor_kv_state_survives_a_restart as SENSOR;
}

macro_rules! assert_test_exists {
    ($guest:ident) => {
        const _: fn() = guest_tests::$guest;
    };
}
squall_tests::foreach_guest!(assert_test_exists);
