//! Grounded research over a folder of documents: the question is searched first (the
//! passages found are cited as `doc#n`), search steps query the local full-text index,
//! an analyze step extracts the facts, a synthesize step writes the answer, and the
//! sources listed are the files (with lines) the searches really returned. A question
//! no passage is relevant to is declined without a model call.
//!
//! The model is scripted so the example runs offline: it cites the tag of the first
//! search hit, and which file that is comes from the real search.
//!
//!     cargo run -p plan-examples --example research_local_docs -- [DIR] ["question"]

use std::path::PathBuf;
use std::sync::Arc;

use plan_llm::{Purpose, Reply, ScriptedModel};
use plan_strategies::{Agent, ResearchConfig, ResearchSetup, StrategyKind, default_research_plan};
use plan_tools::search::LocalIndexConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/research-corpus")
    });
    let question = args
        .next()
        .unwrap_or_else(|| "Who designed the Quillon programming language?".to_owned());

    let model = ScriptedModel::new()
        .when_purpose(
            Purpose::Analyze,
            Reply::text("The top search result answers the question [search#1]."),
        )
        .when_purpose(
            Purpose::Synthesize,
            Reply::text("The documents answer this directly [search#1]."),
        );
    let provider: Arc<dyn plan_llm::Provider> = Arc::new(model);

    let cache = std::env::temp_dir().join("plan-example-index");
    let setup = ResearchSetup::open(
        LocalIndexConfig::new(&dir).with_cache_dir(&cache),
        provider.clone(),
        ResearchConfig::default(),
    )
    .await?;
    let stats = setup.refresh_stats();
    println!(
        "index of {}: {} added, {} updated, {} removed, {} unchanged",
        dir.display(),
        stats.added,
        stats.updated,
        stats.removed,
        stats.unchanged
    );

    // Retrieval before planning: the passages, and whether any is relevant enough.
    let research = setup.ground(&question).await?;
    let retrieval = research.retrieval();
    println!(
        "retrieved {} passages for \"{}\" (best coverage {:?}); grounded in {}",
        retrieval.passages.len(),
        retrieval.query,
        retrieval.best_coverage,
        retrieval.grounds.len()
    );

    // The research routes (every step goes to a research agent), the planner told about
    // the documents and the passages, and the strategy grounded in the retrieval.
    let agent = research
        .wire(
            Agent::builder()
                .provider(provider)
                .strategy(StrategyKind::Dag),
            true,
        )
        .build()?;
    // The research plan (search, analyze, synthesize) runs grounded in the retrieval.
    let report = agent.execute(default_research_plan(&question)).await?;
    for step in &report.steps {
        println!(
            "\n== {} ({})\n{}",
            step.id,
            step.status.as_str(),
            step.output.as_deref().unwrap_or("")
        );
    }
    println!("\n== answer\n{}", report.answer.as_deref().unwrap_or(""));
    println!("\nsources: {}", report.extras["sources"]);
    Ok(())
}
