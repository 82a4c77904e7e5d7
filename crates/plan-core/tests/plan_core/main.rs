//! Integration tests of plan-core through its public API (one test binary).

mod graph;
mod render;
mod repair;
mod scheduler;
mod support;
mod tree;
