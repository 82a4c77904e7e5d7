//! `plan rerun`: a new run of a stored run, running only what changed. On the 20-step
//! reference DAG (five stages of 4, 5, 4, 4 and 3 steps, each reading two steps of the
//! stage before), the fake server's request counts show exactly which steps ran.

use std::collections::{BTreeSet, HashMap};

use plan_llm::testing::FakeOpenAi;
use serde_json::Value;

use crate::support::*;

/// The reference DAG's plan JSON.
fn layered() -> Value {
    let widths = [4usize, 5, 4, 4, 3];
    let mut steps = Vec::new();
    for (l, &w) in widths.iter().enumerate() {
        for k in 0..w {
            let deps: Vec<String> = if l == 0 {
                vec![]
            } else {
                let p = widths[l - 1];
                let mut d = vec![format!("L{}_{}", l - 1, k % p)];
                let other = format!("L{}_{}", l - 1, (k + 1) % p);
                if !d.contains(&other) {
                    d.push(other);
                }
                d
            };
            steps.push(serde_json::json!({
                "id": format!("L{l}_{k}"),
                "description": format!("Task {k} of stage {l}"),
                "dependencies": deps,
            }));
        }
    }
    serde_json::json!({"goal": "A layered project", "steps": steps})
}

fn ids(plan: &Value) -> Vec<String> {
    plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

/// `from` and every step that reads one of them, directly or not (worked out here, apart
/// from the code under test).
fn closure(plan: &Value, from: &[&str]) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = from.iter().map(|s| s.to_string()).collect();
    let steps = plan["steps"].as_array().unwrap();
    loop {
        let before = out.len();
        for s in steps {
            let reads = s["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| out.contains(d.as_str().unwrap()));
            if reads {
                out.insert(s["id"].as_str().unwrap().to_owned());
            }
        }
        if out.len() == before {
            return out;
        }
    }
}

/// Requests per step prompt, and of planning and synthesis.
fn counts(server: &FakeOpenAi, plan: &Value) -> HashMap<String, usize> {
    let mut out: HashMap<String, usize> = ids(plan)
        .into_iter()
        .map(|id| {
            let n = server.count(&step_prompt(&id));
            (id, n)
        })
        .collect();
    out.insert("plan".into(), server.count("You are a planner"));
    out.insert(
        "synthesis".into(),
        server.count("You write the final answer"),
    );
    out
}

/// The steps whose request count went up between `before` and `after`.
fn ran(before: &HashMap<String, usize>, after: &HashMap<String, usize>) -> BTreeSet<String> {
    after
        .iter()
        .filter(|(k, n)| **n > before[*k])
        .map(|(k, _)| k.clone())
        .collect()
}

/// A parent run of the reference DAG; the sandbox, server, plan and the parent's report.
fn parent() -> (Sandbox, FakeOpenAi, Value, Value) {
    let sb = Sandbox::new();
    let plan = layered();
    let server = agent_server(&plan.to_string());
    let mut args: Vec<String> = ["run", "A layered project", "--strategy", "dag", "--json"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(model_flags(&server));
    let out = output(&mut sb.plan(args));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["status"], "succeeded", "{}", stderr(&out));
    (sb, server, plan, report)
}

fn rerun(sb: &Sandbox, id: &str, extra: &[&str]) -> Value {
    let mut args = vec!["rerun", id, "--json"];
    args.extend(extra);
    let out = output(&mut sb.plan(args));
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[test]
fn an_unchanged_plan_reruns_nothing_and_calls_no_model() {
    let (sb, server, plan, parent) = parent();
    let id = parent["run_id"].as_str().unwrap();
    let before = server.total_requests();
    let report = rerun(&sb, id, &[]);
    assert_eq!(server.total_requests(), before, "a request was made");
    assert_eq!(report["status"], "succeeded");
    assert_ne!(report["run_id"], parent["run_id"], "a new run");
    assert_eq!(report["answer"], parent["answer"], "the parent's answer");
    assert_eq!(report["rerun"]["parent"], id);
    assert_eq!(report["rerun"]["executed"], serde_json::json!([]));
    assert_eq!(report["rerun"]["reused"].as_array().unwrap().len(), 20);
    for s in report["steps"].as_array().unwrap() {
        assert_eq!(s["status"], "completed", "{s}");
        assert_eq!(s["reused"], true, "{s}");
        assert_eq!(s["reused_from"], id, "{s}");
        let then = parent["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == s["id"])
            .unwrap();
        assert_eq!(s["output"], then["output"]);
    }
    let _ = plan;
}

#[test]
fn editing_one_step_reruns_exactly_it_its_descendants_and_the_synthesis() {
    let (sb, server, plan, parent) = parent();
    let id = parent["run_id"].as_str().unwrap();
    let mut edited = plan.clone();
    edited["steps"][1]["description"] = "Task 1 of stage 0, done differently".into();
    sb.write("edited.json", &edited.to_string());
    let before = counts(&server, &plan);
    let report = rerun(&sb, id, &["--plan", "edited.json"]);
    let after = counts(&server, &plan);
    assert_eq!(report["status"], "succeeded");
    let mut want = closure(&plan, &["L0_1"]);
    want.insert("synthesis".into());
    assert_eq!(ran(&before, &after), want, "the requests made");
    assert!(want.len() < 21, "the closure is not everything: {want:?}");
    let executed: BTreeSet<String> = report["rerun"]["executed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    want.remove("synthesis");
    assert_eq!(executed, want, "the report lists what ran");
    assert_eq!(
        report["rerun"]["reused"].as_array().unwrap().len(),
        20 - want.len()
    );
}

#[test]
fn a_rerun_replays_with_zero_requests() {
    let (sb, server, plan, parent) = parent();
    let id = parent["run_id"].as_str().unwrap();
    let mut edited = plan.clone();
    edited["steps"][0]["description"] = "Task 0 of stage 0, done differently".into();
    sb.write("edited.json", &edited.to_string());
    let report = rerun(&sb, id, &["--plan", "edited.json"]);
    let new = report["run_id"].as_str().unwrap();
    let before = server.total_requests();
    let out = output(&mut sb.plan(["replay", new, "--json"]));
    assert_eq!(server.total_requests(), before);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["faithful"], true, "{v:#}");
    assert_eq!(code(&out), 0);
}

#[test]
fn from_a_step_reruns_it_and_what_reads_it() {
    let (sb, server, plan, parent) = parent();
    let id = parent["run_id"].as_str().unwrap();
    let before = counts(&server, &plan);
    let report = rerun(&sb, id, &["--from", "L2_1"]);
    let after = counts(&server, &plan);
    assert_eq!(report["status"], "succeeded");
    let mut want = closure(&plan, &["L2_1"]);
    want.insert("synthesis".into());
    assert_eq!(ran(&before, &after), want);
}

#[test]
fn an_always_run_step_runs_with_what_reads_it() {
    let (sb, server, plan, parent) = parent();
    let id = parent["run_id"].as_str().unwrap();
    let mut edited = plan.clone();
    edited["steps"][19]["always_run"] = true.into();
    sb.write("edited.json", &edited.to_string());
    let before = counts(&server, &plan);
    let report = rerun(&sb, id, &["--plan", "edited.json"]);
    let after = counts(&server, &plan);
    assert_eq!(report["status"], "succeeded");
    let want: BTreeSet<String> = ["L4_2".to_owned(), "synthesis".to_owned()].into();
    assert_eq!(ran(&before, &after), want);
}

#[test]
fn another_model_reruns_everything_and_bad_input_is_refused() {
    let (sb, server, plan, parent) = parent();
    let id = parent["run_id"].as_str().unwrap();
    let before = counts(&server, &plan);
    let report = rerun(&sb, id, &["--model", "openai:another-model"]);
    assert_eq!(report["status"], "succeeded");
    let after = counts(&server, &plan);
    assert_eq!(
        ran(&before, &after).len(),
        21,
        "every step and the synthesis"
    );
    // An unknown step for --from, an unknown run.
    let out = output(&mut sb.plan(["rerun", id, "--from", "nope"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("`nope`"), "{}", stderr(&out));
    let out = output(&mut sb.plan(["rerun", "no-such-run"]));
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("plan runs"), "{}", stderr(&out));
}

#[test]
fn post_rerun_over_http_reruns_from_a_step() {
    use crate::serve::{TOKEN, authed, client, json_of, start, start_run, wait_status};
    let sb = Sandbox::new();
    let plan = layered();
    let fake = agent_server(&plan.to_string());
    let s = start(&sb, &model_flags(&fake), &["--token", TOKEN]);
    let c = client();
    let parent = start_run(
        &c,
        &s,
        serde_json::json!({"goal": "A layered project", "strategy": "dag"}),
    );
    wait_status(&c, &s, &parent, "succeeded");
    let before = counts(&fake, &plan);
    let (code, v) = json_of(
        authed(&c, "POST", &format!("{}/api/runs/{parent}/rerun", s.base))
            .json(&serde_json::json!({"from": ["L3_0"]}))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["parent"], parent.as_str());
    let id = v["run_id"].as_str().unwrap();
    let report = wait_status(&c, &s, id, "succeeded");
    assert_eq!(report["rerun"]["parent"], parent.as_str());
    let mut want = closure(&plan, &["L3_0"]);
    want.insert("synthesis".into());
    assert_eq!(ran(&before, &counts(&fake, &plan)), want);
    // Bad input: a step the plan does not have, a run that does not exist.
    let (code, v) = json_of(
        authed(&c, "POST", &format!("{}/api/runs/{parent}/rerun", s.base))
            .json(&serde_json::json!({"from": ["nope"]}))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 400, "{v}");
    let (code, _) = json_of(
        authed(
            &c,
            "POST",
            &format!("{}/api/runs/no-such-run/rerun", s.base),
        )
        .json(&serde_json::json!({}))
        .send()
        .unwrap(),
    );
    assert_eq!(code, 404);
}

/// The web view: a step's details have "re-run from here", which starts the re-run and
/// opens its page, where the steps it reused are marked.
#[test]
fn re_run_from_here_on_the_web_page() {
    use crate::serve::{TOKEN, client, start, start_run, wait_status};
    use crate::support::browser::{LivePage, chromium};
    let Some(browser) = chromium() else { return };
    let sb = Sandbox::new();
    let plan = layered();
    let fake = agent_server(&plan.to_string());
    let s = start(&sb, &model_flags(&fake), &["--token", TOKEN]);
    let c = client();
    let parent = start_run(
        &c,
        &s,
        serde_json::json!({"goal": "A layered project", "strategy": "dag"}),
    );
    wait_status(&c, &s, &parent, "succeeded");
    let mut page = LivePage::open(browser, &format!("{}/runs/{parent}?token={TOKEN}", s.base));
    page.wait_for(
        r#"!!document.getElementById('run-status')
            && document.getElementById('run-status').dataset.status === 'succeeded'
            && !!document.querySelector('#dag .step[data-step-id="L4_0"]')"#,
        "the finished run",
    );
    page.eval(r#"document.querySelector('#dag .step[data-step-id="L4_0"]').dispatchEvent(new MouseEvent('click', {bubbles: true}))"#);
    page.wait_for(
        r#"!!document.getElementById('rerun-from') && document.getElementById('rerun-from').dataset.step === 'L4_0'"#,
        "the re-run button of L4_0",
    );
    page.eval("document.getElementById('rerun-from').click()");
    let new = page.wait_for(
        &format!(
            r#"!!document.getElementById('run') && document.getElementById('run').dataset.runId !== '{parent}'
                && document.getElementById('run').dataset.runId"#
        ),
        "the re-run's page",
    );
    let new = new.as_str().unwrap().to_owned();
    let report = wait_status(&c, &s, &new, "succeeded");
    assert_eq!(report["rerun"]["parent"], parent.as_str());
    assert_eq!(report["rerun"]["executed"], serde_json::json!(["L4_0"]));
    // Its page marks the reused steps on the timeline.
    page.wait_for(
        r#"document.querySelectorAll('#timeline .reused').length >= 19"#,
        "the reused steps on the re-run's timeline",
    );
}

/// A program run unisolated may write anywhere: a re-run runs it again, with what reads
/// it, while the step beside it is reused.
#[test]
fn an_unisolated_program_runs_again_in_a_rerun() {
    let sb = Sandbox::new();
    let server = agent_server("{}");
    // The sandbox's uid is not this one: a file anyone may write.
    use std::os::unix::fs::PermissionsExt as _;
    let log = sb.work().join("runs.log");
    std::fs::write(&log, "").unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
    for dir in [sb.work(), sb.work().parent().unwrap().to_path_buf()] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() | 0o711;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    sb.write(
        "plan.json",
        &serde_json::json!({"goal": "Count", "steps": [
            {"id": "write", "description": "Write a line", "kind": "code", "lang": "bash",
             "code": format!("echo ran >> {}; wc -l < {}", log.display(), log.display())},
            {"id": "say", "description": "Say the count", "dependencies": ["write"]},
            {"id": "other", "description": "Something else"}]})
        .to_string(),
    );
    let mut args: Vec<String> = ["exec", "plan.json", "--json", "--sandbox", "process"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(model_flags(&server));
    let out = output(&mut sb.plan(args));
    let parent: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(parent["status"], "succeeded", "{}", stderr(&out));
    let report = rerun(&sb, parent["run_id"].as_str().unwrap(), &[]);
    assert_eq!(report["status"], "succeeded");
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 2);
    assert_eq!(
        report["rerun"]["executed"],
        serde_json::json!(["write", "say"])
    );
    assert_eq!(report["rerun"]["reused"], serde_json::json!(["other"]));
}
