//! Integration tests of plan-core through its public API (one test binary).

mod scheduler;
mod support;
