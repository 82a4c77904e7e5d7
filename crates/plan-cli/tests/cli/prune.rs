//! Journal retention through the binary: `plan runs prune` on SQLite and PostgreSQL
//! (`--dry-run`, `--keep-failed`, `--json`, what is never deleted), and the `retention`
//! setting of plan.toml that `plan serve` and `plan worker` apply.
//!
//! Runs are made old by waiting until their last activity is further in the past than
//! the age given, never by a threshold of a second or less.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use plan_core::{RunId, RunStatus, Timestamp};
use plan_exec::store::{RunEnd, RunRecord, RunStore};
use plan_postgres::testing::TempCluster;
use serde_json::Value;
use tokio::runtime::Runtime;

use crate::support::{
    DIAMOND, Sandbox, agent_server, expect_code, model_flags, output, stderr, stdout,
};

/// The age the tests prune at: runs are waited on until they are older.
const AGE: &str = "2s";
const AGE_SECS: u64 = 2;

/// The runtime a test drives its library calls on (one per test: a PostgreSQL store's
/// connections live on the runtime that opened them).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A run created through the library and left at `status`.
async fn run_at(store: &dyn RunStore, status: RunStatus) -> String {
    let record = RunRecord::new(format!("a {status} run"));
    store.create_run(&record).await.unwrap();
    if status.is_terminal() {
        store
            .finish_run(&record.id, &RunEnd::new(status))
            .await
            .unwrap();
    } else if status != RunStatus::Running {
        store.set_status(&record.id, status).await.unwrap();
    }
    record.id.to_string()
}

/// A real run: `plan exec` of the diamond against the fake model, with its plan, events
/// and outputs in the store.
fn exec_run(sb: &Sandbox, store: &str) -> String {
    let server = agent_server(DIAMOND);
    sb.write("diamond.json", DIAMOND);
    let mut args = vec![
        "exec".to_owned(),
        "diamond.json".into(),
        "--json".into(),
        "--store".into(),
        store.into(),
    ];
    args.extend(model_flags(&server));
    let out = output(&mut sb.plan(&args));
    expect_code(&out, 0);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    v["run_id"].as_str().unwrap().to_owned()
}

/// `plan runs --json` of `store`: (id, status, updated) of every run.
fn listed(sb: &Sandbox, store: &str) -> Vec<(String, String, Timestamp)> {
    let out = output(&mut sb.plan(["runs", "--json", "--limit", "1000", "--store", store]));
    expect_code(&out, 0);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["run_id"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
                Timestamp::parse_rfc3339(r["updated"].as_str().unwrap()).unwrap(),
            )
        })
        .collect()
}

fn ids(sb: &Sandbox, store: &str) -> Vec<String> {
    let mut ids: Vec<String> = listed(sb, store).into_iter().map(|r| r.0).collect();
    ids.sort();
    ids
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|s| (*s).clone()).collect();
    ids.sort();
    ids
}

/// Waits until every run of `store` was last active more than [`AGE`] ago.
fn wait_until_old(sb: &Sandbox, store: &str) {
    let newest = listed(sb, store)
        .into_iter()
        .map(|r| r.2)
        .max()
        .expect("runs to wait on");
    let old_at = newest.system_time() + Duration::from_secs(AGE_SECS) + Duration::from_millis(20);
    if let Ok(left) = old_at.duration_since(SystemTime::now()) {
        std::thread::sleep(left);
    }
}

fn prune(sb: &Sandbox, store: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["runs", "prune", "--store", store];
    args.extend_from_slice(extra);
    output(&mut sb.plan(&args))
}

/// The run ids in the lines of human output that start with `verb`.
fn named(text: &str, verb: &str) -> Vec<String> {
    let mut ids: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{verb} ")))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|id| id.len() == 13)
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids
}

/// The runs of every status in `store`; the succeeded one is a real run.
struct Seeded {
    succeeded: String,
    failed: String,
    cancelled: String,
    rejected: String,
    waiting: String,
    running: String,
}

fn seed(rt: &Runtime, sb: &Sandbox, store_arg: &str, store: &dyn RunStore) -> Seeded {
    let succeeded = exec_run(sb, store_arg);
    rt.block_on(async {
        Seeded {
            succeeded,
            failed: run_at(store, RunStatus::Failed).await,
            cancelled: run_at(store, RunStatus::Cancelled).await,
            rejected: run_at(store, RunStatus::Rejected).await,
            waiting: run_at(store, RunStatus::AwaitingApproval).await,
            running: run_at(store, RunStatus::Running).await,
        }
    })
}

/// The checks both stores pass: nothing young goes, a dry run deletes nothing,
/// `--keep-failed` keeps failed and cancelled runs, and runs that have not ended stay.
fn prune_checks(sb: &Sandbox, store: &str, runs: &Seeded) {
    let all = ids(sb, store);
    assert_eq!(all.len(), 6, "{all:?}");

    // Nothing is an hour old.
    let out = prune(sb, store, &["--older-than", "1h"]);
    expect_code(&out, 0);
    assert_eq!(
        stdout(&out),
        "pruned 0 runs (0 events) ended and inactive for more than 1h\n"
    );
    assert_eq!(ids(sb, store), all);

    wait_until_old(sb, store);
    let ended = sorted(&[
        &runs.succeeded,
        &runs.failed,
        &runs.cancelled,
        &runs.rejected,
    ]);

    // A dry run lists what would go, and deletes nothing.
    let out = prune(sb, store, &["--older-than", AGE, "--dry-run"]);
    expect_code(&out, 0);
    let text = stdout(&out);
    assert_eq!(named(&text, "would prune"), ended, "{text}");
    let total = text.lines().last().unwrap();
    assert!(
        total.starts_with("would prune 4 runs (")
            && total.ends_with("events) ended and inactive for more than 2s"),
        "{text}"
    );
    assert!(
        text.contains(&format!("would prune {}  succeeded", runs.succeeded)),
        "{text}"
    );
    assert_eq!(ids(sb, store), all);

    // --keep-failed keeps the failed and cancelled runs.
    let out = prune(sb, store, &["--older-than", AGE, "--keep-failed"]);
    expect_code(&out, 0);
    let text = stdout(&out);
    assert_eq!(
        named(&text, "pruned"),
        sorted(&[&runs.succeeded, &runs.rejected]),
        "{text}"
    );
    assert!(text.contains("keeping failed and cancelled runs"), "{text}");
    let out = output(&mut sb.plan(["show", &runs.succeeded, "--store", store]));
    expect_code(&out, 2);

    // Then they go too; what has not ended never does.
    let out = prune(sb, store, &["--older-than", AGE, "--json"]);
    expect_code(&out, 0);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["dry_run"], false);
    assert_eq!(report["pruned"], 2);
    assert_eq!(report["older_than"], "2s");
    let mut gone: Vec<String> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_owned())
        .collect();
    gone.sort();
    assert_eq!(gone, sorted(&[&runs.failed, &runs.cancelled]));
    assert_eq!(
        ids(sb, store),
        sorted(&[&runs.waiting, &runs.running]),
        "the waiting and running runs stay"
    );
}

#[test]
fn prune_on_sqlite_deletes_old_ended_runs_and_never_a_waiting_or_running_one() {
    let sb = Sandbox::new();
    let path = sb.store();
    let store_arg = path.to_str().unwrap().to_owned();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let store = plan_sqlite::SqliteStore::open(&path).unwrap();
    let runs = seed(&runtime(), &sb, &store_arg, &store);
    prune_checks(&sb, &store_arg, &runs);
    // The default store is the same file.
    let out = output(&mut sb.plan(["runs", "prune", "--older-than", AGE, "--dry-run"]));
    expect_code(&out, 0);
    assert_eq!(
        stdout(&out),
        "would prune 0 runs (0 events) ended and inactive for more than 2s\n"
    );
}

#[test]
fn bad_ages_and_misplaced_flags_are_usage_errors_naming_the_value() {
    let sb = Sandbox::new();
    for (age, needle) in [
        ("30", "`30` has no unit"),
        ("thirty", "`thirty` is not an age"),
        ("30x", "`30x` is not an age"),
        ("1.5h", "`1.5h` is not an age"),
        ("0d", "`0d` is zero"),
    ] {
        let out = output(&mut sb.plan(["runs", "prune", "--older-than", age]));
        expect_code(&out, 2);
        let err = stderr(&out);
        assert!(err.contains(needle), "{age}: {err}");
        assert!(err.contains("--older-than"), "{age}: {err}");
    }
    let out = output(&mut sb.plan(["runs", "prune"]));
    expect_code(&out, 2);
    assert!(stderr(&out).contains("--older-than"), "{}", stderr(&out));
    let out = output(&mut sb.plan(["runs", "--json", "prune", "--older-than", "1d"]));
    expect_code(&out, 2);
    // A store that does not exist yet has nothing to prune, and is not created.
    let out = output(&mut sb.plan(["runs", "prune", "--older-than", "1d"]));
    expect_code(&out, 0);
    assert!(!sb.store().exists());
    // Nonsense in plan.toml is refused by every command, naming it.
    sb.write("plan.toml", "retention = \"a month\"\n");
    let out = output(&mut sb.plan(["runs"]));
    expect_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("retention") && err.contains("`a month`"),
        "{err}"
    );
}

/// A fresh database's URL, or `None` when PostgreSQL tests are skipped.
fn database() -> Option<String> {
    TempCluster::shared_or_skip().map(TempCluster::create_database)
}

#[test]
fn prune_on_postgres_also_keeps_a_run_whose_lease_is_live() {
    let Some(url) = database() else { return };
    let sb = Sandbox::new();
    let rt = runtime();
    let store = rt
        .block_on(plan_postgres::PostgresStore::connect(&url))
        .unwrap();
    let runs = seed(&rt, &sb, &url, &store);
    prune_checks(&sb, &url, &runs);

    // An ended run whose worker still holds its lease stays until the lease is over.
    let leased = rt.block_on(async {
        let id = run_at(&store, RunStatus::Queued).await;
        let claim = store
            .claim("holder", Duration::from_secs(600), &[])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claim.lease.run.as_str(), id);
        store
            .fenced(claim.lease.clone())
            .finish_run(&RunId::new(id.clone()), &RunEnd::new(RunStatus::Succeeded))
            .await
            .unwrap();
        claim.lease
    });
    wait_until_old(&sb, &url);
    let out = prune(&sb, &url, &["--older-than", AGE]);
    expect_code(&out, 0);
    assert!(
        stdout(&out).starts_with("pruned 0 runs"),
        "{}",
        stdout(&out)
    );
    rt.block_on(store.release(&leased)).unwrap();
    let out = prune(&sb, &url, &["--older-than", AGE]);
    expect_code(&out, 0);
    assert_eq!(
        named(&stdout(&out), "pruned"),
        [leased.run.to_string()],
        "{}",
        stdout(&out)
    );
    assert_eq!(ids(&sb, &url), sorted(&[&runs.waiting, &runs.running]));
}

/// Reads `child`'s stderr lines on a thread.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let pipe = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The first line containing `needle` (or panics after a minute, showing what came).
fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
            }
            Err(_) => panic!("no line with {needle:?} within a minute; stderr:\n{seen}"),
        }
    }
}

/// Stops a child with SIGTERM and waits for it.
fn terminate(mut child: Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two runs to apply retention to: an old ended one, and an old waiting one.
fn old_and_waiting(
    rt: &Runtime,
    sb: &Sandbox,
    store_arg: &str,
    store: &dyn RunStore,
) -> (String, String) {
    let (done, waiting) = rt.block_on(async {
        (
            run_at(store, RunStatus::Succeeded).await,
            run_at(store, RunStatus::AwaitingApproval).await,
        )
    });
    wait_until_old(sb, store_arg);
    sb.write("plan.toml", &format!("retention = \"{AGE}\"\n"));
    (done, waiting)
}

#[test]
fn serve_applies_the_retention_of_plan_toml_at_start() {
    let sb = Sandbox::new();
    let path = sb.store();
    let store_arg = path.to_str().unwrap().to_owned();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let store = plan_sqlite::SqliteStore::open(&path).unwrap();
    let (done, waiting) = old_and_waiting(&runtime(), &sb, &store_arg, &store);
    let server = agent_server(DIAMOND);
    let mut args = vec!["serve".to_owned(), "--addr".into(), "127.0.0.1:0".into()];
    args.extend(model_flags(&server));
    let mut child = sb
        .plan(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let line = wait_for_line(&lines, "retention: pruned");
    terminate(child);
    assert!(
        line.starts_with(
            "plan serve: retention: pruned 1 run (0 events) ended and inactive for more than 2s"
        ),
        "{line}"
    );
    assert!(line.ends_with(&done), "{line}");
    assert_eq!(ids(&sb, &store_arg), [waiting]);
}

#[test]
fn a_worker_applies_the_retention_of_plan_toml_at_start() {
    let Some(url) = database() else { return };
    let sb = Sandbox::new();
    let rt = runtime();
    let store = rt
        .block_on(plan_postgres::PostgresStore::connect(&url))
        .unwrap();
    let (done, waiting) = old_and_waiting(&rt, &sb, &url, &store);
    let mut child = sb
        .plan(["worker", "--store", &url, "--name", "w1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let line = wait_for_line(&lines, "retention: pruned");
    terminate(child);
    assert!(
        line.starts_with("plan worker: retention: pruned 1 run (0 events)"),
        "{line}"
    );
    assert!(line.ends_with(&done), "{line}");
    assert_eq!(ids(&sb, &url), [waiting]);
}
