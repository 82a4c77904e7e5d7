//! The live view on a real terminal: `plan` with stderr on a pseudo-terminal (stdout stays a
//! pipe), against the fake model server. Assertions are on what the terminal received and
//! on the screen a terminal shows afterwards, never on timings.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::pty::{Escape, TermRun, escapes, run_on_pty};
use crate::support::{DIAMOND, Sandbox, agent_server, model_flags, step_prompt};
use plan_llm::testing::{FakeOpenAi, FakeReply};

/// How long every model call takes in live tests: long enough that each running step is
/// drawn by the spinners' ticks many times over, whatever the machine's load.
const LATENCY: Duration = Duration::from_millis(600);

/// `plan ARGS` (plus the server's model flags) on a terminal that understands escapes.
fn on_terminal(sb: &Sandbox, server: &FakeOpenAi, args: &[&str], env: &[(&str, &str)]) -> TermRun {
    let mut cmd = sb.plan(
        args.iter()
            .map(|s| s.to_string())
            .chain(model_flags(server)),
    );
    cmd.env("TERM", "xterm-256color");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_on_pty(cmd)
}

fn slow_server(plan: &str) -> FakeOpenAi {
    let server = agent_server(plan);
    server.latency(LATENCY);
    server
}

/// The step ids named by spinner lines (`⠁ a 0s`): a braille frame, the id, the elapsed time.
fn spinner_ids(plain: &str) -> BTreeSet<String> {
    let chars: Vec<char> = plain.chars().collect();
    let mut ids = BTreeSet::new();
    for (i, c) in chars.iter().enumerate() {
        if !('\u{2801}'..='\u{28ff}').contains(c) || chars.get(i + 1) != Some(&' ') {
            continue;
        }
        let rest: String = chars[i + 2..].iter().take(40).collect();
        let mut words = rest.split(' ');
        let (Some(id), Some(elapsed)) = (words.next(), words.next()) else {
            continue;
        };
        let is_id = !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let is_elapsed = elapsed.len() > 1
            && elapsed.ends_with('s')
            && elapsed[..elapsed.len() - 1]
                .chars()
                .all(|c| c.is_ascii_digit());
        if is_id && is_elapsed && id != "planning" {
            ids.insert(id.to_owned());
        }
    }
    ids
}

/// Every `done/total` the bar showed (`━━━╸ 1/3 steps`), in order.
fn bar_counts(plain: &str) -> Vec<(u64, u64)> {
    let words: Vec<&str> = plain.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[1] == "steps")
        .filter_map(|w| {
            let (done, total) = w[0].split_once('/')?;
            Some((done.parse().ok()?, total.parse().ok()?))
        })
        .collect()
}

/// Whether `line` starts with an RFC 3339 UTC timestamp.
fn timestamped(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 20
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[10] == b'T'
        && line.split(' ').next().is_some_and(|ts| ts.ends_with('Z'))
}

/// Asserts that nothing of the live view is left on the final screen: no spinner, no bar,
/// no planning line.
#[track_caller]
fn assert_view_cleared(screen: &str) {
    for line in screen.lines() {
        assert!(
            !line.chars().any(|c| ('\u{2801}'..='\u{28ff}').contains(&c))
                && !line.contains(" steps ")
                && !line.contains('━')
                && !line.starts_with("planning"),
            "live view left on the screen: {line:?}\n--- screen\n{screen}"
        );
    }
}

/// The index of the first screen line starting with `prefix`.
#[track_caller]
fn line_index(lines: &[&str], prefix: &str) -> usize {
    lines
        .iter()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| {
            panic!(
                "no line starting {prefix:?} on the screen:\n{}",
                lines.join("\n")
            )
        })
}

/// Asserts the screen after a successful DIAMOND run: every line printed once, in order, and
/// nothing else.
#[track_caller]
fn assert_diamond_screen(screen: &str) {
    let lines: Vec<&str> = screen.lines().collect();
    assert_eq!(lines[0], "run started: Compare two things", "{screen}");
    // The default strategy, auto, chose to plan.
    assert_eq!(lines[1], "route: planned", "{screen}");
    let lines = &lines[1..];
    assert_eq!(lines[1], "plan: 3 steps", "{screen}");
    assert!(lines[2].contains("Goal: Compare two things"), "{screen}");
    let tree: String = lines[3..6].join("\n");
    for step in [
        "a: Describe the first thing",
        "b: Describe the second thing",
        "c: Compare them",
    ] {
        assert!(tree.contains(step), "plan tree lacks {step:?}:\n{screen}");
    }
    // The forecast, from the defaults: the store has no earlier runs.
    assert!(
        lines[6].starts_with("forecast: 5-") && lines[6].contains("(defaults: no earlier runs"),
        "{screen}"
    );
    let done: BTreeSet<&str> = lines[7..9].iter().copied().collect();
    assert!(
        done.iter().any(|l| l.starts_with("✓ a done in "))
            && done.iter().any(|l| l.starts_with("✓ b done in ")),
        "{screen}"
    );
    assert!(lines[9].starts_with("✓ c done in "), "{screen}");
    assert_eq!(lines[10], "run succeeded", "{screen}");
    assert!(
        lines[11].starts_with("run ") && lines[11].contains(" succeeded: 3 steps, 5 model calls, "),
        "{screen}"
    );
    assert_eq!(lines.len(), 12, "unexpected lines on the screen:\n{screen}");
}

#[test]
fn live_view_draws_spinners_the_bar_and_the_plan_in_colour() {
    let sb = Sandbox::new();
    let server = slow_server(DIAMOND);
    let out = on_terminal(&sb, &server, &["run", "Compare two things"], &[]);
    out.expect_code(0);
    // The answer goes to stdout untouched.
    assert_eq!(out.stdout(), "FINAL ANSWER: all done\n");

    let plain = out.plain();
    assert!(plain.contains("planning"), "no planning line: {plain}");
    assert_eq!(
        spinner_ids(&plain),
        BTreeSet::from(["a".to_owned(), "b".to_owned(), "c".to_owned()]),
        "a spinner for every step: {plain}"
    );
    let counts = bar_counts(&plain);
    assert_eq!(
        counts.iter().max(),
        Some(&(3, 3)),
        "bar never full: {counts:?}"
    );
    assert!(
        counts.iter().all(|&(done, total)| total == 3 && done <= 3),
        "the bar counts steps of the 3-step plan: {counts:?}"
    );
    assert!(
        counts.windows(2).all(|w| w[0].0 <= w[1].0),
        "the bar went backwards: {counts:?}"
    );
    // While the steps run, the bar shows the time left on the critical path.
    assert!(plain.contains("ETA ~"), "no ETA in the bar: {plain}");
    let found = escapes(&out.text());
    assert!(found.iter().any(Escape::is_redraw), "no redraw: {found:?}");
    // Green ticks, bold ids.
    assert!(out.text().contains("\x1b[32m✓\x1b[0m"), "{:?}", out.text());
    assert!(out.text().contains("\x1b[1ma\x1b[0m"), "{:?}", out.text());

    let screen = out.screen();
    assert_view_cleared(&screen);
    assert_diamond_screen(&screen);
}

#[test]
fn no_color_keeps_the_live_view_without_colours() {
    let sb = Sandbox::new();
    let server = slow_server(DIAMOND);
    let out = on_terminal(
        &sb,
        &server,
        &["run", "Compare two things"],
        &[("NO_COLOR", "1")],
    );
    out.expect_code(0);
    assert_eq!(out.stdout(), "FINAL ANSWER: all done\n");
    let found = escapes(&out.text());
    let colours: Vec<&Escape> = found.iter().filter(|e| e.is_colour()).collect();
    assert!(colours.is_empty(), "colours with NO_COLOR: {colours:?}");
    // Still live: redrawn in place, spinners and the bar.
    assert!(found.iter().any(Escape::is_redraw), "no redraw: {found:?}");
    let plain = out.plain();
    assert_eq!(spinner_ids(&plain).len(), 3, "{plain}");
    assert_eq!(bar_counts(&plain).iter().max(), Some(&(3, 3)), "{plain}");
    let screen = out.screen();
    assert_view_cleared(&screen);
    assert_diamond_screen(&screen);
}

#[test]
fn quiet_on_a_terminal_prints_plain_timestamped_lines() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let out = on_terminal(&sb, &server, &["-q", "run", "Compare two things"], &[]);
    out.expect_code(0);
    assert_eq!(out.stdout(), "FINAL ANSWER: all done\n");
    assert_plain_lines(&out);
    // Still coloured: it is a terminal.
    assert!(escapes(&out.text()).iter().any(Escape::is_colour));
}

#[test]
fn a_terminal_without_escapes_gets_plain_lines() {
    for term in [Some("dumb"), None] {
        let sb = Sandbox::new();
        let server = agent_server(DIAMOND);
        let mut cmd = sb.plan(
            ["run", "Compare two things"]
                .iter()
                .map(|s| s.to_string())
                .chain(model_flags(&server)),
        );
        if let Some(term) = term {
            cmd.env("TERM", term);
        }
        let out = run_on_pty(cmd);
        out.expect_code(0);
        assert_plain_lines(&out);
        assert!(
            escapes(&out.text()).is_empty(),
            "escapes with TERM={term:?}: {:?}",
            out.text()
        );
    }
}

/// Plain mode: every line is timestamped (plan trees are indented under theirs), nothing is
/// redrawn.
#[track_caller]
fn assert_plain_lines(out: &TermRun) {
    let text = out.text();
    assert!(
        !escapes(&text).iter().any(Escape::is_redraw),
        "redraw in plain mode: {text:?}"
    );
    assert!(
        !text.replace("\r\n", "\n").contains('\r'),
        "carriage return in plain mode: {text:?}"
    );
    let plain = out.plain();
    let mut lines = plain.lines();
    // The last line is the run's summary, printed after the events.
    let summary = lines.next_back().unwrap();
    assert!(summary.contains(" succeeded: 3 steps"), "{plain}");
    for line in lines {
        assert!(
            timestamped(line) || line.starts_with(&" ".repeat(25)),
            "not timestamped: {line:?}\n{plain}"
        );
    }
    for needle in [
        "run started: ",
        "plan: 3 steps",
        "✓ a done in",
        "✓ c done in",
    ] {
        assert!(plain.contains(needle), "no {needle:?}: {plain}");
    }
    assert!(spinner_ids(&plain).is_empty(), "{plain}");
    assert!(bar_counts(&plain).is_empty(), "{plain}");
}

#[test]
fn fallback_is_called_out_on_the_terminal() {
    let plan = r#"{"goal": "Compare two things", "steps": [
        {"id": "a", "description": "Describe the first thing", "dependencies": []},
        {"id": "b", "description": "Describe the second thing", "dependencies": [],
         "fallback": {"description": "Recall the second thing from memory"}},
        {"id": "c", "description": "Compare them", "dependencies": ["a", "b"]}]}"#;
    let sb = Sandbox::new();
    let server = slow_server(plan);
    // b's own body fails for good (400 is not retried); its fallback body answers.
    server.on_first(
        &format!("{}:\nDescribe the second thing", step_prompt("b")),
        FakeReply::error(400, "fake failure"),
    );
    let out = on_terminal(&sb, &server, &["run", "Compare two things"], &[]);
    out.expect_code(0);
    assert_eq!(out.stdout(), "FINAL ANSWER: all done\n");
    // Yellow, above the live view.
    assert!(
        out.text()
            .contains("\x1b[33m↪ fallback\x1b[0m for \x1b[1mb\x1b[0m after: "),
        "{:?}",
        out.text()
    );
    let screen = out.screen();
    assert_view_cleared(&screen);
    let lines: Vec<&str> = screen.lines().collect();
    let fallback = line_index(&lines, "↪ fallback for b after: ");
    let b_done = line_index(&lines, "✓ b done in ");
    assert!(fallback < b_done, "{screen}");
    assert_eq!(
        bar_counts(&out.plain()).iter().max(),
        Some(&(3, 3)),
        "{}",
        out.plain()
    );
}

#[test]
fn replan_is_called_out_on_the_terminal() {
    let sb = Sandbox::new();
    let server = slow_server(DIAMOND);
    server.on_first(&step_prompt("b"), FakeReply::error(400, "fake failure"));
    let replan = r#"{"goal": "Compare two things", "steps": [
        {"id": "b2", "description": "Describe the second thing from memory", "dependencies": []},
        {"id": "c2", "description": "Compare them", "dependencies": ["a", "b2"]}]}"#;
    server.on_first(
        "Plan again from the current state",
        FakeReply::Text(replan.to_owned()),
    );
    let out = on_terminal(
        &sb,
        &server,
        &["run", "Compare two things", "--strategy", "adaptive"],
        &[],
    );
    out.expect_code(0);
    assert_eq!(out.stdout(), "FINAL ANSWER: all done\n");
    assert!(
        out.text()
            .contains("\x1b[33m↻ replanned\x1b[0m (revision 1): "),
        "{:?}",
        out.text()
    );
    let plain = out.plain();
    let ids = spinner_ids(&plain);
    for id in ["a", "b", "b2", "c2"] {
        assert!(ids.contains(id), "no spinner for {id}: {ids:?}");
    }
    let screen = out.screen();
    assert_view_cleared(&screen);
    let lines: Vec<&str> = screen.lines().collect();
    let failed = line_index(&lines, "✗ b failed: ");
    let replanned = line_index(&lines, "↻ replanned (revision 1): ");
    assert!(failed < replanned, "{screen}");
    assert_eq!(lines[replanned + 1], "  kept: a", "{screen}");
    let tree = lines[replanned + 2..].join("\n");
    assert!(
        tree.contains("b2: Describe the second thing from memory") && tree.contains("c2: "),
        "the new plan is shown: {screen}"
    );
    let b2 = line_index(&lines, "✓ b2 done in ");
    let c2 = line_index(&lines, "✓ c2 done in ");
    assert!(replanned < b2 && b2 < c2, "{screen}");
    assert!(lines.last().unwrap().contains(" succeeded: "), "{screen}");
    // The bar follows the plan it runs: full at the end.
    let counts = bar_counts(&plain);
    let last = *counts.last().unwrap();
    assert_eq!(last.0, last.1, "bar not full at the end: {counts:?}");
}

#[test]
fn failed_run_leaves_a_clean_screen_naming_the_failure() {
    let sb = Sandbox::new();
    let server = slow_server(DIAMOND);
    server.on_first(&step_prompt("b"), FakeReply::error(400, "fake failure"));
    let out = on_terminal(
        &sb,
        &server,
        &["run", "Compare two things", "--max-replans", "0"],
        &[],
    );
    out.expect_code(1);
    assert_eq!(out.stdout(), "", "no answer on stdout");
    // Red cross.
    assert!(out.text().contains("31m✗\x1b[0m"), "{:?}", out.text());
    let screen = out.screen();
    assert_view_cleared(&screen);
    let lines: Vec<&str> = screen.lines().collect();
    let failed = line_index(&lines, "✗ b failed: ");
    let skipped = line_index(&lines, "- c skipped: ");
    let run_failed = line_index(&lines, "run failed");
    assert!(failed < skipped && skipped < run_failed, "{screen}");
    assert!(screen.contains("  b: "), "failed step named: {screen}");
    assert!(lines.last().unwrap().contains("plan resume "), "{screen}");
}
