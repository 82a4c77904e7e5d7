//! Settings of the strategies and of how a run's answer is written.

/// Whether a streamed plan is fed to the runner while it is being written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanningMode {
    /// Stream the plan into the runner when the planner and provider can (DAG strategy):
    /// the first steps start before the plan is complete.
    #[default]
    Streamed,
    /// Always make the whole plan first, then run it.
    PlanThenRun,
}

/// Where a successful run's answer comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnswerSource {
    /// A final model call writes the answer from the goal and every step's output.
    #[default]
    SynthesisCall,
    /// The answer is the output of the plan's final `synthesize` step, kept as it is (a
    /// research answer keeps its citations and `Sources:` section). When the plan has no
    /// succeeded `synthesize` step, a synthesis call writes the answer.
    SynthesizeStep,
}

/// Settings of the strategies; the defaults follow the design.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StrategyOptions {
    /// Hierarchical: levels of sub-goals under the goal (default 3).
    pub max_depth: usize,
    /// Hierarchical: the most sub-goals a goal is split into (default 4).
    pub max_subgoals: usize,
    /// Hierarchical: the most leaf steps in the tree (default 24).
    pub max_leaves: usize,
    /// Adaptive: the most replans before the run fails (default 3).
    pub max_replans: u32,
    /// Reflective: the most critique rounds before running (default 2).
    pub reflection_rounds: u32,
    /// DAG: streamed or plan-then-run.
    pub planning: PlanningMode,
    /// The most characters of each step output the synthesis sees (default 2000).
    pub synthesis_output_cap: usize,
    /// The most steps the synthesis reads (default 24). A larger plan is summarised from
    /// its final steps (those no other step depends on), and the prompt says how many
    /// steps were left out.
    pub synthesis_step_cap: usize,
    /// Whether to write an answer with a final model call (default true).
    pub synthesize: bool,
    /// Where the answer comes from (default: a synthesis call).
    pub answer: AnswerSource,
    /// Whether a replan waits for approval before it runs (default false): the revised
    /// plan is recorded and the run stops `awaiting_approval`, to continue with
    /// [`Agent::approve`](crate::Agent::approve) or end with
    /// [`Agent::reject`](crate::Agent::reject). Needs a run store.
    pub approve_replans: bool,
}

impl Default for StrategyOptions {
    fn default() -> Self {
        Self {
            max_depth: 3,
            max_subgoals: 4,
            max_leaves: 24,
            max_replans: 3,
            reflection_rounds: 2,
            planning: PlanningMode::Streamed,
            synthesis_output_cap: 2000,
            synthesis_step_cap: 24,
            synthesize: true,
            answer: AnswerSource::SynthesisCall,
            approve_replans: false,
        }
    }
}
