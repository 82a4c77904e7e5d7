//! Agent profiles: TOML loading, routing, plan checks and the planner's brief.

use plan_core::{Plan, Step, StepBody, StepKind};
use plan_strategies::{AgentCatalogue, AgentError, AgentProfile};

const PROFILES: &str = r#"
[[agent]]
name = "researcher"
description = "Finds facts in the document folder"
system_prompt = "You search documents and quote them exactly."
tools = ["search_docs", "read_file"]
kinds = ["search"]

[[agent]]
name = "analyst"
description = "Compares and checks findings"
model = "openai:gpt-4o-mini"
kinds = ["analyze", "verify"]

[[agent]]
name = "writer"
description = "Writes the final report"
kinds = ["synthesize", "analyze"]
"#;

fn catalogue() -> AgentCatalogue {
    AgentCatalogue::from_toml_str(PROFILES).unwrap()
}

#[test]
fn profiles_load_from_a_toml_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agents.toml");
    std::fs::write(&path, PROFILES).unwrap();
    let loaded = AgentCatalogue::load(&path).unwrap();
    assert_eq!(loaded, catalogue());
    assert_eq!(loaded.names(), vec!["researcher", "analyst", "writer"]);
    let analyst = loaded.get("analyst").unwrap();
    assert_eq!(analyst.model.as_deref(), Some("openai:gpt-4o-mini"));
    assert_eq!(analyst.kinds, vec![StepKind::Analyze, StepKind::Verify]);
    assert!(analyst.tools.is_empty());
    assert_eq!(
        loaded.get("researcher").unwrap().system_prompt,
        "You search documents and quote them exactly."
    );
}

#[test]
fn bad_profile_files_say_what_and_where() {
    let err = AgentCatalogue::load("/nonexistent/agents.toml").unwrap_err();
    assert!(matches!(err, AgentError::Read { .. }));
    assert!(
        err.to_string().contains("/nonexistent/agents.toml"),
        "{err}"
    );

    let err = AgentCatalogue::from_toml_str("[[agent]]\nname = \"a\"\nkinds = [\"dance\"]\n")
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("dance") && text.contains("line 3"), "{text}");

    let err =
        AgentCatalogue::from_toml_str("[[agent]]\nname = \"a\"\ncolour = \"red\"\n").unwrap_err();
    assert!(err.to_string().contains("colour"), "{err}");

    let err = AgentCatalogue::from_toml_str("[[agent]]\nname = \"a\"\n[[agent]]\nname = \"a\"\n")
        .unwrap_err();
    assert!(err.to_string().contains("same name"), "{err}");

    let err = AgentCatalogue::new()
        .with(AgentProfile::new("two words", "x"))
        .unwrap_err();
    assert!(matches!(err, AgentError::InvalidProfile { .. }), "{err:?}");
}

#[test]
fn steps_route_by_agent_then_by_kind() {
    let c = catalogue();
    let named = Step::new("a", "x")
        .with_agent("writer")
        .with_kind(StepKind::Search);
    assert_eq!(
        c.route(&named).unwrap().name,
        "writer",
        "the agent field wins"
    );
    let by_kind = Step::new("b", "x").with_kind(StepKind::Analyze);
    assert_eq!(
        c.route(&by_kind).unwrap().name,
        "analyst",
        "the first profile for the kind"
    );
    let verify = Step::new("c", "x").with_kind(StepKind::Verify);
    assert_eq!(c.route(&verify).unwrap().name, "analyst");
    assert!(
        c.route(&Step::new("d", "x")).is_none(),
        "actions go to the default executor"
    );
    assert!(c.route(&Step::new("e", "x").with_agent("ghost")).is_none());
}

#[test]
fn plans_naming_unknown_agents_are_rejected_with_every_offender() {
    let c = catalogue();
    let plan = Plan::new(
        "g",
        vec![
            Step::new("a", "x").with_agent("researcher"),
            Step::new("b", "x").with_agent("poet"),
            Step::new("c", "x").with_fallback({
                let mut body = StepBody::new("y");
                body.agent = Some("ghost".into());
                body
            }),
        ],
    );
    let err = c.check_plan(&plan).unwrap_err();
    match &err {
        AgentError::UnknownAgents { unknown, .. } => assert_eq!(
            unknown,
            &vec![
                ("b".to_owned(), "poet".to_owned()),
                ("c".to_owned(), "ghost".to_owned())
            ]
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "the plan names unknown agents: step `b` uses `poet`, step `c` uses `ghost`; \
         known agents: researcher, analyst, writer"
    );
    let ok = Plan::new(
        "g",
        vec![
            Step::new("a", "x").with_agent("writer"),
            Step::new("b", "y"),
        ],
    );
    c.check_plan(&ok).unwrap();

    let none = AgentCatalogue::new().check_plan(&plan).unwrap_err();
    assert!(
        none.to_string()
            .contains("no agent profiles are configured"),
        "{none}"
    );
}

#[test]
fn tools_named_by_profiles_must_exist() {
    let c = catalogue();
    c.check_tools(&["search_docs", "read_file", "list_files"])
        .unwrap();
    let err = c.check_tools(&["read_file"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "agent `researcher` uses unknown tools: search_docs; available tools: read_file"
    );
}

#[test]
fn planner_brief_lists_agents_and_purposes() {
    insta::assert_snapshot!(catalogue().planner_brief());
    assert_eq!(AgentCatalogue::new().planner_brief(), "");
}

mod team {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use plan_core::{EventKind, Plan, Step, StepKind};
    use plan_exec::events::EventLog;
    use plan_exec::router::Router;
    use plan_exec::runner::Runner;
    use plan_llm::{Capabilities, LlmError, Provider, Request, Response, ToolCall, Usage};
    use plan_strategies::{AgentCatalogue, AgentError, AgentTeam};
    use plan_tools::{Tool, ToolContext, ToolError, ToolOutput, ToolSet};
    use schemars::JsonSchema;
    use serde::Deserialize;

    /// Replies in order, records requests; offers native tools.
    #[derive(Clone)]
    struct Model {
        name: String,
        replies: Arc<Mutex<Vec<Response>>>,
        requests: Arc<Mutex<Vec<Request>>>,
    }

    impl Model {
        fn new(name: &str, mut replies: Vec<Response>) -> Self {
            replies.reverse();
            Self {
                name: name.to_owned(),
                replies: Arc::new(Mutex::new(replies)),
                requests: Arc::default(),
            }
        }
        fn systems(&self) -> Vec<String> {
            self.requests
                .lock()
                .unwrap()
                .iter()
                .map(|r| r.messages[0].content.clone())
                .collect()
        }
    }

    #[async_trait]
    impl Provider for Model {
        fn name(&self) -> &str {
            &self.name
        }
        fn capabilities(&self) -> Capabilities {
            let mut c = Capabilities::default();
            c.tools = true;
            c
        }
        async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
            self.requests.lock().unwrap().push(request.clone());
            self.replies
                .lock()
                .unwrap()
                .pop()
                .ok_or_else(|| LlmError::Config(format!("{} ran out of replies", self.name)))
        }
    }

    fn text(t: &str) -> Response {
        Response::text(t, Usage::new(1, 1))
    }

    /// Arguments of `lookup`.
    #[derive(Deserialize, JsonSchema)]
    struct LookupArgs {
        /// The term.
        term: String,
    }

    struct Lookup;

    impl Tool for Lookup {
        type Args = LookupArgs;
        fn name(&self) -> &str {
            "lookup"
        }
        fn description(&self) -> &str {
            "Looks a term up"
        }
        async fn call(&self, args: LookupArgs, _: &ToolContext) -> Result<ToolOutput, ToolError> {
            Ok(ToolOutput::Text(format!("{} means 42", args.term)))
        }
    }

    const PROFILES: &str = r#"
        [[agent]]
        name = "researcher"
        description = "Looks things up"
        system_prompt = "You are the researcher."
        tools = ["lookup"]
        kinds = ["search"]

        [[agent]]
        name = "writer"
        description = "Writes"
        system_prompt = "You are the writer."
        model = "fake:writer"
    "#;

    #[tokio::test]
    async fn steps_run_on_their_agents_models_tools_and_prompts() {
        let default = Model::new(
            "default",
            vec![
                {
                    let mut r = text("");
                    r.tool_calls = vec![ToolCall::new(
                        "c",
                        "lookup",
                        serde_json::json!({"term": "zorp"}),
                    )];
                    r
                },
                text("zorp means 42"),
                text("general work done"),
            ],
        );
        let writer = Model::new("writer", vec![text("The report: zorp means 42.")]);
        let writer_for_resolver = writer.clone();
        let catalogue = AgentCatalogue::from_toml_str(PROFILES).unwrap();
        let team = AgentTeam::new(catalogue.clone(), Arc::new(default.clone()))
            .with_tools(ToolSet::new().with(Lookup))
            .with_model_resolver(move |spec: &str| -> Result<Arc<dyn Provider>, LlmError> {
                assert_eq!(spec, "fake:writer");
                Ok(Arc::new(writer_for_resolver.clone()))
            });
        let router = team
            .routes(
                Router::default()
                    .with_default(plan_exec::llm::LlmStepExecutor::new(default.clone())),
            )
            .unwrap();
        let plan = Plan::new(
            "Explain zorp",
            vec![
                Step::new("find", "Find what zorp means").with_kind(StepKind::Search),
                Step::new("misc", "Do general work").depends_on(["find"]),
                Step::new("write", "Write it up")
                    .with_agent("writer")
                    .depends_on(["misc"]),
            ],
        );
        catalogue.check_plan(&plan).unwrap();
        let log = Arc::new(EventLog::new());
        let report = Runner::sequential(router)
            .with_event_sink(log.clone())
            .run(plan)
            .await
            .unwrap();
        assert!(
            report
                .steps
                .iter()
                .all(|s| s.status == plan_core::StepStatus::Completed),
            "{report:?}"
        );
        let out = |id: &str| {
            report
                .steps
                .iter()
                .find(|s| s.id.as_str() == id)
                .unwrap()
                .output
                .clone()
                .unwrap()
        };
        assert_eq!(out("find"), "zorp means 42");
        assert_eq!(out("write"), "The report: zorp means 42.");
        // The search step went to the researcher (by kind) with its prompt and tool, the
        // plain step to the default executor, the named step to the writer's own model.
        let default_systems = default.systems();
        assert_eq!(default_systems[0], "You are the researcher.");
        assert!(
            default_systems[2].starts_with("Do only the step given"),
            "{default_systems:?}"
        );
        assert_eq!(writer.systems(), vec!["You are the writer."]);
        let tools_offered = default.requests.lock().unwrap()[0].tools.len();
        assert_eq!(tools_offered, 1);
        assert!(log.kinds().iter().any(|k| matches!(k,
            EventKind::ToolCall { tool, ok: true, step, .. } if tool == "lookup" && step.as_str() == "find")));
    }

    #[test]
    fn teams_report_missing_tools_and_models() {
        let catalogue = AgentCatalogue::from_toml_str(PROFILES).unwrap();
        let default = Arc::new(Model::new("d", vec![]));
        let err = AgentTeam::new(catalogue.clone(), default.clone())
            .routes(Router::default())
            .unwrap_err();
        assert!(matches!(err, AgentError::UnknownTools { .. }), "{err:?}");
        let err = AgentTeam::new(catalogue, default)
            .with_tools(ToolSet::new().with(Lookup))
            .routes(Router::default())
            .unwrap_err();
        assert!(err.to_string().contains("no model resolver"), "{err}");
    }

    fn tool_call_reply(term: &str) -> Response {
        let mut r = text("");
        r.tool_calls = vec![ToolCall::new(
            "c",
            "lookup",
            serde_json::json!({"term": term}),
        )];
        r
    }

    /// `AgentBuilder::tools`: plain steps of an agent run go through the tool loop.
    #[tokio::test]
    async fn the_builder_runs_plain_steps_through_the_tool_loop_when_tools_are_given() {
        let model = Model::new(
            "default",
            vec![
                tool_call_reply("zorp"),
                text("zorp means 42, says the tool"),
                text("the answer"),
            ],
        );
        let agent = plan_strategies::Agent::builder()
            .provider(model.clone())
            .without_provider_retry()
            .tools(ToolSet::new().with(Lookup))
            .build()
            .unwrap();
        let plan = Plan::new(
            "Explain zorp",
            vec![Step::new("find", "Find what zorp means")],
        );
        let report = agent.execute(plan).await.unwrap();
        assert_eq!(report.status, plan_core::RunStatus::Succeeded, "{report:?}");
        assert_eq!(
            report.steps[0].output.as_deref(),
            Some("zorp means 42, says the tool")
        );
        let requests = model.requests.lock().unwrap().clone();
        assert_eq!(requests[0].tools.len(), 1, "the tool is offered");
        let tool_result = requests[1]
            .messages
            .iter()
            .find(|m| m.role == plan_llm::Role::Tool)
            .map(|m| m.content.clone());
        assert_eq!(tool_result.as_deref(), Some("zorp means 42"));

        // Without tools, the same step is one model call with none offered.
        let plain = Model::new("plain", vec![text("just text"), text("the answer")]);
        let agent = plan_strategies::Agent::builder()
            .provider(plain.clone())
            .without_provider_retry()
            .tools(ToolSet::new())
            .build()
            .unwrap();
        let plan = Plan::new(
            "Explain zorp",
            vec![Step::new("find", "Find what zorp means")],
        );
        agent.execute(plan).await.unwrap();
        assert!(plain.requests.lock().unwrap()[0].tools.is_empty());
    }

    /// `AgentBuilder::agent_profiles`: profiles route their steps, with their prompts,
    /// models and tools.
    #[tokio::test]
    async fn the_builder_routes_steps_to_agent_profiles() {
        let default = Model::new(
            "default",
            vec![
                tool_call_reply("zorp"),
                text("zorp means 42"),
                text("the answer"),
            ],
        );
        let writer = Model::new("writer", vec![text("The report.")]);
        let for_resolver = writer.clone();
        let agent = plan_strategies::Agent::builder()
            .provider(default.clone())
            .without_provider_retry()
            .tools(ToolSet::new().with(Lookup))
            .agent_profiles(AgentCatalogue::from_toml_str(PROFILES).unwrap())
            .model_resolver(move |_: &str| -> Result<Arc<dyn Provider>, LlmError> {
                Ok(Arc::new(for_resolver.clone()))
            })
            .build()
            .unwrap();
        let plan = Plan::new(
            "Explain zorp",
            vec![
                Step::new("find", "Find what zorp means").with_kind(StepKind::Search),
                Step::new("write", "Write it up")
                    .with_agent("writer")
                    .depends_on(["find"]),
            ],
        );
        let report = agent.execute(plan).await.unwrap();
        assert_eq!(report.status, plan_core::RunStatus::Succeeded, "{report:?}");
        assert_eq!(default.systems()[0], "You are the researcher.");
        assert_eq!(writer.systems(), vec!["You are the writer."]);

        // A profile naming a tool that is not there fails the build.
        let err = plan_strategies::Agent::builder()
            .provider(Model::new("d", vec![]))
            .agent_profiles(AgentCatalogue::from_toml_str(PROFILES).unwrap())
            .build()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("agent `researcher` uses unknown tools: lookup"),
            "{err}"
        );
    }
}
