//! Integration tests of plan-exec through its public API (the sandbox has its own).

mod support;

mod conformance;
mod crash;
mod faults;
mod llm;
mod props;
mod runner;
mod store;
