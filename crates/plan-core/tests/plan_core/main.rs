//! Integration tests of plan-core through its public API (one test binary).

mod graph;
mod render;
mod repair;
mod scheduler;
mod support;
mod tree;

/// Key types cross threads: runners share graphs and move schedulers into tasks.
#[test]
fn key_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<plan_core::Plan>();
    check::<plan_core::PlanGraph>();
    check::<plan_core::Scheduler>();
    check::<plan_core::RunState>();
    check::<plan_core::Event>();
    check::<plan_core::GoalTree>();
    check::<plan_core::PlanErrors>();
    check::<plan_core::RepairReport>();
}
