//! `plan sandbox run`: exit codes, `--json`, limits.

use crate::support::{Sandbox, code, expect_code, output, stderr, stdout};

fn has_bwrap() -> bool {
    std::process::Command::new("bwrap")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn json_result_and_exit_code() {
    let sb = Sandbox::new();
    sb.write("job.sh", "echo out; echo err >&2; exit 3\n");
    let out = output(&mut sb.plan([
        "sandbox",
        "run",
        "job.sh",
        "--lang",
        "bash",
        "--sandbox",
        "process",
        "--json",
    ]));
    expect_code(&out, 3);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["signal"], serde_json::Value::Null);
    assert_eq!(v["stdout"], "out\n");
    assert_eq!(v["stderr"], "err\n");
    assert_eq!(v["truncated"], false);
    assert_eq!(v["limit_hit"], serde_json::Value::Null);
    assert_eq!(v["isolation"], "process");
    assert!(v["duration_ms"].is_u64());
}

#[test]
fn plain_output_passes_streams_through() {
    let sb = Sandbox::new();
    sb.write(
        "hello.py",
        "import sys\nprint('hello')\nprint('warn', file=sys.stderr)\n",
    );
    let out = output(&mut sb.plan([
        "sandbox",
        "run",
        "hello.py",
        "--lang",
        "python",
        "--sandbox",
        "process",
    ]));
    expect_code(&out, 0);
    assert_eq!(stdout(&out), "hello\n");
    assert!(stderr(&out).starts_with("warn\n"));
    assert!(stderr(&out).contains("unisolated"));
}

#[test]
fn timeout_kills_with_128_plus_signal() {
    let sb = Sandbox::new();
    sb.write("spin.sh", "sleep 30\n");
    let out = output(&mut sb.plan([
        "sandbox",
        "run",
        "spin.sh",
        "--lang",
        "bash",
        "--sandbox",
        "process",
        "--timeout",
        "1",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["limit_hit"], "timeout");
    let signal = v["signal"].as_i64().expect("killed by a signal");
    assert_eq!(code(&out) as i64, 128 + signal);
}

#[test]
fn sandbox_none_cannot_run_it() {
    let sb = Sandbox::new();
    sb.write("a.sh", "echo hi\n");
    let out = output(&mut sb.plan([
        "sandbox",
        "run",
        "a.sh",
        "--lang",
        "bash",
        "--sandbox",
        "none",
    ]));
    expect_code(&out, 125);
    assert_eq!(stdout(&out), "");
}

#[test]
fn bwrap_isolates_when_available() {
    if !has_bwrap() {
        assert!(
            std::env::var_os("CI").is_none(),
            "bwrap is missing in CI: install the bubblewrap package"
        );
        eprintln!(
            "notice: bwrap is not installed; the bwrap case of `plan sandbox run` is not checked here"
        );
        return;
    }
    let sb = Sandbox::new();
    sb.write("id.sh", "id -u\n");
    let out = output(&mut sb.plan(["sandbox", "run", "id.sh", "--lang", "bash", "--json"]));
    expect_code(&out, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["isolation"], "bwrap");
    assert_ne!(v["stdout"], "0\n", "ran as root inside the sandbox");
}

#[test]
fn missing_file_is_a_usage_error() {
    let sb = Sandbox::new();
    let out = output(&mut sb.plan(["sandbox", "run", "nope.py", "--lang", "python"]));
    expect_code(&out, 2);
}
