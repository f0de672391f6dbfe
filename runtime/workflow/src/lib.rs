//! Squall's workflow engine, StackStorm's Orquesta language: pure logic, no
//! IO. The reactor persists and schedules what it decides.
//!
//! [`conductor`]: the state machine (events in, steps out). [`spec`], a
//! definition read and inspected (every problem with
//! its path); [`render`], values rendered with Orquesta's functions in YAQL
//! and Jinja; [`yaql`], the YAQL expression language; [`expr`], expressions
//! found in strings; [`pyfmt`], values formatted as Python's `str()` formats
//! them (how StackStorm embeds an expression's value in a string).

pub mod conductor;
pub mod expr;
pub mod pyfmt;
pub mod render;
pub mod spec;
pub mod yaql;
