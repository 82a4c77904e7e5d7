//! Integration tests of plan-core through its public API (one test binary).

mod graph;
mod scheduler;
mod support;
