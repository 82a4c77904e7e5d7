//! A run's spec through the binary: `plan run` records the settings it ran with, a
//! continuation keeps them unless a flag changes one (and the change is reported), and
//! nonsense values are refused wherever they come from.

use plan_core::Plan;
use plan_exec::store::RunStore as _;
use plan_sqlite::SqliteStore;
use plan_strategies::RunSpec;
use serde_json::Value;

use crate::support::{
    DIAMOND, Sandbox, agent_server, expect_code, model_flags, output, stderr, stdout,
};

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn stored_spec(sb: &Sandbox, id: &str) -> RunSpec {
    let store = SqliteStore::open(sb.store()).unwrap();
    let run = block_on(store.load_run(&plan_core::RunId::new(id)))
        .unwrap()
        .unwrap();
    RunSpec::from_record(&run.record).unwrap()
}

#[test]
fn plan_run_records_the_settings_it_ran_with() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let mut args = vec![
        "run",
        "--json",
        "--strategy",
        "adaptive",
        "--max-replans",
        "5",
    ];
    args.extend([
        "--concurrency",
        "2",
        "--max-steps",
        "6",
        "--budget-tokens",
        "900000",
    ]);
    let flags = model_flags(&server);
    let mut cmd = sb.plan(args.iter().copied().chain(flags.iter().map(String::as_str)));
    let out = output(cmd.arg("Compare two things"));
    expect_code(&out, 0);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let spec = stored_spec(&sb, report["run_id"].as_str().unwrap());
    assert_eq!(spec.strategy, "adaptive");
    assert_eq!(spec.model, "openai:fake-model");
    assert_eq!(spec.base_url.as_deref(), Some(server.base_url().as_str()));
    assert_eq!(spec.limits.max_replans, 5);
    assert_eq!(spec.limits.concurrency, 2);
    assert_eq!(spec.limits.max_steps, Some(6));
    assert_eq!(spec.budget.tokens, Some(900_000));
    assert!(spec.overrides.is_empty());
}

/// Parks a run whose spec says adaptive with 5 replans, awaiting approval.
fn park(sb: &Sandbox, base_url: &str) -> String {
    let plan = Plan::from_json(DIAMOND).unwrap();
    let mut spec = RunSpec::new("openai:fake-model", "adaptive");
    spec.base_url = Some(base_url.to_owned());
    spec.limits.max_replans = 5;
    spec.limits.concurrency = 3;
    crate::support::park(sb, spec.to_record(plan.goal.clone()), &plan)
}

#[test]
fn an_approval_keeps_the_recorded_limits_and_reports_a_changed_one() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let id = park(&sb, &server.base_url());
    let out = output(&mut sb.plan(["approve", &id, "--json", "--concurrency", "1"]));
    expect_code(&out, 0);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["strategy"], "adaptive");
    let overrides = report["spec_overrides"].as_array().expect("spec_overrides");
    assert_eq!(overrides.len(), 1, "{overrides:?}");
    assert_eq!(overrides[0]["field"], "limits.concurrency");
    assert_eq!(overrides[0]["from"], 3);
    assert_eq!(overrides[0]["to"], 1);
    assert_eq!(overrides[0]["by"], "approve");
    // What is stored for the next continuation is still the run's own spec.
    let stored = stored_spec(&sb, &id);
    assert_eq!(stored.limits.max_replans, 5);
    assert_eq!(stored.limits.concurrency, 3);
}

#[test]
fn nonsense_settings_are_refused_naming_the_value() {
    let sb = Sandbox::new();
    for (toml, named) in [
        ("max_steps = 0\n", "max_steps = 0"),
        ("budget_usd = -5\n", "budget_usd = -5"),
        ("max_depth = 500\n", "max_depth = 500: must be at most 10"),
    ] {
        sb.write("plan.toml", toml);
        let out = output(&mut sb.plan(["run", "a goal"]));
        expect_code(&out, 2);
        assert!(stderr(&out).contains(named), "{toml}: {}", stderr(&out));
    }
    std::fs::remove_file(sb.path("plan.toml")).unwrap();
    let out = output(&mut sb.plan(["run", "a goal", "--budget-usd", "-5"]));
    expect_code(&out, 2);
    assert!(stderr(&out).contains("-5"), "{}", stderr(&out));
    let out = output(&mut sb.plan(["run", "a goal", "--concurrency", "100000"]));
    expect_code(&out, 2);
    assert!(
        stderr(&out).contains("concurrency = 100000: must be at most 1024"),
        "{}",
        stderr(&out)
    );
}
