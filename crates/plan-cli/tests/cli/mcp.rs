//! Tools and MCP through the binary: `plan tools`, `--mcp` on a run whose step reads a
//! file through the real filesystem server, `[[mcp]]` tables, and `plan mcp` driven by
//! the official MCP Python SDK. The servers and the SDK are pinned (testdata/mcp).

use std::path::Path;

use plan_llm::testing::{FakeOpenAi, FakeReply};
use plan_mcp::testing;
use serde_json::{Value, json};

use crate::support::{
    DIAMOND, Sandbox, agent_server, code, expect_code, model_flags, output, stderr, stdout,
};

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn plan_tools_lists_the_built_ins() {
    let sb = Sandbox::new();
    let out = output(&mut sb.plan(["tools", "--json"]));
    expect_code(&out, 0);
    let tools = json_of(&stdout(&out));
    let rows: Vec<(String, String)> = tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for name in ["read_file", "list_files", "search_docs", "run_code"] {
        assert!(
            rows.contains(&(name.to_owned(), "builtin".to_owned())),
            "{rows:?}"
        );
    }
    assert!(tools[0]["description"].as_str().unwrap().len() > 10);
}

#[test]
fn plan_tools_lists_mcp_and_agent_profile_tools_with_their_source() {
    let sb = Sandbox::new();
    sb.write(
        "agents.toml",
        "[[agent]]\nname = \"echoer\"\ndescription = \"Echoes\"\ntools = [\"echo\", \"read_file\"]\n",
    );
    let out = output(&mut sb.plan([
        "tools",
        "--mcp",
        &testing::everything_spec(),
        "--agents",
        "agents.toml",
        "--json",
    ]));
    expect_code(&out, 0);
    let tools = json_of(&stdout(&out));
    let has = |name: &str, source: &str| {
        tools
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == name && t["source"] == source)
    };
    assert!(has("echo", "mcp:mcp-server-everything"), "{tools}");
    assert!(has("get-sum", "mcp:mcp-server-everything"), "{tools}");
    assert!(has("read_file", "builtin"), "{tools}");
    assert!(has("echo", "agent:echoer"), "{tools}");
    assert!(has("read_file", "agent:echoer"), "{tools}");

    // The plain listing has one line per tool: name, source, description.
    let out = output(&mut sb.plan(["tools", "--mcp", &testing::everything_spec()]));
    expect_code(&out, 0);
    let line = stdout(&out)
        .lines()
        .find(|l| l.starts_with("echo "))
        .map(str::to_owned)
        .unwrap();
    assert!(
        line.contains("mcp:mcp-server-everything")
            && line.ends_with("Echoes back the input string"),
        "{line}"
    );
}

#[test]
fn mcp_tables_in_plan_toml_are_used_and_checked() {
    let sb = Sandbox::new();
    let spec = testing::everything_spec();
    sb.write(
        "plan.toml",
        &format!(
            "[[mcp]]\nname = \"every\"\ncommand = {}\ntools = [\"get-sum\"]\ntimeout_secs = 60\nstart_timeout_secs = 120\n",
            toml_string(&spec)
        ),
    );
    let out = output(&mut sb.plan(["tools", "--json"]));
    expect_code(&out, 0);
    let tools = json_of(&stdout(&out));
    let mcp: Vec<&Value> = tools
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["source"] == "mcp:every")
        .collect();
    assert_eq!(mcp.len(), 1, "{tools}");
    assert_eq!(mcp[0]["name"], "get-sum");

    sb.write(
        "plan.toml",
        "[[mcp]]\nname = \"x\"\nurl = \"ftp://nowhere\"\n",
    );
    let out = output(&mut sb.plan(["tools"]));
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("[[mcp]] table 1 (`x`): `url` must start with http"),
        "{}",
        stderr(&out)
    );
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[test]
fn a_server_that_fails_to_start_is_a_usage_error_naming_it() {
    let sb = Sandbox::new();
    let out = output(&mut sb.plan(["tools", "--mcp", "plan-test-no-such-server --stdio"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("MCP server `plan-test-no-such-server` failed to start"),
        "{err}"
    );
    assert!(err.contains("hint: check the --mcp spec"), "{err}");

    let server = agent_server(DIAMOND);
    let mut args = vec![
        "run".to_owned(),
        "--tools".into(),
        "read_file,fly".into(),
        "goal".into(),
    ];
    args.extend(model_flags(&server));
    let out = output(&mut sb.plan(args));
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("unknown built-in tool `fly`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_run_step_reads_a_file_through_the_filesystem_server() {
    let sb = Sandbox::new();
    let docs = sb.dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let secret = docs.join("secret.txt");
    std::fs::write(&secret, "the launch code is tangerine-42\n").unwrap();
    let model = file_reader(&secret);
    sb.write(
        "plan.json",
        r#"{"goal": "Find the launch code", "steps": [
            {"id": "read", "description": "Read the secret file and report the launch code"}]}"#,
    );
    let events = sb.path("events.jsonl");
    let out = output(&mut sb.plan([
        "exec",
        "plan.json",
        "--mcp",
        &testing::filesystem_spec(&docs),
        "--model",
        "openai:fake-model",
        "--base-url",
        &model.base_url(),
        "--events",
        events.to_str().unwrap(),
        "--json",
    ]));
    expect_code(&out, 0);
    let report = json_of(&stdout(&out));
    assert_eq!(
        report["steps"][0]["output"], "The file says: the launch code is tangerine-42",
        "{report}"
    );
    let calls = crate::support::read_events(&events)
        .into_iter()
        .filter(|e| e["event"] == "tool_call")
        .collect::<Vec<_>>();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["tool"], "read_text_file");
    assert_eq!(calls[0]["ok"], true);
    // The model was offered the server's tools with their schemas.
    let first = &model.requests()[0].body;
    let offered: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(
        offered.contains(&"read_text_file") && offered.contains(&"list_directory"),
        "{offered:?}"
    );
}

/// A fake model that calls `tool` natively with `arguments` when it is offered tools, then
/// answers with what the tool returned.
fn tool_model(tool: &str, arguments: Value) -> FakeOpenAi {
    let server = FakeOpenAi::start_detached();
    let tool = tool.to_owned();
    server.otherwise(FakeReply::with(move |r| match r.tool_result() {
        Some(result) => FakeReply::text(format!("The file says: {}", result.trim())),
        None if !r.tools().is_empty() => FakeReply::tool_call(tool.clone(), arguments.clone()),
        None => FakeReply::text("FINAL ANSWER"),
    }));
    server
}

/// A fake model that reads `file` with the filesystem server's `read_text_file`.
fn file_reader(file: &Path) -> FakeOpenAi {
    tool_model(
        "read_text_file",
        json!({"path": file.display().to_string()}),
    )
}

#[test]
fn plan_mcp_serves_plan_run_and_show_to_the_python_sdk() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    // Slow enough that a run the caller does not wait for is still going when run returns.
    server.latency(std::time::Duration::from_millis(150));
    let python = testing::mcp_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/mcp/drive_plan_mcp.py");
    let mut cmd = std::process::Command::new(python);
    cmd.arg(&script)
        .arg(env!("CARGO_BIN_EXE_plan"))
        .args(model_flags(&server))
        .args(["--store", sb.store().to_str().unwrap()])
        .current_dir(sb.work())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", sb.dir.path().join("home"))
        .env("XDG_CONFIG_HOME", sb.dir.path().join("config"))
        .env("XDG_DATA_HOME", sb.dir.path().join("data"))
        .env("OPENAI_API_KEY", "sk-test-secret-0000");
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "the MCP client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = json_of(String::from_utf8_lossy(&out.stdout).trim());
    assert_eq!(seen["server_name"], "plan");
    assert_eq!(seen["tools"], json!(["plan", "run", "show"]));
    assert_eq!(seen["run_schema"]["required"], json!(["goal"]));
    assert_eq!(
        seen["run_schema"]["properties"]["wait_secs"]["type"],
        "integer"
    );

    // plan: the plan JSON.
    assert_eq!(seen["plan_is_error"], false);
    let steps: Vec<&str> = seen["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["a", "b", "c"]);

    // run: finished within wait_secs, so the report is there, with progress on the way.
    assert_eq!(seen["run_is_error"], false, "{seen}");
    let run = &seen["run"];
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["answer"], "FINAL ANSWER: all done");
    let run_id = run["run_id"].as_str().unwrap();
    assert!(
        seen["run_texts"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("run {run_id} succeeded"))
    );
    let progress = seen["progress"].as_array().unwrap();
    assert!(progress.len() >= 4, "{progress:?}");
    let messages: Vec<&str> = progress
        .iter()
        .map(|p| p["message"].as_str().unwrap())
        .collect();
    assert!(messages.contains(&"step `c` completed"), "{messages:?}");
    let values: Vec<f64> = progress
        .iter()
        .map(|p| p["progress"].as_f64().unwrap())
        .collect();
    assert!(
        values.windows(2).all(|w| w[1] > w[0]),
        "progress increases: {values:?}"
    );

    // show: the same report, read back from the store.
    assert_eq!(seen["show_is_error"], false);
    assert_eq!(seen["show"]["run_id"], run_id);
    assert_eq!(seen["show"]["answer"], "FINAL ANSWER: all done");
    assert_eq!(seen["show"]["steps"].as_array().unwrap().len(), 3);

    // With wait_secs 0 the run goes on in the background and show reports it later.
    assert_eq!(seen["bg"]["status"], "running", "{seen}");
    assert!(
        seen["bg_texts"][0]
            .as_str()
            .unwrap()
            .contains("continues in the background")
    );
    assert_ne!(seen["bg"]["run_id"], run_id);
    assert_eq!(seen["bg_final_status"], "succeeded");

    // Errors are tool errors that say what to do.
    assert_eq!(seen["missing_is_error"], true);
    assert!(
        seen["missing_texts"][0]
            .as_str()
            .unwrap()
            .contains("no run `no-such-run` in the run store")
    );
    assert_eq!(seen["bad_is_error"], true);
    assert!(
        seen["bad_texts"][0]
            .as_str()
            .unwrap()
            .contains("`colour` is not an argument of `plan`: the arguments are goal,"),
        "{seen}"
    );

    // The run is in the store for the CLI too.
    let out = output(&mut sb.plan(["show", run_id, "--json"]));
    expect_code(&out, 0);
    assert_eq!(json_of(&stdout(&out))["status"], "succeeded");
}

#[test]
fn a_step_whose_mcp_tool_hangs_fails_naming_the_server_and_tool() {
    let sb = Sandbox::new();
    sb.write(
        "plan.toml",
        &format!(
            "[[mcp]]\nname = \"every\"\ncommand = {}\ntimeout_secs = 1\n",
            toml_string(&testing::everything_spec())
        ),
    );
    sb.write(
        "plan.json",
        r#"{"goal": "Wait", "steps": [{"id": "wait", "description": "Run the long operation"}]}"#,
    );
    let model = tool_model(
        "trigger-long-running-operation",
        json!({"duration": 20, "steps": 2}),
    );
    let out = output(&mut sb.plan([
        "exec",
        "plan.json",
        "--model",
        "openai:fake-model",
        "--base-url",
        &model.base_url(),
    ]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("the tool `trigger-long-running-operation` is unavailable: MCP server `every`, tool `trigger-long-running-operation`: no answer within 1s"),
        "{err}"
    );
}

#[test]
fn built_in_tools_and_agent_profiles_reach_the_steps_of_a_run() {
    let sb = Sandbox::new();
    sb.write("notes.txt", "the meeting is on Thursday\n");
    sb.write(
        "plan.json",
        r#"{"goal": "When is the meeting?", "steps": [{"id": "read", "description": "Read notes.txt"}]}"#,
    );
    let model = tool_model("read_file", json!({"path": "notes.txt"}));
    let out = output(&mut sb.plan([
        "exec",
        "plan.json",
        "--tools",
        "read_file",
        "--model",
        "openai:fake-model",
        "--base-url",
        &model.base_url(),
        "--json",
    ]));
    expect_code(&out, 0);
    let report = json_of(&stdout(&out));
    assert_eq!(
        report["steps"][0]["output"], "The file says: 1: the meeting is on Thursday",
        "{report}"
    );
    let offered: Vec<String> = model.requests()[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(offered, ["read_file"]);

    // An agent profile routes its step to its own system prompt.
    sb.write(
        "agents.toml",
        "[[agent]]\nname = \"scribe\"\ndescription = \"Writes things down\"\nsystem_prompt = \"You are the scribe.\"\n",
    );
    sb.write(
        "plan.json",
        r#"{"goal": "Note it", "steps": [{"id": "note", "description": "Write it down", "agent": "scribe"}]}"#,
    );
    let server = agent_server(DIAMOND);
    server.on_first(
        "You are the scribe.",
        FakeReply::Text("noted by the scribe".into()),
    );
    let mut args: Vec<String> = ["exec", "plan.json", "--agents", "agents.toml", "--json"]
        .map(String::from)
        .to_vec();
    args.extend(model_flags(&server));
    let out = output(&mut sb.plan(args));
    expect_code(&out, 0);
    assert_eq!(
        json_of(&stdout(&out))["steps"][0]["output"],
        "noted by the scribe"
    );

    // A plan naming an agent that no profile defines is refused before it runs.
    sb.write(
        "plan.json",
        r#"{"goal": "Note it", "steps": [{"id": "note", "description": "Write it down", "agent": "poet"}]}"#,
    );
    let mut args: Vec<String> = ["exec", "plan.json", "--agents", "agents.toml"]
        .map(String::from)
        .to_vec();
    args.extend(model_flags(&server));
    let out = output(&mut sb.plan(args));
    assert_ne!(code(&out), 0);
    assert!(
        stderr(&out).contains("step `note` uses `poet`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn search_chooses_the_research_backend() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    for (search, expected) in [
        ("brave", "BRAVE_API_KEY is not set"),
        ("google", "unknown search backend; use `brave`"),
        ("local:/no/such/folder", "not a folder"),
    ] {
        let mut args: Vec<String> = ["run", "--search", search, "goal"]
            .map(String::from)
            .to_vec();
        args.extend(model_flags(&server));
        let out = output(&mut sb.plan(args));
        assert_eq!(code(&out), 2, "{search}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{search}: {}",
            stderr(&out)
        );
    }
    let mut args: Vec<String> = ["run", "--tools", "search_docs", "goal"]
        .map(String::from)
        .to_vec();
    args.extend(model_flags(&server));
    let out = output(&mut sb.plan(args));
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("hint: pass --search brave"),
        "{}",
        stderr(&out)
    );
}

/// Every process below `pid` (children, grandchildren, ...), from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces.
        let after = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
        let ppid = after.split(' ').nth(1).and_then(|s| s.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.insert(p, ppid);
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (child, ppid) in &parents {
            if *ppid == parent {
                out.push(*child);
                frontier.push(*child);
            }
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s[s.rfind(')').map_or(0, |i| i + 2)..].starts_with('Z'))
}

/// `plan exec` of a one-step plan whose step is waiting on a 60 s MCP tool call to the
/// server `spec`, and the processes of its MCP server.
fn plan_waiting_on_a_tool(sb: &Sandbox, spec: &str) -> (std::process::Child, Vec<u32>, FakeOpenAi) {
    sb.write(
        "plan.json",
        r#"{"goal": "Wait", "steps": [{"id": "wait", "description": "Run the long operation"}]}"#,
    );
    let model = tool_model(
        "trigger-long-running-operation",
        json!({"duration": 60, "steps": 2}),
    );
    let events = sb.path("events.jsonl");
    let child = sb
        .plan([
            "exec",
            "plan.json",
            "--mcp",
            spec,
            "--model",
            "openai:fake-model",
            "--base-url",
            &model.base_url(),
            "--events",
            events.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The step is waiting on the tool once the model has asked for the call.
    crate::support::wait_for_event(&events, "llm_call", 60);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let servers = descendants(child.id());
    assert!(!servers.is_empty(), "the MCP server runs under plan");
    (child, servers, model)
}

/// Waits until none of `servers` is alive. Generous: only servers that never go fail the
/// test, slow ones just take longer.
fn assert_all_gone(servers: &[u32], after: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while servers.iter().any(|p| alive(*p)) {
        assert!(
            std::time::Instant::now() < deadline,
            "MCP server processes still alive after {after}: {:?}",
            servers.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn ctrl_c_during_a_tool_call_leaves_no_mcp_server_behind() {
    let sb = Sandbox::new();
    let (child, servers, _model) = plan_waiting_on_a_tool(&sb, &testing::everything_spec());
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_all_gone(&servers, "Ctrl-C");
}

/// `kill -9` gives plan no chance to clean up: the server's process group dies with it all
/// the same (the kernel signals the guard that leads it, see plan-mcp's `child`). The
/// server here leaves a helper process running, as servers that start others do: it would
/// outlive plan, since it does not read the closed stdin that ends the server itself.
#[test]
fn kill_9_of_plan_leaves_no_mcp_server_behind() {
    let sb = Sandbox::new();
    let spec = format!("sh -c \"sleep 300 & exec {}\"", testing::everything_spec());
    let (mut child, servers, _model) = plan_waiting_on_a_tool(&sb, &spec);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_all_gone(&servers, "kill -9 of plan");
}

/// A stdio MCP server gets the system's basics and what its table names, never the API
/// keys or database password in plan's environment: its `get-env` tool prints what it got.
#[test]
fn mcp_servers_do_not_get_the_api_keys() {
    let sb = Sandbox::new();
    sb.write(
        "plan.toml",
        &format!(
            "[[mcp]]\nname = \"every\"\ncommand = {}\nenv_pass = [\"PLAN_TEST_PASSED\"]\nenv = {{ PLAN_TEST_SET = \"set-in-table\" }}\n",
            toml_string(&testing::everything_spec())
        ),
    );
    sb.write(
        "plan.json",
        r#"{"goal": "Show the environment", "steps": [{"id": "env", "description": "Print the server's environment"}]}"#,
    );
    let model = tool_model("get-env", json!({}));
    let out = output(
        sb.plan([
            "exec",
            "plan.json",
            "--model",
            "openai:fake-model",
            "--base-url",
            &model.base_url(),
            "--json",
        ])
        .env("OPENAI_API_KEY", "sk-test-never-leaks-0001")
        .env("ANTHROPIC_API_KEY", "sk-ant-test-never-leaks-0002")
        .env("PGPASSWORD", "pg-test-never-leaks-0003")
        .env("PLAN_SERVE_TOKEN", "serve-test-never-leaks-0004")
        .env("PLAN_TEST_PASSED", "passed-by-name"),
    );
    expect_code(&out, 0);
    let report = json_of(&stdout(&out));
    let seen = report["steps"][0]["output"].as_str().unwrap();
    assert!(seen.contains("\"PATH\""), "{seen}");
    assert!(seen.contains("passed-by-name"), "{seen}");
    assert!(seen.contains("set-in-table"), "{seen}");
    assert!(!seen.contains("never-leaks"), "{seen}");
    assert!(!seen.contains("OPENAI_API_KEY"), "{seen}");
}
