//! The research agent on the shared corpus: search steps query the real local index, and
//! the report's sources are the files the searches returned, whatever the script says.

mod parts;
mod support;

use std::sync::Arc;

use plan_core::{Step, StepId, StepKind};
use plan_strategies::{ResearchAgent, ResearchError, ResearchInput};
use plan_tools::search::{LocalIndex, LocalIndexConfig};
use support::{Script, corpus, questions};

fn index() -> Arc<LocalIndex> {
    let index = LocalIndex::open(LocalIndexConfig::new(corpus())).unwrap();
    index.refresh().unwrap();
    Arc::new(index)
}

fn search_step(id: &str, query: &str) -> Step {
    Step::new(id, format!("Search the documents for {query}")).with_kind(StepKind::Search)
}

#[tokio::test]
async fn reports_cite_the_files_the_search_found() {
    let index = index();
    for q in questions().into_iter().filter(|q| q.second_query.is_none()) {
        // The script is the same for every question: which file is cited is decided by
        // the real search, not by the script.
        let model = Script::new([
            "The documents state the answer [find#1].",
            "The answer is given in the documents [find#1]. Also see [invented#7].",
        ]);
        let agent = ResearchAgent::new(index.clone(), Arc::new(model.clone()));
        let goal = format!("Answer: {}", q.query);
        let find = search_step("find", &q.query);
        let searched = agent
            .run_step(&ResearchInput::new(&goal, find, vec![]))
            .await
            .unwrap();
        assert_eq!(
            searched.cited[0].hit.source, q.files[0],
            "question {}",
            q.id
        );
        assert!(searched.text.contains(&format!("[find#1] {}:", q.files[0])));

        let analyze = Step::new("analyze", "Extract the facts that answer the goal")
            .with_kind(StepKind::Analyze)
            .depends_on(["find"]);
        let analysed = agent
            .run_step(&ResearchInput::new(
                &goal,
                analyze,
                vec![(StepId::new("find"), searched.text.clone())],
            ))
            .await
            .unwrap();
        let report_step = Step::new("report", "Write the answer with sources")
            .with_kind(StepKind::Synthesize)
            .depends_on(["analyze"]);
        let report = agent
            .run_step(&ResearchInput::new(
                &goal,
                report_step,
                vec![(StepId::new("analyze"), analysed.text.clone())],
            ))
            .await
            .unwrap();

        assert_eq!(report.cited.len(), 1, "question {}", q.id);
        assert_eq!(report.cited[0].hit.source, q.files[0], "question {}", q.id);
        assert_eq!(report.unknown_citations, vec!["invented#7"]);
        assert!(!report.text.contains("invented#7"), "{}", report.text);
        let sources = report.text.split("\n\nSources:\n").nth(1).unwrap();
        let line = report.cited[0].hit.line.unwrap();
        assert_eq!(
            sources.trim(),
            format!(
                "[find#1] {}:{line} — {}",
                q.files[0], report.cited[0].hit.title
            )
        );
        // The answer is in the cited file, at or after the cited line.
        let text = std::fs::read_to_string(corpus().join(&q.files[0])).unwrap();
        assert!(text.contains(&q.answer));

        // The synthesize prompt carried the cited source's snippet (from the search) and
        // the step description verbatim.
        let prompt = &model.request(1).messages[1].content;
        assert!(prompt.contains("Write the answer with sources"));
        assert!(prompt.contains(&searched.cited[0].hit.snippet), "{prompt}");
    }
}

#[tokio::test]
async fn two_hop_questions_cite_both_files() {
    let index = index();
    for q in questions().into_iter().filter(|q| q.second_query.is_some()) {
        let model = Script::new([
            "First fact [hop1#1]; second fact [hop2#1, hop2#2].",
            "Combining both: the answer follows [hop1#1] [hop2#1, hop2#2].",
        ]);
        let agent = ResearchAgent::new(index.clone(), Arc::new(model.clone()));
        let goal = q.query.clone();
        let s1 = agent
            .run_step(&ResearchInput::new(
                &goal,
                search_step("hop1", &q.query),
                vec![],
            ))
            .await
            .unwrap();
        let s2 = agent
            .run_step(&ResearchInput::new(
                &goal,
                search_step("hop2", q.second_query.as_deref().unwrap()),
                vec![],
            ))
            .await
            .unwrap();
        let analysis = agent
            .run_step(&ResearchInput::new(
                &goal,
                Step::new("a", "Connect the two findings").with_kind(StepKind::Analyze),
                vec![
                    (StepId::new("hop1"), s1.text),
                    (StepId::new("hop2"), s2.text),
                ],
            ))
            .await
            .unwrap();
        // Analysis prompts see both search outputs.
        let prompt = &model.request(0).messages[1].content;
        assert!(
            prompt.contains("## Output of step `hop1`")
                && prompt.contains("## Output of step `hop2`")
        );
        let report = agent
            .run_step(&ResearchInput::new(
                &goal,
                Step::new("r", "Write the report").with_kind(StepKind::Synthesize),
                vec![(StepId::new("a"), analysis.text)],
            ))
            .await
            .unwrap();
        let cited: Vec<&str> = report.cited.iter().map(|s| s.hit.source.as_str()).collect();
        assert_eq!(cited[0], q.files[0], "question {}", q.id);
        assert!(
            cited[1..].contains(&q.files[1].as_str()),
            "question {}: {cited:?}",
            q.id
        );
        assert!(report.unknown_citations.is_empty());
    }
}

#[tokio::test]
async fn no_results_and_uncited_reports_are_honest() {
    let index = index();
    let model = Script::new(["I could not find anything about it."]);
    let agent = ResearchAgent::new(index, Arc::new(model));
    let searched = agent
        .run_step(&ResearchInput::new(
            "g",
            search_step("s", "zzqx unknownium"),
            vec![],
        ))
        .await
        .unwrap();
    assert!(searched.text.contains("No results."), "{}", searched.text);
    let report = agent
        .run_step(&ResearchInput::new(
            "g",
            Step::new("r", "Write it up").with_kind(StepKind::Synthesize),
            vec![(StepId::new("s"), searched.text)],
        ))
        .await
        .unwrap();
    assert_eq!(report.text, "I could not find anything about it.");
    assert!(report.cited.is_empty());

    let err = agent
        .run_step(&ResearchInput::new(
            "g",
            Step::new("c", "code it").with_kind(StepKind::Code),
            vec![],
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, ResearchError::WrongKind { .. }));
    assert!(err.to_string().contains("search, analyze and synthesize"));
}

#[tokio::test]
async fn uncited_report_lists_the_sources_it_was_given() {
    let index = index();
    let model = Script::new(["Quillon was designed by Ines Varga."]);
    let agent = ResearchAgent::new(index, Arc::new(model));
    let searched = agent
        .run_step(&ResearchInput::new(
            "g",
            search_step("s", "Quillon designed"),
            vec![],
        ))
        .await
        .unwrap();
    let report = agent
        .run_step(&ResearchInput::new(
            "g",
            Step::new("r", "Write it up").with_kind(StepKind::Synthesize),
            vec![(StepId::new("s"), searched.text)],
        ))
        .await
        .unwrap();
    assert!(report.cited.is_empty());
    let consulted = report
        .text
        .split("Sources consulted (none cited):\n")
        .nth(1)
        .unwrap();
    assert!(
        consulted.starts_with("[s#1] software/quillon-history.md:"),
        "{consulted}"
    );
}

#[tokio::test]
async fn a_planned_run_routes_research_steps_and_cites_real_files() {
    use plan_core::EventKind;
    use plan_exec::events::EventLog;
    use plan_exec::llm::LlmStepExecutor;
    use plan_exec::router::Router;
    use plan_exec::runner::Runner;
    use plan_strategies::default_research_plan;

    let index = index();
    let model = Script::new([
        "Hedda Lindqvist discovered Vessa in 2031 [search#1].",
        "Vessa was discovered by Hedda Lindqvist [search#1].",
    ]);
    let agent = ResearchAgent::new(index, Arc::new(model.clone()));
    let router = agent.routes(Router::default().with_default(LlmStepExecutor::new(model.clone())));
    let log = Arc::new(EventLog::new());
    let plan = default_research_plan("Who discovered the planet Vessa?");
    let report = Runner::parallel(router)
        .with_event_sink(log.clone())
        .run(plan)
        .await
        .unwrap();
    assert!(
        report
            .steps
            .iter()
            .all(|s| s.status == plan_core::StepStatus::Completed)
    );
    let answer = report
        .steps
        .iter()
        .find(|s| s.id.as_str() == "report")
        .unwrap();
    let answer = answer.output.as_deref().unwrap();
    assert!(
        answer.contains("\n\nSources:\n[search#1] astronomy/vessa.md:"),
        "{answer}"
    );
    let kinds = log.kinds();
    assert!(kinds.iter().any(|k| matches!(k,
        EventKind::ToolCall { tool, ok: true, .. } if tool == "search:local")));
    let purposes: Vec<String> = kinds
        .iter()
        .filter_map(|k| match k {
            EventKind::LlmCall { purpose, .. } => Some(purpose.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(purposes, vec!["analyze", "synthesize"]);
    assert_eq!(agent.ledger().sources()[0].hit.source, "astronomy/vessa.md");
}

#[tokio::test]
async fn steps_naming_research_agents_run_as_their_kind() {
    use plan_exec::context::StepContext;
    use plan_exec::executor::StepExecutor;
    use plan_exec::router::Router;
    let index = index();
    let agent = ResearchAgent::new(index, Arc::new(Script::new(Vec::<String>::new())));
    let router = agent.routes(Router::default());
    let step = Step::new("look", "Quarry package manager manifest file").with_agent("researcher");
    let out = router.execute(&StepContext::new("g", step)).await.unwrap();
    assert!(
        out.contains("[look#1] software/quillon-package-manager.md:"),
        "{out}"
    );
}

async fn research_through_the_agent(
    source: plan_strategies::AnswerSource,
) -> (plan_strategies::RunReport, Script) {
    use plan_exec::llm::LlmStepExecutor;
    use plan_exec::router::Router;
    use plan_strategies::{Agent, default_research_plan};

    let model = Script::new([
        "Hedda Lindqvist discovered Vessa in 2031 [search#1].",
        "Vessa was discovered by Hedda Lindqvist [search#1].",
        "Hedda Lindqvist discovered it.",
    ]);
    let research = ResearchAgent::new(index(), Arc::new(model.clone()));
    let router =
        research.routes(Router::default().with_default(LlmStepExecutor::new(model.clone())));
    let agent = Agent::builder()
        .provider(model.clone())
        .executor(router)
        .answer_source(source)
        .build()
        .unwrap();
    let report = agent
        .execute(default_research_plan("Who discovered the planet Vessa?"))
        .await
        .unwrap();
    (report, model)
}

#[tokio::test]
async fn the_agent_can_answer_with_the_synthesize_step_and_keep_its_sources() {
    use plan_strategies::AnswerSource;

    let (report, _) = research_through_the_agent(AnswerSource::SynthesizeStep).await;
    assert!(report.is_success(), "{report:?}");
    let answer = report.answer.as_deref().unwrap();
    assert!(
        answer.starts_with("Vessa was discovered by Hedda Lindqvist [search#1]."),
        "{answer}"
    );
    assert!(
        answer.contains("\n\nSources:\n[search#1] astronomy/vessa.md:"),
        "{answer}"
    );
    assert_eq!(report.usage.llm_calls, 2, "no separate synthesis call");

    // The default writes the answer with a synthesis call, which may drop the sources.
    let (report, _) = research_through_the_agent(AnswerSource::SynthesisCall).await;
    assert_eq!(
        report.answer.as_deref(),
        Some("Hedda Lindqvist discovered it.")
    );
    assert_eq!(report.usage.llm_calls, 3);
}

/// An agent over the corpus whose strategy is grounded in a retrieval for `question`.
async fn grounded_agent(
    question: &str,
    strategy: plan_strategies::StrategyKind,
    model: &Script,
) -> (plan_strategies::Agent, plan_strategies::Retrieval) {
    use plan_exec::llm::LlmStepExecutor;
    use plan_exec::router::Router;
    use plan_strategies::{Agent, Grounded, GroundingConfig};

    let research = ResearchAgent::new(index(), Arc::new(model.clone()));
    let retrieval = research
        .retrieve(question, &GroundingConfig::default())
        .await
        .unwrap();
    let router = research
        .routes_all_steps(Router::default().with_default(LlmStepExecutor::new(model.clone())));
    let grounding = (research, retrieval.clone());
    let agent = Agent::builder()
        .provider(model.clone())
        .executor(router)
        .strategy(strategy)
        .planner_guidance(retrieval.brief())
        .wrap_strategy(move |inner| Arc::new(Grounded::new(inner, grounding.0, grounding.1)))
        .build()
        .unwrap();
    (agent, retrieval)
}

#[tokio::test]
async fn a_covered_question_is_answered_directly_from_the_passages_with_its_sources() {
    use plan_strategies::StrategyKind;

    let question = "What payload can the Heron H4 warehouse robot carry?";
    let model = Script::new(["It carries 350 kg [doc#1], see also [doc#9] and [made#1]."]);
    let (agent, retrieval) = grounded_agent(question, StrategyKind::Auto, &model).await;
    assert!(retrieval.covers_question(), "{retrieval:?}");
    let report = agent.run(question).await.unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.extras["route"], "direct");
    assert_eq!(report.usage.llm_calls, 1, "one call: no plan, no synthesis");
    // The passages reached the model, with their paths.
    let prompt = &model.request(0).messages[1].content;
    assert!(
        prompt.contains("[doc#1] companies/tessaly-heron.md:"),
        "{prompt}"
    );
    let answer = report.answer.as_deref().unwrap();
    // Citations of passages no search returned are removed; the sources are appended.
    assert!(
        answer.starts_with("It carries 350 kg [doc#1], see also and."),
        "{answer}"
    );
    assert!(
        answer.ends_with(
            "\n\nSources:\n[doc#1] companies/tessaly-heron.md:1 — The Heron Warehouse Robot\n"
        ),
        "{answer}"
    );
    assert_eq!(
        report.extras["sources"],
        serde_json::json!(["companies/tessaly-heron.md"])
    );
    assert_eq!(report.extras["grounding"]["abstained"], false);
}

#[tokio::test]
async fn a_question_the_documents_do_not_answer_is_declined_without_a_model_call() {
    use plan_strategies::StrategyKind;

    for strategy in [StrategyKind::Auto, StrategyKind::Dag] {
        let question = "Who won the 1998 football World Cup?";
        let model = Script::new(Vec::<String>::new());
        let (agent, retrieval) = grounded_agent(question, strategy, &model).await;
        assert!(!retrieval.is_answerable());
        assert_eq!(retrieval.brief(), "");
        let report = agent.run(question).await.unwrap();
        assert!(report.is_success(), "{report:?}");
        let answer = report.answer.as_deref().unwrap();
        assert!(
            answer.starts_with("The documents do not contain an answer to this question"),
            "{answer}"
        );
        assert_eq!(report.usage.llm_calls, 0, "{strategy:?}");
        assert!(model.requests.lock().unwrap().is_empty());
        assert_eq!(report.extras["sources"], serde_json::json!([]));
        assert_eq!(report.extras["grounding"]["abstained"], true);
        assert!(report.steps.is_empty());
    }
}

#[tokio::test]
async fn a_planned_grounded_run_keeps_the_synthesize_steps_words_and_cites_what_it_found() {
    use plan_strategies::StrategyKind;

    let question = "Which moon was discovered by the astronomer who discovered Vessa?";
    let plan = serde_json::json!({"goal": question, "steps": [
        {"id": "moons", "description": "Search for moons discovered by Hedda Lindqvist", "kind": "search"},
        {"id": "report", "description": "Answer the question", "kind": "synthesize", "dependencies": ["moons"]},
    ]});
    let model = Script::new([
        plan.to_string(),
        "Lindqvist found Vessa [doc#1] and the moon Pell [moons#1].".to_owned(),
    ]);
    let (agent, retrieval) = grounded_agent(question, StrategyKind::Dag, &model).await;
    assert!(retrieval.is_answerable());
    let report = agent.run(question).await.unwrap();
    assert!(report.is_success(), "{report:?}");
    // The planner was given the passages.
    let planner_prompt: String = model
        .request(0)
        .messages
        .iter()
        .map(|m| m.content.clone())
        .collect();
    assert!(
        planner_prompt.contains("[doc#1] astronomy/vessa.md:"),
        "{planner_prompt}"
    );
    // The synthesize step saw the passages too, and its words are the answer's.
    let step_prompt = &model.request(1).messages[1].content;
    assert!(
        step_prompt.contains("Passages retrieved for the question"),
        "{step_prompt}"
    );
    let answer = report.answer.as_deref().unwrap();
    assert!(
        answer.starts_with(
            "Lindqvist found Vessa [doc#1] and the moon Pell [moons#1].\n\nSources:\n"
        ),
        "{answer}"
    );
    assert_eq!(
        report.usage.llm_calls, 2,
        "plan and synthesize: no extra answer call"
    );
    let sources: Vec<String> = report.extra("sources").unwrap();
    assert!(
        sources.contains(&"astronomy/vessa.md".to_owned()),
        "{sources:?}"
    );
    assert!(
        sources.contains(&"astronomy/orrin-moons.md".to_owned()),
        "{sources:?}"
    );
    assert!(
        answer.contains("[moons#1] astronomy/orrin-moons.md:"),
        "{answer}"
    );
}
