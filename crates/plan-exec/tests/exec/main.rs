//! Integration tests of plan-exec through its public API (the sandbox has its own).

mod support;

mod faults;
mod runner;
mod store;
