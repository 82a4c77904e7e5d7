//! The MCP client against real servers from npm (pinned; see testdata/mcp).

use std::time::Duration;

use plan_mcp::{McpError, McpServerConfig, McpTools, testing};
use plan_tools::{ToolContext, ToolError, ToolSet};
use serde_json::json;

/// The everything server, connected with the default (generous) start-up timeout and
/// `timeout` for each call.
async fn everything(timeout: Duration) -> (McpTools, ToolSet) {
    let config = McpServerConfig::parse(&testing::everything_spec())
        .unwrap()
        .with_timeout(timeout);
    assert_eq!(config.name, "mcp-server-everything");
    let mcp = McpTools::connect(vec![config], &["read_file"])
        .await
        .unwrap();
    let mut set = ToolSet::new();
    mcp.add_to(&mut set);
    (mcp, set)
}

fn ctx() -> ToolContext {
    ToolContext::default()
}

#[tokio::test(flavor = "multi_thread")]
async fn everything_server_tools_are_listed_and_called() {
    let (mcp, tools) = everything(Duration::from_secs(30)).await;
    let names = tools.names();
    for expected in [
        "echo",
        "get-sum",
        "get-structured-content",
        "gzip-file-as-resource",
    ] {
        assert!(names.contains(&expected.to_owned()), "{names:?}");
    }
    let echo = tools
        .specs()
        .into_iter()
        .find(|s| s.name == "echo")
        .unwrap();
    assert_eq!(echo.description, "Echoes back the input string");
    assert!(
        echo.parameters.get("$schema").is_none(),
        "{}",
        echo.parameters
    );
    assert_eq!(echo.parameters["required"], json!(["message"]));

    let out = tools
        .call("echo", json!({"message": "hello mcp"}), &ctx())
        .await
        .unwrap();
    assert_eq!(out.to_text(), "Echo: hello mcp");

    let sum = tools
        .call("get-sum", json!({"a": 2, "b": 3.5}), &ctx())
        .await
        .unwrap();
    assert!(sum.to_text().contains("5.5"), "{}", sum.to_text());

    // Structured content reaches the model.
    let weather = tools
        .call(
            "get-structured-content",
            json!({"location": "Chicago"}),
            &ctx(),
        )
        .await
        .unwrap()
        .to_text();
    assert!(weather.contains("temperature"), "{weather}");

    // Embedded resources come back with their URI and text.
    let resource = tools
        .call(
            "get-resource-reference",
            json!({"resourceType": "Text", "resourceId": 2}),
            &ctx(),
        )
        .await
        .unwrap()
        .to_text();
    assert!(
        resource.contains("[resource demo://resource/dynamic/text/2]"),
        "{resource}"
    );
    mcp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn arguments_are_checked_against_the_server_schema_before_the_call() {
    let (mcp, tools) = everything(Duration::from_secs(30)).await;
    let err = tools
        .call("get-sum", json!({"a": "two"}), &ctx())
        .await
        .unwrap_err();
    match &err {
        ToolError::InvalidArguments { tool, message } => {
            assert_eq!(tool, "get-sum");
            assert!(
                message.contains("\"two\" is not of type \"number\""),
                "{message}"
            );
            assert!(
                message.contains("\"b\" is a required property"),
                "{message}"
            );
        }
        other => panic!("expected invalid arguments, got {other:?}"),
    }
    mcp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_error_names_the_server_and_the_tool() {
    let (mcp, tools) = everything(Duration::from_secs(30)).await;
    let err = tools
        .call(
            "gzip-file-as-resource",
            json!({"name": "x.gz", "data": "ftp://example.invalid/x"}),
            &ctx(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("MCP server `mcp-server-everything`, tool `gzip-file-as-resource`: the tool returned an error"),
        "{err}"
    );
    assert!(err.contains("Unsupported URL protocol"), "{err}");
    mcp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_call_times_out_with_the_server_and_tool_named() {
    let (mcp, tools) = everything(Duration::from_secs(2)).await;
    let started = std::time::Instant::now();
    let err = tools
        .call(
            "trigger-long-running-operation",
            json!({"duration": 30, "steps": 3}),
            &ctx(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        err.contains("is unavailable: MCP server `mcp-server-everything`, tool `trigger-long-running-operation`: no answer within 2s"),
        "{err}"
    );
    mcp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_server_gives_a_clear_error_and_shutdown_reaps_the_process_group() {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;

    let (mcp, tools) = everything(Duration::from_secs(30)).await;
    let pid = mcp.servers()[0].process_id().expect("a child process");
    let group = Pid::from_raw(pid as i32);
    assert!(killpg(group, None).is_ok(), "the server's group is alive");
    killpg(group, Signal::SIGKILL).unwrap();
    // Call once every process of the group has died (its pipes are closed), however long
    // that takes.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while group_runs(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the server outlived SIGKILL"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = tools
        .call("echo", json!({"message": "x"}), &ctx())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("MCP server `mcp-server-everything`, tool `echo`: the server stopped"),
        "{err}"
    );
    mcp.shutdown().await;
    assert!(mcp.servers()[0].process_id().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_and_drop_leave_no_process_behind() {
    use nix::sys::signal::killpg;
    use nix::unistd::Pid;

    let (mcp, _tools) = everything(Duration::from_secs(30)).await;
    let group = Pid::from_raw(mcp.servers()[0].process_id().unwrap() as i32);
    mcp.shutdown().await;
    gone(group).await;

    // Dropped without a shutdown (a run that ended on Ctrl-C): the group is killed too.
    let (mcp, tools) = everything(Duration::from_secs(30)).await;
    let group = Pid::from_raw(mcp.servers()[0].process_id().unwrap() as i32);
    drop(tools);
    drop(mcp);
    gone(group).await;

    async fn gone(group: Pid) {
        // A generous deadline: only a group that never goes fails, a slow one just waits.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if killpg(group, None).is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("process group {group} is still alive");
    }
}

/// Whether a process of group `pgid` still runs: one that is not a zombie (whose
/// descriptors are closed), from /proc.
fn group_runs(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces.
        let Some(close) = stat.rfind(')') else {
            return false;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_that_fail_to_start_are_named_with_what_they_said() {
    let missing = McpServerConfig::parse("plan-no-such-mcp-server --x").unwrap();
    let err = McpTools::connect(vec![missing], &[] as &[&str])
        .await
        .unwrap_err();
    assert!(matches!(err, McpError::Start { .. }));
    let text = err.to_string();
    assert!(
        text.contains("MCP server `plan-no-such-mcp-server` failed to start: cannot run")
            && text.contains("on PATH"),
        "{text}"
    );

    let dies = McpServerConfig::parse("sh -c 'echo no config file >&2; exit 2'")
        .unwrap()
        .with_name("dies");
    let text = McpTools::connect(vec![dies], &[] as &[&str])
        .await
        .unwrap_err()
        .to_string();
    assert!(text.contains("MCP server `dies` failed to start"), "{text}");
    assert!(text.contains("no config file"), "{text}");

    // Never speaks: the start-up timeout fires, and the message names the setting.
    let silent = McpServerConfig::parse("sleep 30")
        .unwrap()
        .with_start_timeout(Duration::from_secs(1));
    let text = McpTools::connect(vec![silent], &[] as &[&str])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("did not complete the MCP handshake within 1s: raise `start_timeout_secs`"),
        "{text}"
    );

    let zero = McpServerConfig::parse("sleep 30")
        .unwrap()
        .with_start_timeout(Duration::ZERO);
    let err = McpTools::connect(vec![zero], &[] as &[&str])
        .await
        .unwrap_err();
    assert!(matches!(err, McpError::Spec { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("`start_timeout_secs` must be at least 1 second"),
        "{err}"
    );
}

/// The everything server behind a shell that first sleeps `delay_secs` (a server that is
/// slow to start, as `npx` is on a loaded machine or when it downloads the package).
fn slow_everything(delay_secs: u32) -> McpServerConfig {
    let line = format!("sleep {delay_secs}; exec {}", testing::everything_spec());
    McpServerConfig::command("sh", vec!["-c".to_owned(), line]).with_name("slow")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_start_is_bounded_by_the_start_timeout_not_the_call_timeout() {
    // Starts in more than 2s, far beyond its 1s call timeout: the start-up timeout
    // (60s by default) is the one that applies.
    let config = slow_everything(2).with_timeout(Duration::from_secs(1));
    assert_eq!(config.start_timeout, plan_mcp::DEFAULT_START_TIMEOUT);
    let mcp = McpTools::connect(vec![config], &[] as &[&str])
        .await
        .unwrap();
    let mut tools = ToolSet::new();
    mcp.add_to(&mut tools);
    assert!(tools.names().contains(&"echo".to_owned()));

    // Each call is still bounded by the 1s call timeout (the operation takes 30s).
    let err = tools
        .call(
            "trigger-long-running-operation",
            json!({"duration": 30, "steps": 3}),
            &ctx(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "MCP server `slow`, tool `trigger-long-running-operation`: no answer within 1s"
        ),
        "{err}"
    );
    mcp.shutdown().await;

    // A start-up timeout shorter than the start fails, naming the setting to raise.
    let config = slow_everything(2)
        .with_start_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(60));
    let text = McpTools::connect(vec![config], &[] as &[&str])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("MCP server `slow` failed to start")
            && text.contains(
                "did not complete the MCP handshake within 1s: raise `start_timeout_secs`"
            ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn clashing_names_are_namespaced_and_the_allow_list_filters() {
    let spec = testing::everything_spec();
    let a = McpServerConfig::parse(&spec)
        .unwrap()
        .with_name("alpha")
        .with_tools(["echo", "get-sum"]);
    let b = McpServerConfig::parse(&spec)
        .unwrap()
        .with_name("beta")
        .with_tools(["echo"]);
    let mcp = McpTools::connect(vec![a, b], &["get-sum"]).await.unwrap();
    let names: Vec<&str> = mcp.tools().iter().map(|t| t.name()).collect();
    assert_eq!(names, ["alpha__echo", "alpha__get-sum", "beta__echo"]);
    let mut set = ToolSet::new();
    mcp.add_to(&mut set);
    let out = set
        .call("beta__echo", json!({"message": "b"}), &ctx())
        .await
        .unwrap();
    assert_eq!(out.to_text(), "Echo: b");
    mcp.shutdown().await;

    let bad = McpServerConfig::parse(&spec)
        .unwrap()
        .with_tools(["no-such-tool"]);
    let text = McpTools::connect(vec![bad], &[] as &[&str])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("the allow-list names tools it does not have: `no-such-tool`"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn streamable_http_servers_work_too() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = testing::npx_spec("mcp-server-everything", &["streamableHttp"]);
    let words: Vec<String> = spec
        .split(' ')
        .map(|w| w.trim_matches('\'').to_owned())
        .collect();
    let mut child = tokio::process::Command::new(&words[0])
        .args(&words[1..])
        .env("PORT", port.to_string())
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/mcp");
    // npx may be slow to start on a loaded machine: wait for the port, generously.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut ready = false;
    while std::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the HTTP server did not listen on {port} within 60s");
    let config = McpServerConfig::parse(&url).unwrap();
    assert_eq!(config.name, "127_0_0_1_".to_owned() + &port.to_string());
    let mcp = McpTools::connect(vec![config], &[] as &[&str])
        .await
        .unwrap();
    let mut set = ToolSet::new();
    mcp.add_to(&mut set);
    let out = set
        .call("echo", json!({"message": "over http"}), &ctx())
        .await
        .unwrap();
    assert_eq!(out.to_text(), "Echo: over http");
    mcp.shutdown().await;
    let _ = child.kill().await;
}
