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
    assert!(err.to_string().contains("/nonexistent/agents.toml"), "{err}");

    let err = AgentCatalogue::from_toml_str("[[agent]]\nname = \"a\"\nkinds = [\"dance\"]\n")
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("dance") && text.contains("line 3"), "{text}");

    let err = AgentCatalogue::from_toml_str("[[agent]]\nname = \"a\"\ncolour = \"red\"\n")
        .unwrap_err();
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
    let named = Step::new("a", "x").with_agent("writer").with_kind(StepKind::Search);
    assert_eq!(c.route(&named).unwrap().name, "writer", "the agent field wins");
    let by_kind = Step::new("b", "x").with_kind(StepKind::Analyze);
    assert_eq!(c.route(&by_kind).unwrap().name, "analyst", "the first profile for the kind");
    let verify = Step::new("c", "x").with_kind(StepKind::Verify);
    assert_eq!(c.route(&verify).unwrap().name, "analyst");
    assert!(c.route(&Step::new("d", "x")).is_none(), "actions go to the default executor");
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
            &vec![("b".to_owned(), "poet".to_owned()), ("c".to_owned(), "ghost".to_owned())]
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "the plan names unknown agents: step `b` uses `poet`, step `c` uses `ghost`; \
         known agents: researcher, analyst, writer"
    );
    let ok = Plan::new("g", vec![Step::new("a", "x").with_agent("writer"), Step::new("b", "y")]);
    c.check_plan(&ok).unwrap();

    let none = AgentCatalogue::new().check_plan(&plan).unwrap_err();
    assert!(none.to_string().contains("no agent profiles are configured"), "{none}");
}

#[test]
fn tools_named_by_profiles_must_exist() {
    let c = catalogue();
    c.check_tools(&["search_docs", "read_file", "list_files"]).unwrap();
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
