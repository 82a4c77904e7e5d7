//! The run settings a remote caller may name (`plan_strategies::RunSettings`) on the doors
//! that take them: the body of `POST /api/runs` on `plan serve` and the arguments of the
//! `run` and `plan` tools of `plan mcp`. A budget named there holds, and an unknown field
//! or a nonsense value is refused naming it.

use std::io::{BufRead, BufReader, Lines, Write};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};

use serde_json::{Value, json};

use crate::serve::{
    TOKEN, assert_stream_ends_with_run_finished, authed, client, json_of, start, start_run,
};
use crate::support::{DIAMOND, Sandbox, agent_server, model_flags, step_prompt};

#[test]
fn a_token_budget_in_a_run_request_stops_the_run_and_nonsense_is_named() {
    let sb = Sandbox::new();
    let fake = agent_server(DIAMOND);
    let s = start(&sb, &model_flags(&fake), &["--token", TOKEN]);
    let c = client();
    let id = start_run(
        &c,
        &s,
        json!({"goal": "Compare two things", "strategy": "dag", "budget_tokens": 5}),
    );
    assert_stream_ends_with_run_finished(&c, &s, &id);
    let (code, report) = json_of(
        authed(&c, "GET", &format!("{}/api/runs/{id}", s.base))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 200, "{report}");
    assert_ne!(report["status"], "succeeded", "{report}");
    assert!(
        report["failure"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("budget"),
        "the report names the budget: {report}"
    );
    assert_eq!(
        fake.count(&step_prompt("c")),
        0,
        "no step ran past the budget"
    );

    let url = format!("{}/api/runs", s.base);
    for (body, named) in [
        (json!({"goal": "g", "max_replans": -1}), "max_replans = -1"),
        (json!({"goal": "g", "concurrency": 0}), "concurrency = 0"),
        (
            json!({"goal": "g", "step_timeout_secs": 10_000_000}),
            "step_timeout_secs = 10000000: must be at most 86400",
        ),
        (
            json!({"goal": "g", "max_step": 3}),
            "`max_step` is not a run setting (did you mean `max_steps`?)",
        ),
        (json!({"goal": "g", "budget_usd": -1}), "budget_usd = -1"),
        (
            json!({"goal": "g", "budget_usd": 1}),
            "a budget in dollars needs the price of openai:fake-model",
        ),
    ] {
        let (code, v) = json_of(authed(&c, "POST", &url).json(&body).send().unwrap());
        assert_eq!(code, 422, "{body}: {v}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains(named), "{body}: {e}");
    }
}

/// `plan mcp` on stdio, spoken to line by line (JSON-RPC 2.0), initialized.
struct Mcp {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    next: u64,
}

impl Mcp {
    fn start(sb: &Sandbox, model: &[String]) -> Mcp {
        let mut args = vec!["mcp".to_owned()];
        args.extend(model.iter().cloned());
        let mut child = sb
            .plan(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut mcp = Mcp {
            child,
            stdin,
            lines,
            next: 0,
        };
        let init = mcp.call(
            "initialize",
            json!({"protocolVersion": "2025-03-26", "capabilities": {},
                   "clientInfo": {"name": "tests", "version": "0"}}),
        );
        assert!(init["result"].is_object(), "initialize: {init}");
        mcp.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        mcp
    }

    fn send(&mut self, v: Value) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{v}").unwrap();
        stdin.flush().unwrap();
    }

    /// Calls `method` and returns its answer (notifications on the way are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let line = self
                .lines
                .next()
                .unwrap_or_else(|| panic!("plan mcp ended before answering {method}"))
                .unwrap();
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("plan mcp wrote a line that is not JSON ({e}): {line}"));
            if v["id"] == id {
                return v;
            }
        }
    }

    /// Calls tool `name`: whether it is an error, its texts, its structured content.
    fn tool(&mut self, name: &str, arguments: Value) -> (bool, String, Value) {
        let reply = self.call("tools/call", json!({"name": name, "arguments": arguments}));
        let result = &reply["result"];
        assert!(result.is_object(), "tools/call {name}: {reply}");
        let texts: Vec<&str> = result["content"]
            .as_array()
            .map(|c| c.iter().filter_map(|b| b["text"].as_str()).collect())
            .unwrap_or_default();
        (
            result["isError"] == true,
            texts.join("\n"),
            result["structuredContent"].clone(),
        )
    }
}

impl Drop for Mcp {
    fn drop(&mut self) {
        // End of input ends the server.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

#[test]
fn mcp_tools_take_the_run_settings_and_a_token_budget_stops_a_run() {
    let sb = Sandbox::new();
    let fake = agent_server(DIAMOND);
    let mut mcp = Mcp::start(&sb, &model_flags(&fake));

    let listed = mcp.call("tools/list", json!({}));
    let tools = listed["result"]["tools"].as_array().unwrap();
    let schema = |name: &str| {
        tools.iter().find(|t| t["name"] == name).unwrap()["inputSchema"]["properties"].clone()
    };
    let run = schema("run");
    for name in [
        "goal",
        "strategy",
        "model",
        "max_steps",
        "max_replans",
        "max_depth",
        "reflection_rounds",
        "concurrency",
        "step_timeout_secs",
        "approve",
        "budget_tokens",
        "budget_usd",
        "wait_secs",
    ] {
        assert!(
            run[name]["description"].is_string(),
            "run lacks {name}: {run}"
        );
    }
    assert!(run.get("base_url").is_none(), "{run}");
    assert_eq!(run["concurrency"]["minimum"], 1);
    let plan = schema("plan");
    assert!(plan["budget_tokens"].is_object(), "{plan}");
    assert!(plan.get("concurrency").is_none(), "{plan}");

    // A run over its token budget stops, and its report says why.
    let (is_error, text, report) = mcp.tool(
        "run",
        json!({"goal": "Compare two things", "strategy": "dag", "budget_tokens": 5,
               "wait_secs": 120}),
    );
    let stopped = if is_error {
        text.to_lowercase()
    } else {
        assert_ne!(report["status"], "succeeded", "{text}");
        assert_ne!(report["status"], "running", "{text}");
        report["failure"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
    };
    assert!(
        stopped.contains("budget"),
        "nothing names the budget: {text}"
    );
    assert_eq!(
        fake.count(&step_prompt("c")),
        0,
        "no step ran past the budget"
    );

    // Nonsense is a tool error naming the value; the server goes on.
    let (is_error, text, _) = mcp.tool("run", json!({"goal": "g", "concurrency": 0}));
    assert!(is_error, "{text}");
    assert!(
        text.contains("invalid arguments for `run`: concurrency = 0: must be at least 1"),
        "{text}"
    );
    let (is_error, text, _) = mcp.tool("plan", json!({"goal": "g", "concurrency": 2}));
    assert!(is_error, "{text}");
    assert!(
        text.contains("`concurrency` is not an argument of `plan`"),
        "{text}"
    );

    // A good call still works.
    let (is_error, text, report) = mcp.tool(
        "run",
        json!({"goal": "Compare two things", "strategy": "dag", "concurrency": 1,
               "budget_tokens": 1000000, "wait_secs": 120}),
    );
    assert!(!is_error, "{text}");
    assert_eq!(report["status"], "succeeded", "{text}");
}
