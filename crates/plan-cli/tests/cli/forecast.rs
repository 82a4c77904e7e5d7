//! Forecasts through the binary: `plan plan --estimate`, the `forecast`/`actual` pair of
//! `plan run --json` learning from earlier runs in the store, and `--budget-usd` refusing
//! a run over its forecast, stopping one whose spend reaches it, and needing a price.

use serde_json::Value;

use crate::support::{
    DIAMOND, Sandbox, agent_server, expect_code, model_flags, output, stderr, stdout,
};

fn run_json(sb: &Sandbox, args: &[String]) -> Value {
    let out = output(&mut sb.plan(args));
    expect_code(&out, 0);
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn run_args(server: &plan_llm::testing::FakeOpenAi, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec!["run".into(), "Compare two things".into(), "--json".into()];
    args.extend(model_flags(server));
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

#[test]
fn estimate_without_history_says_it_uses_defaults() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let mut args = vec![
        "plan".to_owned(),
        "Compare two things".into(),
        "--estimate".into(),
    ];
    args.extend(model_flags(&server));
    let out = output(&mut sb.plan(&args));
    expect_code(&out, 0);
    let text = stdout(&out);
    let line = text.lines().last().unwrap();
    assert!(line.starts_with("forecast: "), "{text}");
    // 3 steps + planning + synthesis.
    assert!(line.contains("5-"), "{line}");
    assert!(line.contains("cost unknown"), "{line}");
    assert!(line.contains("defaults: no earlier runs"), "{line}");
    // Machine formats keep stdout to the plan.
    let mut json = args.clone();
    json.extend(["--format".into(), "json".into()]);
    let out = output(&mut sb.plan(&json));
    expect_code(&out, 0);
    serde_json::from_str::<Value>(&stdout(&out)).expect("stdout is the plan JSON");
    assert!(stderr(&out).contains("forecast: "), "{}", stderr(&out));
}

#[test]
fn runs_report_forecast_beside_actual_and_learn_from_history() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    sb.write(
        "plan.toml",
        "[prices.\"openai:fake-model\"]\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\n",
    );
    let first = run_json(&sb, &run_args(&server, &[]));
    let forecast = &first["forecast"];
    assert_eq!(forecast["basis"], "defaults", "{first:#}");
    for key in [
        "calls",
        "prompt_tokens",
        "completion_tokens",
        "wall_ms",
        "usd",
    ] {
        let range = forecast[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key}: {forecast}"));
        assert!(
            range[0].as_f64().unwrap() <= range[1].as_f64().unwrap(),
            "{key}"
        );
    }
    let actual = &first["actual"];
    assert_eq!(actual["calls"], first["usage"]["llm_calls"]);
    assert_eq!(actual["wall_ms"], first["duration_ms"]);
    let tokens = |k: &str| actual[k].as_f64().unwrap();
    let usd = (tokens("prompt_tokens") * 1.0 + tokens("completion_tokens") * 2.0) / 1e6;
    assert!(
        (actual["usd"].as_f64().unwrap() - usd).abs() < 1e-12,
        "{actual}"
    );
    // Recorded with the run: `plan show --json` says what `plan run --json` said.
    let id = first["run_id"].as_str().unwrap();
    let shown = run_json(&sb, &["show".into(), id.into(), "--json".into()]);
    assert_eq!(shown["forecast"], first["forecast"]);
    assert_eq!(shown["actual"], first["actual"]);

    run_json(&sb, &run_args(&server, &[]));
    let third = run_json(&sb, &run_args(&server, &[]));
    assert_eq!(third["forecast"]["basis"], "history", "{third:#}");
    assert_eq!(third["forecast"]["runs"], 2);
    // From history, the calls forecast is what the earlier runs made.
    assert_eq!(third["forecast"]["calls"][0], first["usage"]["llm_calls"]);
}

#[test]
fn budget_usd_needs_a_price() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let out = output(&mut sb.plan(run_args(&server, &["--budget-usd", "1"])));
    expect_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("--budget-usd needs the price of openai:fake-model"),
        "{err}"
    );
    assert!(err.contains("[prices.\"openai:fake-model\"]"), "{err}");
    assert_eq!(server.total_requests(), 0, "nothing was asked of the model");
    let out = output(&mut sb.plan(run_args(&server, &["--budget-usd", "-3"])));
    expect_code(&out, 2);
}

#[test]
fn budget_usd_refuses_a_run_whose_forecast_is_over_it() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    // $1,000 per million tokens: the defaults forecast dollars, the budget is one cent.
    sb.write(
        "plan.toml",
        "[prices.\"openai:fake-model\"]\ninput_per_mtok = 1000.0\noutput_per_mtok = 1000.0\n",
    );
    let out = output(&mut sb.plan(run_args(&server, &["--budget-usd", "0.01"])));
    expect_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("the run would exceed --budget-usd $0.0100"),
        "{err}"
    );
    assert!(err.contains("hint: raise --budget-usd"), "{err}");
    assert_eq!(
        server.total_requests(),
        1,
        "only the planning call was made"
    );
}

#[test]
fn budget_usd_stops_a_run_whose_spend_reaches_it() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    // Only prompt tokens cost; a very long goal makes every call's prompt far larger than
    // the forecast's defaults, so the forecast passes and the spend does not.
    sb.write(
        "plan.toml",
        "[prices.\"openai:fake-model\"]\ninput_per_mtok = 1000.0\noutput_per_mtok = 0.0\n",
    );
    let goal = format!(
        "Compare two things. {}",
        "Context to weigh carefully. ".repeat(2_000)
    );
    let mut args: Vec<String> = vec!["run".into(), goal, "--json".into()];
    args.extend(model_flags(&server));
    args.extend(["--budget-usd".into(), "4".into()]);
    let out = output(&mut sb.plan(&args));
    expect_code(&out, 1);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("spending limit reached"), "{text}");
    assert!(!text.contains("\"status\": \"succeeded\""), "{text}");
}

#[test]
fn plan_mcp_checks_its_per_run_budget_at_start() {
    // Each run plan mcp serves gets its own meter from the spec; a budget in dollars
    // needs the model's price, checked before serving anything.
    let sb = Sandbox::new();
    let out = output(&mut sb.plan([
        "mcp",
        "--model",
        "openai:fake-model",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--budget-usd",
        "1",
    ]));
    expect_code(&out, 2);
    assert!(stderr(&out).contains("needs the price"), "{}", stderr(&out));
}
