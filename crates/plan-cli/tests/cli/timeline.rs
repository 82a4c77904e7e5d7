//! `plan serve`'s web view: the timeline beside the DAG, in headless Chromium. A finished
//! run with a retried step and a fallback shows one bar per attempt, by start, with the
//! retry, the fallback and the critical path marked; a live run gets its bars while it
//! is still going.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use plan_llm::testing::FakeReply;
use serde_json::json;

use crate::serve::{TOKEN, authed, client, json_of, start, start_run, wait_status};
use crate::support::browser::{LivePage, chromium, dump_dom};
use crate::support::{DIAMOND, Sandbox, agent_server, model_flags, step_prompt};

/// `a` and `b` in parallel, then `c`; `b` has a fallback.
const WITH_FALLBACK: &str = r#"{"goal": "Compare two things", "steps": [
    {"id": "a", "description": "Describe the first thing", "dependencies": []},
    {"id": "b", "description": "Describe the second thing", "dependencies": [],
     "fallback": {"description": "Recall the second thing from memory"}},
    {"id": "c", "description": "Compare them", "dependencies": ["a", "b"]}]}"#;

/// `second` after `first`.
const CHAIN: &str = r#"{"goal": "Count twice", "steps": [
    {"id": "first", "description": "Count the items", "dependencies": []},
    {"id": "second", "description": "Count them again", "dependencies": ["first"]}]}"#;

/// One bar of the timeline, as the page drew it.
#[derive(Debug)]
struct Bar {
    step: String,
    attempt: u32,
    classes: Vec<String>,
    start_ms: u64,
}

impl Bar {
    fn has(&self, class: &str) -> bool {
        self.classes.iter().any(|c| c == class)
    }
}

/// The value of attribute `name` in the opening tag `tag`.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let rest = tag.split(&format!(" {name}=\"")).nth(1)?;
    rest.split('"').next()
}

/// The bars of the page's timeline, in the page's order (top to bottom).
fn bars(dom: &str) -> Vec<Bar> {
    let svg = dom
        .split("<svg id=\"timeline\"")
        .nth(1)
        .and_then(|rest| rest.split("</svg>").next())
        .unwrap_or_default();
    svg.split("<g")
        .skip(1)
        .map(|rest| rest.split('>').next().unwrap())
        .filter(|tag| attr(tag, "class").is_some_and(|c| c.split(' ').any(|c| c == "bar")))
        .map(|tag| Bar {
            step: attr(tag, "data-step-id").unwrap().to_owned(),
            attempt: attr(tag, "data-attempt").unwrap().parse().unwrap(),
            classes: attr(tag, "class")
                .unwrap()
                .split(' ')
                .map(str::to_owned)
                .collect(),
            start_ms: attr(tag, "data-start-ms").unwrap().parse().unwrap(),
        })
        .collect()
}

/// The class attribute of the DAG's element of `step`.
fn dag_classes(dom: &str, step: &str) -> String {
    let dag = dom.split("<svg id=\"dag\"").nth(1).unwrap_or_default();
    let at = dag
        .find(&format!("data-step-id=\"{step}\""))
        .unwrap_or_else(|| panic!("no `{step}` in the DAG: {dom}"));
    let tag = &dag[dag[..at].rfind('<').unwrap()..at];
    attr(tag, "class").unwrap_or_default().to_owned()
}

#[test]
fn the_timeline_shows_every_attempt_with_retries_fallbacks_and_the_critical_path() {
    let Some(browser) = chromium() else { return };
    let sb = Sandbox::new();
    let fake = agent_server(WITH_FALLBACK);
    // `b`'s own body: an empty reply first (retried), then a 400 (not retried), so its
    // fallback runs. Every call takes 150 ms, so `b` (three calls) outlasts `a` (one).
    let calls = Arc::new(Mutex::new(0));
    fake.on_first(
        "Your step (`b`):\nDescribe the second thing\n",
        FakeReply::with(move |_| {
            let mut n = calls.lock().unwrap();
            *n += 1;
            if *n == 1 {
                FakeReply::text("")
            } else {
                FakeReply::error(400, "fake failure")
            }
        }),
    );
    fake.latency(Duration::from_millis(150));
    let s = start(&sb, &model_flags(&fake), &["--token", TOKEN]);
    let c = client();
    let id = start_run(
        &c,
        &s,
        json!({"goal": "Compare two things", "strategy": "dag"}),
    );
    let report = wait_status(&c, &s, &id, "succeeded");
    let b = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "b")
        .unwrap();
    assert_eq!(
        (b["attempts"].as_u64(), &b["fallback"]),
        (Some(3), &json!(true)),
        "{b}"
    );

    let dom = dump_dom(
        browser,
        &format!("{}/runs/{id}?token={TOKEN}", s.base),
        3000,
        None,
    );
    let bars = bars(&dom);
    let attempts = |step: &str| -> Vec<u32> {
        bars.iter()
            .filter(|b| b.step == step)
            .map(|b| b.attempt)
            .collect()
    };
    assert_eq!(
        (attempts("a"), attempts("b"), attempts("c")),
        (vec![1], vec![1, 2, 3], vec![1]),
        "one bar per attempt: {bars:?}"
    );
    assert_eq!(bars.len(), 5, "{bars:?}");
    assert!(
        bars.windows(2).all(|w| w[0].start_ms <= w[1].start_ms),
        "bars by start: {bars:?}"
    );
    assert_eq!(bars.last().unwrap().step, "c", "{bars:?}");
    let bar = |step: &str, attempt: u32| {
        bars.iter()
            .find(|b| b.step == step && b.attempt == attempt)
            .unwrap()
    };
    // The retry, the failure that led to the fallback, and the fallback.
    assert!(bar("b", 1).has("retried"), "{bars:?}");
    assert!(
        bar("b", 2).has("failed") && !bar("b", 2).has("fallback"),
        "{bars:?}"
    );
    assert!(
        bar("b", 3).has("fallback") && bar("b", 3).has("completed"),
        "{bars:?}"
    );
    for plain in [bar("a", 1), bar("c", 1)] {
        assert!(plain.has("completed"), "{plain:?}");
        assert!(!plain.has("retried") && !plain.has("fallback"), "{plain:?}");
    }
    // The critical path is b then c, on the timeline and on the DAG.
    for b in &bars {
        assert_eq!(b.has("critical"), b.step != "a", "{b:?}");
    }
    assert!(dag_classes(&dom, "b").contains("critical"), "{dom}");
    assert!(dag_classes(&dom, "c").contains("critical"), "{dom}");
    assert!(!dag_classes(&dom, "a").contains("critical"), "{dom}");
    assert!(!bars.iter().any(|b| b.has("reused")), "{bars:?}");
}

#[test]
fn a_live_run_gets_its_bars_while_it_is_still_going() {
    let Some(browser) = chromium() else { return };
    let sb = Sandbox::new();
    let fake = agent_server(CHAIN);
    // `second`'s model call is held until the test lets it go.
    let (release, held) = mpsc::channel::<()>();
    let held = Mutex::new(held);
    fake.on_first(
        &step_prompt("second"),
        FakeReply::with(move |_| {
            let _ = held.lock().unwrap().recv();
            FakeReply::text("result of second")
        }),
    );
    let s = start(&sb, &model_flags(&fake), &["--token", TOKEN]);
    let c = client();
    let id = start_run(&c, &s, json!({"goal": "Count twice", "strategy": "dag"}));
    let mut page = LivePage::open(browser, &format!("{}/runs/{id}?token={TOKEN}", s.base));

    page.wait_for(
        r#"!!document.querySelector('#timeline .bar.completed[data-step-id="first"]')
            && !!document.querySelector('#timeline .bar.running[data-step-id="second"]')"#,
        "`first` done and `second` running on the timeline",
    );
    let (_, run) = json_of(
        authed(&c, "GET", &format!("{}/api/runs/{id}", s.base))
            .send()
            .unwrap(),
    );
    assert_eq!(run["status"], "running", "the run is still going: {run}");
    assert_eq!(
        page.eval(r#"document.querySelector('#timeline .bar[data-step-id="second"]').hasAttribute('data-end-ms')"#),
        json!(false),
        "a running attempt has no end yet"
    );

    release.send(()).unwrap();
    wait_status(&c, &s, &id, "succeeded");
    let bars = page.wait_for(
        r#"document.getElementById('run-status').dataset.status === 'succeeded'
            && !document.querySelector('#timeline .bar.running')
            && [...document.querySelectorAll('#timeline .bar')].map(g => [g.dataset.stepId, Number(g.dataset.attempt), g.getAttribute('class')])"#,
        "the run finished on the page",
    );
    assert_eq!(
        bars,
        json!([
            ["first", 1, "bar completed critical"],
            ["second", 1, "bar completed critical"]
        ]),
        "{bars}"
    );
}

/// The revision after `b` of [`DIAMOND`] failed: `b2` replaces it, and `c` (the same id)
/// now compares `a` with `b2`.
const REVISED: &str = r#"{"goal": "Compare two things", "steps": [
    {"id": "b2", "description": "Describe the second thing from memory", "dependencies": []},
    {"id": "c", "description": "Compare them again", "dependencies": ["a", "b2"]}]}"#;

#[test]
fn a_replanned_run_lists_its_plan_versions_and_marks_what_changed_on_the_dag() {
    let Some(browser) = chromium() else { return };
    let sb = Sandbox::new();
    let fake = agent_server(DIAMOND);
    fake.on_first(&step_prompt("b"), FakeReply::error(400, "fake failure"));
    fake.on_first(
        "Plan again from the current state",
        FakeReply::text(REVISED),
    );
    let s = start(&sb, &model_flags(&fake), &["--token", TOKEN]);
    let c = client();
    let id = start_run(
        &c,
        &s,
        json!({"goal": "Compare two things", "strategy": "adaptive"}),
    );
    let report = wait_status(&c, &s, &id, "succeeded");
    let mut page = LivePage::open(browser, &format!("{}/runs/{id}?token={TOKEN}", s.base));
    let versions = page.wait_for(
        r#"document.querySelector('#timeline .bar[data-step-id="c"]')
            && [...document.querySelectorAll('#versions button')].map(b => b.textContent)"#,
        "the plan's versions and the timeline",
    );
    assert_eq!(
        versions,
        json!([
            "v0 · planned · 3 steps",
            "v1 · replanned · 3 steps · +1 −1 ~1"
        ]),
        "{report}"
    );
    // The DAG draws the latest plan; picking v1 marks what it changed against v0.
    let marks = r#"[...document.querySelectorAll('#dag .step')].map(g => [g.dataset.stepId,
        [...g.classList].filter(c => c.startsWith('diff-')).join(' ')])"#;
    let words = "document.getElementById('version-diff').textContent";
    page.eval(r#"document.querySelector('#versions button[data-version="1"]').click()"#);
    assert_eq!(
        page.eval(marks),
        json!([["a", ""], ["b2", "diff-added"], ["c", "diff-changed"]])
    );
    let said = page.eval(words);
    assert!(
        said.as_str().unwrap().starts_with(
            "v1 against v0: added b2; removed b; changed c (description, dependencies)."
        ),
        "{said}"
    );
    // v0 has no version before it; picking it again clears the marks.
    page.eval(r#"document.querySelector('#versions button[data-version="0"]').click()"#);
    assert_eq!(page.eval(words), json!("v0 is the first plan: 3 steps."));
    assert_eq!(
        page.eval(marks),
        json!([["a", ""], ["b2", "diff-absent"], ["c", ""]])
    );
    page.eval(r#"document.querySelector('#versions button[data-version="0"]').click()"#);
    assert_eq!(page.eval(words), json!(""));
    assert_eq!(page.eval(marks), json!([["a", ""], ["b2", ""], ["c", ""]]));
    // On the timeline, `a`, kept across the replan, is marked reused; `b` failed.
    let bars = page.eval(
        r#"[...document.querySelectorAll('#timeline .bar')].map(g => [g.dataset.stepId, g.getAttribute('class')])"#,
    );
    let class_of = |step: &str| {
        bars.as_array()
            .unwrap()
            .iter()
            .find(|b| b[0] == step)
            .map(|b| b[1].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no bar of `{step}`: {bars}"))
    };
    assert!(class_of("a").split(' ').any(|c| c == "reused"), "{bars}");
    assert!(class_of("b").split(' ').any(|c| c == "failed"), "{bars}");
    assert!(!class_of("b2").split(' ').any(|c| c == "reused"), "{bars}");
}
