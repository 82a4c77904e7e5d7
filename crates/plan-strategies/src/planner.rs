//! The [`Planner`] trait and the LLM planner: prompt, schema-shaped reply, validation,
//! re-prompting with the exact problems, repair, and streamed planning.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use plan_core::{Limits, Plan, PlanGraph, RepairChange, RepairReport, Step, StepId};
use plan_llm::{
    CallRecord, Chunk, FinishReason, Message, Provider, Purpose, Request, ResponseFormat, Usage,
    UsageTotals,
};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::calls::CutOff;
use crate::error::StrategyError;
use crate::prompts::{bounded, plan_schema, plan_token_budget, render};
use crate::stream::StepStreamParser;

/// A specialised agent the planner may route steps to (`step.agent`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AgentInfo {
    /// The name steps use in `agent`.
    pub name: String,
    /// What the agent is for, shown to the planner.
    pub description: String,
}

impl AgentInfo {
    /// An agent description.
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
        }
    }
}

/// How the LLM planner plans.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PlannerConfig {
    /// The fewest steps the prompt asks for (default 3). Guidance only: a smaller plan is
    /// accepted, since some goals are small.
    pub min_steps: usize,
    /// The most steps a plan may have (default 30); a larger plan is re-prompted to merge
    /// steps, and planning fails if it stays too large: a plan is never cut.
    pub max_steps: usize,
    /// How often a bad reply is answered with its problems before repair (default 2).
    pub max_fix_attempts: u32,
    /// Agents steps may be routed to; a plan naming another agent is rejected.
    pub agents: Vec<AgentInfo>,
    /// Sampling temperature of planning calls (`None`: the provider's default).
    pub temperature: Option<f32>,
    /// Token cap of planning calls (`None`: enough for a plan of `max_steps` steps within
    /// the plan schema's bounds, about 440 tokens a step).
    pub max_tokens: Option<u32>,
    /// The most characters of a finished step's output shown when replanning (default 1500).
    pub output_cap: usize,
    /// Extra guidance for the planner (what the steps can do, how to shape the plan), put
    /// in its system prompt.
    pub guidance: Option<String>,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            min_steps: 3,
            max_steps: 30,
            max_fix_attempts: 2,
            agents: Vec::new(),
            temperature: None,
            max_tokens: None,
            output_cap: 1500,
            guidance: None,
        }
    }
}

impl PlannerConfig {
    /// Sets the step bounds.
    pub fn with_step_bounds(mut self, min_steps: usize, max_steps: usize) -> Self {
        self.min_steps = min_steps.min(max_steps);
        self.max_steps = max_steps.max(1);
        self
    }

    /// Sets how many times a bad reply is re-prompted.
    pub fn with_max_fix_attempts(mut self, n: u32) -> Self {
        self.max_fix_attempts = n;
        self
    }

    /// Sets extra guidance for the planner's system prompt.
    pub fn with_guidance(mut self, guidance: impl Into<String>) -> Self {
        self.guidance = Some(guidance.into());
        self
    }

    /// Sets the agents steps may be routed to.
    pub fn with_agents(mut self, agents: Vec<AgentInfo>) -> Self {
        self.agents = agents;
        self
    }

    /// Sets the temperature of planning calls.
    pub fn with_temperature(mut self, t: f32) -> Self {
        self.temperature = Some(t);
        self
    }

    /// Sets the token cap of planning calls (by default it follows `max_steps`).
    pub fn with_max_tokens(mut self, tokens: u32) -> Self {
        self.max_tokens = Some(tokens);
        self
    }
}

/// A finished step shown to the planner when it replans.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct FinishedStep {
    /// The step as it was planned.
    pub step: Step,
    /// Its output (the planner shows it bounded).
    pub output: String,
}

/// The failed step that caused a replan.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct FailedStep {
    /// The step.
    pub step: Step,
    /// Its last error.
    pub error: String,
}

/// What the planner knows when it replans after a failure.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ReplanContext {
    /// Finished steps, kept as they are and never run again.
    pub finished: Vec<FinishedStep>,
    /// The step that failed.
    pub failed: FailedStep,
    /// Steps of the old plan that were not run and are dropped.
    pub abandoned: Vec<StepId>,
}

/// What a plan is asked for.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // built once per planning call
pub enum PlanContext {
    /// A fresh plan for the goal.
    Fresh,
    /// A better version of `plan`, fixing `issues` (reflection).
    Improve {
        /// The plan to improve.
        plan: Plan,
        /// What a review found wrong with it.
        issues: Vec<String>,
    },
    /// The rest of a plan after a failure (adaptive replanning).
    Replan(ReplanContext),
}

/// A request to a planner.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PlanRequest {
    /// The goal.
    pub goal: String,
    /// Fresh, improve or replan.
    pub context: PlanContext,
}

impl PlanRequest {
    /// A fresh plan for `goal`.
    pub fn new(goal: impl Into<String>) -> Self {
        Self {
            goal: goal.into(),
            context: PlanContext::Fresh,
        }
    }

    /// An improved version of `plan` that fixes `issues`.
    pub fn improve(plan: Plan, issues: Vec<String>) -> Self {
        Self {
            goal: plan.goal.clone(),
            context: PlanContext::Improve { plan, issues },
        }
    }

    /// A replan of `goal` from the state in `context`.
    pub fn replan(goal: impl Into<String>, context: ReplanContext) -> Self {
        Self {
            goal: goal.into(),
            context: PlanContext::Replan(context),
        }
    }

    /// What the planning call is for: [`Purpose::Plan`], [`Purpose::Improve`] or
    /// [`Purpose::Replan`].
    pub fn purpose(&self) -> Purpose {
        match self.context {
            PlanContext::Fresh => Purpose::Plan,
            PlanContext::Improve { .. } => Purpose::Improve,
            PlanContext::Replan(_) => Purpose::Replan,
        }
    }

    fn kept(&self) -> &[FinishedStep] {
        match &self.context {
            PlanContext::Replan(r) => &r.finished,
            _ => &[],
        }
    }
}

/// What the repair pass changed in a plan the model could not get right.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct RepairNote {
    /// The problems of the last reply, as sent to the model.
    pub problems: Vec<String>,
    /// Each change made, in words (plan-core's changes and the planner's own).
    pub changes: Vec<String>,
    /// plan-core's repair report.
    pub report: RepairReport,
}

/// A plan the planner made, and how it got there.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Planned {
    /// The valid plan. When replanning: the finished steps first, then the new ones.
    pub plan: Plan,
    /// The model calls made.
    pub calls: Vec<CallRecord>,
    /// Replies received (1 when the first one was valid).
    pub attempts: u32,
    /// Set when the repair pass had to fix the last reply.
    pub repair: Option<RepairNote>,
    /// Steps handed out while the plan was streaming, in order.
    pub streamed: Vec<Step>,
    /// Every change made to the model's plan on its way here (re-prompts with their
    /// problems, repairs), in words, for the run's `plan_adjusted` event and warnings.
    pub adjustments: Vec<String>,
}

impl Planned {
    /// A valid plan made with no model call (a planner of your own).
    pub fn new(plan: Plan) -> Self {
        Self {
            plan,
            calls: Vec::new(),
            attempts: 1,
            repair: None,
            streamed: Vec::new(),
            adjustments: Vec::new(),
        }
    }

    /// Adds the model calls made.
    pub fn with_calls(mut self, calls: Vec<CallRecord>) -> Self {
        self.calls.extend(calls);
        self
    }

    /// The usage of all calls, added up.
    pub fn usage(&self) -> UsageTotals {
        UsageTotals::of_calls(&self.calls)
    }
}

/// Where a streaming planner hands out steps as they arrive.
///
/// Steps come out in an order where each step's dependencies (other than finished steps of
/// a replan) came out before it, so a runner can start them at once.
#[derive(Clone, Debug)]
pub struct StepSink {
    tx: mpsc::UnboundedSender<Step>,
}

/// The receiving end of a [`StepSink`]: a stream of steps, ending when the sink is dropped.
#[derive(Debug)]
pub struct StepSource {
    rx: mpsc::UnboundedReceiver<Step>,
}

/// A connected sink and source.
pub fn step_channel() -> (StepSink, StepSource) {
    let (tx, rx) = mpsc::unbounded_channel();
    (StepSink { tx }, StepSource { rx })
}

impl StepSink {
    /// Hands out a step; returns false when nobody listens any more.
    pub fn send(&self, step: Step) -> bool {
        self.tx.send(step).is_ok()
    }
}

impl StepSource {
    /// The next step, or `None` once the sink is gone.
    pub async fn recv(&mut self) -> Option<Step> {
        self.rx.recv().await
    }

    /// The steps as a stream.
    pub fn into_stream(self) -> impl futures::Stream<Item = Step> + Send + Unpin + 'static {
        futures::stream::unfold(
            self.rx,
            |mut rx| async move { rx.recv().await.map(|s| (s, rx)) },
        )
        .boxed()
    }
}

/// Turns goals into plans.
#[async_trait]
pub trait Planner: Send + Sync {
    /// Makes a valid plan for `request`.
    async fn plan(&self, request: &PlanRequest) -> Result<Planned, StrategyError>;

    /// Makes a plan, handing each step to `sink` as soon as it is known. The default plans
    /// first and then hands out every step.
    async fn plan_streamed(
        &self,
        request: &PlanRequest,
        sink: StepSink,
    ) -> Result<Planned, StrategyError> {
        let mut planned = self.plan(request).await?;
        let kept: HashSet<&StepId> = request.kept().iter().map(|f| &f.step.id).collect();
        for step in &planned.plan.steps {
            if !kept.contains(&step.id) {
                sink.send(step.clone());
                planned.streamed.push(step.clone());
            }
        }
        Ok(planned)
    }

    /// Whether [`plan_streamed`](Self::plan_streamed) hands out steps before the plan is
    /// complete.
    fn streams(&self) -> bool {
        false
    }
}

#[async_trait]
impl<P: Planner + ?Sized> Planner for Arc<P> {
    async fn plan(&self, request: &PlanRequest) -> Result<Planned, StrategyError> {
        (**self).plan(request).await
    }
    async fn plan_streamed(
        &self,
        request: &PlanRequest,
        sink: StepSink,
    ) -> Result<Planned, StrategyError> {
        (**self).plan_streamed(request, sink).await
    }
    fn streams(&self) -> bool {
        (**self).streams()
    }
}

/// The planner that asks a model.
///
/// ```
/// use plan_strategies::{LlmPlanner, PlannerConfig};
/// # fn f(provider: std::sync::Arc<dyn plan_llm::Provider>) {
/// let planner = LlmPlanner::new(provider).with_config(PlannerConfig::default().with_step_bounds(2, 6));
/// # }
/// ```
#[derive(Clone)]
pub struct LlmPlanner {
    provider: Arc<dyn Provider>,
    config: PlannerConfig,
}

impl std::fmt::Debug for LlmPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmPlanner")
            .field("provider", &self.provider.name())
            .field("config", &self.config)
            .finish()
    }
}

impl LlmPlanner {
    /// A planner over `provider` with the default configuration.
    pub fn new(provider: impl Provider + 'static) -> Self {
        Self {
            provider: Arc::new(provider),
            config: PlannerConfig::default(),
        }
    }

    /// Sets the configuration.
    pub fn with_config(mut self, config: PlannerConfig) -> Self {
        self.config = config;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &PlannerConfig {
        &self.config
    }

    /// The system prompt the planner sends.
    ///
    /// # Errors
    /// [`StrategyError::Template`] if the template fails to render (a bug).
    pub fn system_prompt(&self) -> Result<String, StrategyError> {
        #[derive(Serialize)]
        struct Ctx<'a> {
            min_steps: usize,
            max_steps: usize,
            agents: &'a [AgentInfo],
            kinds: Vec<&'static str>,
            schema: Option<String>,
            guidance: Option<&'a str>,
        }
        // A provider that enforces the schema gets it with the request, not as text.
        let schema = (!self.provider.capabilities().json_schema)
            .then(|| plan_schema(self.config.max_steps).to_string());
        render(
            "plan_system",
            Ctx {
                min_steps: self.config.min_steps,
                max_steps: self.config.max_steps,
                agents: &self.config.agents,
                guidance: self.config.guidance.as_deref(),
                kinds: plan_core::StepKind::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .collect(),
                schema,
            },
        )
    }

    /// The first user message for `request`.
    ///
    /// # Errors
    /// [`StrategyError::Template`] if the template fails to render (a bug).
    pub fn user_prompt(&self, request: &PlanRequest) -> Result<String, StrategyError> {
        #[derive(Serialize)]
        struct Finished {
            id: String,
            description: String,
            output: String,
        }
        #[derive(Serialize)]
        struct Failed {
            id: String,
            description: String,
            error: String,
        }
        #[derive(Serialize)]
        struct Replan {
            finished: Vec<Finished>,
            failed: Failed,
            abandoned: String,
        }
        #[derive(Serialize)]
        struct Ctx {
            goal: String,
            previous_plan: Option<String>,
            issues: Vec<String>,
            replan: Option<Replan>,
        }
        let cap = self.config.output_cap;
        let mut ctx = Ctx {
            goal: request.goal.clone(),
            previous_plan: None,
            issues: Vec::new(),
            replan: None,
        };
        match &request.context {
            PlanContext::Fresh => {}
            PlanContext::Improve { plan, issues } => {
                ctx.previous_plan = Some(plan.to_json_pretty());
                ctx.issues = issues.clone();
            }
            PlanContext::Replan(r) => {
                ctx.replan = Some(Replan {
                    finished: r
                        .finished
                        .iter()
                        .map(|f| Finished {
                            id: f.step.id.to_string(),
                            description: f.step.description.clone(),
                            output: bounded(&f.output, cap),
                        })
                        .collect(),
                    failed: Failed {
                        id: r.failed.step.id.to_string(),
                        description: r.failed.step.description.clone(),
                        error: bounded(&r.failed.error, cap),
                    },
                    abandoned: r
                        .abandoned
                        .iter()
                        .map(|id| format!("`{id}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        render("plan_user", ctx)
    }

    /// The token cap of planning calls: the configured one, else enough for `max_steps`
    /// steps within the plan schema's bounds.
    fn max_tokens(&self) -> u32 {
        self.config
            .max_tokens
            .unwrap_or_else(|| plan_token_budget(self.config.max_steps))
    }

    /// How planning replies are asked for: with the plan schema, unless the provider
    /// enforces JSON objects only (the system prompt then holds the schema). Chosen once
    /// per planning call, before the first request, so that every re-prompt is asked for
    /// as the first request was, even when the provider learns more about its server on
    /// the way (a detected flavour, a refused mode).
    fn response_format(&self) -> ResponseFormat {
        let caps = self.provider.capabilities();
        if caps.json_object && !caps.json_schema {
            ResponseFormat::JsonObject
        } else {
            ResponseFormat::JsonSchema {
                name: "plan".to_owned(),
                schema: plan_schema(self.config.max_steps),
            }
        }
    }

    /// What set the token cap of planning calls, in words.
    fn cap_source(&self) -> String {
        match self.config.max_tokens {
            Some(_) => "the planner's configured max_tokens".to_owned(),
            None => format!(
                "planning's budget for a plan of at most {} steps",
                self.config.max_steps
            ),
        }
    }

    fn request(
        &self,
        messages: Vec<Message>,
        purpose: Purpose,
        format: &ResponseFormat,
    ) -> Request {
        let mut request = Request::new(messages)
            .with_response_format(format.clone())
            .with_purpose(purpose);
        request.temperature = self.config.temperature;
        request.max_tokens = Some(self.max_tokens());
        request
    }

    async fn call(
        &self,
        request: &Request,
        purpose: &str,
        calls: &mut Vec<CallRecord>,
    ) -> Result<(String, Option<CutOff>), StrategyError> {
        let (response, record) = plan_llm::complete_recorded(self.provider.as_ref(), request)
            .await
            .map_err(|e| StrategyError::llm(purpose, e))?;
        calls.push(record);
        let cut = (response.finish_reason == FinishReason::Length)
            .then(|| CutOff::new(self.max_tokens(), response.usage, self.cap_source()));
        Ok((response.content, cut))
    }

    async fn call_streamed(
        &self,
        request: &Request,
        plan_request: &PlanRequest,
        sink: &StepSink,
        streamed: &mut Vec<Step>,
        calls: &mut Vec<CallRecord>,
    ) -> Result<(String, Option<CutOff>), StrategyError> {
        let purpose = plan_request.purpose();
        let purpose = purpose.as_str();
        let started = Instant::now();
        let mut stream = self
            .provider
            .stream(request)
            .await
            .map_err(|e| StrategyError::llm(purpose, e))?;
        let mut parser = StepStreamParser::new();
        let mut gate = StepGate::new(
            plan_request.kept().iter().map(|f| f.step.id.clone()),
            self.config.max_steps,
        );
        let mut text = String::new();
        let mut usage = Usage::default();
        let mut finished = false;
        let mut cut = false;
        while let Some(chunk) = stream.next().await {
            match chunk.map_err(|e| StrategyError::llm(purpose, e))? {
                Chunk::Text(piece) => {
                    text.push_str(&piece);
                    for step in parser.feed(&piece).into_iter().flatten() {
                        for ready in gate.offer(step) {
                            tracing::debug!(step = %ready.id, "streamed step ready");
                            sink.send(ready.clone());
                            streamed.push(ready);
                        }
                    }
                }
                Chunk::Usage(u) => usage = u,
                Chunk::Finish(reason) => {
                    finished = true;
                    cut = reason == FinishReason::Length;
                }
                _ => {}
            }
        }
        calls.push(CallRecord::new(purpose, usage, started.elapsed()));
        if !finished {
            tracing::warn!("plan stream ended without a finish marker");
        }
        let cut = cut.then(|| CutOff::new(self.max_tokens(), usage, self.cap_source()));
        Ok((text, cut))
    }

    async fn run(
        &self,
        request: &PlanRequest,
        sink: Option<&StepSink>,
    ) -> Result<Planned, StrategyError> {
        let purpose = request.purpose();
        let mut messages = vec![
            Message::system(self.system_prompt()?),
            Message::user(self.user_prompt(request)?),
        ];
        let mut calls = Vec::new();
        let mut streamed = Vec::new();
        let mut adjustments = Vec::new();
        let attempts_allowed = 1 + self.config.max_fix_attempts;
        let format = self.response_format();
        let mut last: Option<(Option<Plan>, Vec<Problem>)> = None;
        let mut last_cut = None;
        for attempt in 1..=attempts_allowed {
            let req = self.request(messages.clone(), purpose.clone(), &format);
            let (text, cut) = match (attempt, sink) {
                (1, Some(sink)) => {
                    self.call_streamed(&req, request, sink, &mut streamed, &mut calls)
                        .await?
                }
                _ => self.call(&req, purpose.as_str(), &mut calls).await?,
            };
            let (plan, mut problems) = self.check_reply(request, &text);
            last_cut = None;
            if let Some(cut) = cut
                && plan.is_none()
            {
                // A reply cut by the token cap is not valid JSON: say why, not where it broke.
                problems = vec![Problem::hard(format!(
                    "the reply was cut off {} before the plan's JSON was complete: reply with fewer steps and shorter descriptions",
                    cut.cause()
                ))];
                last_cut = Some(cut);
            }
            if problems.is_empty()
                && let Some(plan) = plan
            {
                return Ok(Planned {
                    plan,
                    calls,
                    attempts: attempt,
                    repair: None,
                    streamed,
                    adjustments,
                });
            }
            // What the repair pass can fix for sure (unknown or repeated dependencies,
            // repeated or missing ids) is fixed here rather than sent back: a re-prompt
            // costs a call, and a weak model often does worse the second time.
            if let Some(plan) = &plan
                && let Some((plan, report, changes)) = self.repair_instead(request, plan)
            {
                let texts: Vec<String> = problems.iter().map(|p| p.text.clone()).collect();
                tracing::info!(
                    changes = changes.len(),
                    attempt,
                    "plan repaired instead of re-prompting"
                );
                adjustments.extend(
                    changes
                        .iter()
                        .map(|c| format!("the model's plan was repaired: {c}")),
                );
                return Ok(Planned {
                    plan,
                    calls,
                    attempts: attempt,
                    repair: Some(RepairNote {
                        problems: texts,
                        changes,
                        report,
                    }),
                    streamed,
                    adjustments,
                });
            }
            tracing::debug!(
                attempt,
                problems = ?problems.iter().map(|p| p.text.as_str()).collect::<Vec<_>>(),
                reply = %bounded(&text, 4000),
                "plan reply rejected"
            );
            if attempt < attempts_allowed {
                adjustments.push(format!(
                    "the model's plan (reply {attempt}) was sent back: {}",
                    problems
                        .iter()
                        .map(|p| p.text.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
                messages.push(Message::assistant(text));
                messages.push(Message::user(render(
                    "plan_fix",
                    serde_json::json!({
                        "problems": problems.iter().map(|p| p.text.as_str()).collect::<Vec<_>>()
                    }),
                )?));
            }
            last = Some((plan, problems));
        }
        let Some((plan, problems)) = last else {
            return Err(StrategyError::InvalidPlan {
                attempts: attempts_allowed,
                problems: vec!["no reply".to_owned()],
            });
        };
        let texts: Vec<String> = problems.iter().map(|p| p.text.clone()).collect();
        if let (None, Some(cut)) = (&plan, &last_cut) {
            // Not a plan too large for --max-steps: say what cut the reply and what helps.
            return Err(StrategyError::InvalidReply {
                purpose: purpose.as_str().to_owned(),
                message: format!(
                    "the last of {attempts_allowed} replies was cut off {} before the plan's JSON was complete; {}",
                    cut.cause(),
                    cut.remedy()
                ),
            });
        }
        let Some(plan) = plan else {
            return Err(StrategyError::InvalidPlan {
                attempts: attempts_allowed,
                problems: texts,
            });
        };
        let (plan, report, changes) = self.repair(request, plan);
        let (_, remaining) = self.check_plan(request, plan.clone());
        if !remaining.is_empty() {
            return Err(StrategyError::InvalidPlan {
                attempts: attempts_allowed,
                problems: remaining.into_iter().map(|p| p.text).collect(),
            });
        }
        tracing::info!(changes = changes.len(), "plan repaired after re-prompting");
        adjustments.extend(
            changes
                .iter()
                .map(|c| format!("the model's plan was repaired: {c}")),
        );
        Ok(Planned {
            adjustments,
            plan,
            calls,
            attempts: attempts_allowed,
            repair: Some(RepairNote {
                problems: texts,
                changes,
                report,
            }),
            streamed,
        })
    }

    /// Parses and checks a reply; returns the merged plan (when the reply had a plan's
    /// shape) and its problems.
    fn check_reply(&self, request: &PlanRequest, text: &str) -> (Option<Plan>, Vec<Problem>) {
        match parse_reply(&request.goal, text) {
            Ok(new_steps) => {
                let kept = request.kept();
                let mut problems = Vec::new();
                let kept_ids: HashSet<&StepId> = kept.iter().map(|f| &f.step.id).collect();
                for s in &new_steps.steps {
                    if kept_ids.contains(&s.id) {
                        problems.push(Problem::hard(format!(
                            "step `{}` is already finished and is kept as it is: leave it out and give new steps new ids",
                            s.id
                        )));
                    }
                }
                let merged = merge(request, new_steps);
                if problems.is_empty() {
                    let (_, mut more) = self.check_plan(request, merged.clone());
                    problems.append(&mut more);
                }
                (Some(merged), problems)
            }
            Err(message) => (None, vec![Problem::hard(message)]),
        }
    }

    fn check_plan(&self, request: &PlanRequest, plan: Plan) -> (Option<PlanGraph>, Vec<Problem>) {
        let mut problems = Vec::new();
        if !self.config.agents.is_empty() {
            for s in &plan.steps {
                if let Some(agent) = &s.agent
                    && !self.config.agents.iter().any(|a| &a.name == agent)
                {
                    let names: Vec<&str> =
                        self.config.agents.iter().map(|a| a.name.as_str()).collect();
                    problems.push(Problem::hard(format!(
                        "step `{}` names the agent `{agent}`, which does not exist: use one of {} or leave `agent` out",
                        s.id,
                        names.join(", ")
                    )));
                }
            }
        }
        let limit = self.config.max_steps + request.kept().len();
        match PlanGraph::with_limits(plan, &Limits::with_max_steps(limit)) {
            Ok(graph) if problems.is_empty() => (Some(graph), problems),
            Ok(_) => (None, problems),
            Err(errors) => {
                problems.extend(errors.problems.iter().map(|p| Problem::hard(p.to_string())));
                (None, problems)
            }
        }
    }

    /// The repair of a reply whose every problem the repair pass fixes for sure: repeated
    /// or missing ids, and dependencies on unknown ids, on the step itself or listed twice.
    /// `None` when the reply has another problem (a cycle, too many steps, an unknown
    /// agent, a finished step restated), which the model is asked to fix instead.
    fn repair_instead(
        &self,
        request: &PlanRequest,
        plan: &Plan,
    ) -> Option<(Plan, RepairReport, Vec<String>)> {
        let kept: HashSet<&StepId> = request.kept().iter().map(|f| &f.step.id).collect();
        if plan
            .steps
            .iter()
            .skip(kept.len())
            .any(|s| kept.contains(&s.id))
        {
            return None;
        }
        let (repaired, report, changes) = crate::repair::repair_plan(plan.clone());
        let sure = |c: &RepairChange| {
            matches!(
                c,
                RepairChange::GeneratedId { .. }
                    | RepairChange::RenamedDuplicateId { .. }
                    | RepairChange::DroppedSelfDependency { .. }
                    | RepairChange::DroppedUnknownDependency { .. }
                    | RepairChange::DroppedRepeatedDependency { .. }
            )
        };
        if report.is_empty() || !report.changes.iter().all(sure) {
            return None;
        }
        let (_, remaining) = self.check_plan(request, repaired.clone());
        remaining.is_empty().then_some((repaired, report, changes))
    }

    /// The repair pass: fixes what can be fixed mechanically in the last reply.
    fn repair(&self, request: &PlanRequest, plan: Plan) -> (Plan, RepairReport, Vec<String>) {
        let kept: HashSet<StepId> = request.kept().iter().map(|f| f.step.id.clone()).collect();
        let mut changes = Vec::new();
        let mut plan = plan;
        // Steps that re-state a finished step are dropped: finished work is never redone.
        let mut seen_kept = HashSet::new();
        plan.steps.retain(|s| {
            if kept.contains(&s.id) && !seen_kept.insert(s.id.clone()) {
                changes.push(format!("dropped step `{}`: it is already finished", s.id));
                false
            } else {
                true
            }
        });
        if !self.config.agents.is_empty() {
            for s in &mut plan.steps {
                if let Some(agent) = &s.agent
                    && !self.config.agents.iter().any(|a| &a.name == agent)
                {
                    changes.push(format!(
                        "step `{}`: removed the unknown agent `{agent}`",
                        s.id
                    ));
                    s.agent = None;
                }
            }
        }
        let (plan, report, core_changes) = crate::repair::repair_plan(plan);
        changes.extend(core_changes);
        (plan, report, changes)
    }
}

#[async_trait]
impl Planner for LlmPlanner {
    async fn plan(&self, request: &PlanRequest) -> Result<Planned, StrategyError> {
        self.run(request, None).await
    }

    async fn plan_streamed(
        &self,
        request: &PlanRequest,
        sink: StepSink,
    ) -> Result<Planned, StrategyError> {
        if !self.provider.capabilities().streaming {
            let mut planned = self.run(request, None).await?;
            let kept: HashSet<&StepId> = request.kept().iter().map(|f| &f.step.id).collect();
            for step in &planned.plan.steps {
                if !kept.contains(&step.id) {
                    sink.send(step.clone());
                    planned.streamed.push(step.clone());
                }
            }
            return Ok(planned);
        }
        let mut planned = self.run(request, Some(&sink)).await?;
        // Steps the fix or repair added after the stream are handed out too, unless a
        // streamed step changed (the caller then falls back, see `Planned::streamed`).
        if streamed_consistent(&planned) {
            let sent: HashSet<StepId> = planned.streamed.iter().map(|s| s.id.clone()).collect();
            let kept: HashSet<&StepId> = request.kept().iter().map(|f| &f.step.id).collect();
            let mut gate = StepGate::new(
                sent.iter()
                    .cloned()
                    .chain(kept.iter().map(|k| (*k).clone())),
                usize::MAX,
            );
            for step in planned.plan.steps.clone() {
                if sent.contains(&step.id) || kept.contains(&step.id) {
                    continue;
                }
                for ready in gate.offer(step) {
                    sink.send(ready.clone());
                    planned.streamed.push(ready);
                }
            }
        }
        Ok(planned)
    }

    fn streams(&self) -> bool {
        self.provider.capabilities().streaming
    }
}

/// Whether every step handed out while streaming is in the final plan unchanged.
pub(crate) fn streamed_consistent(planned: &Planned) -> bool {
    planned
        .streamed
        .iter()
        .all(|s| planned.plan.step(s.id.as_str()) == Some(s))
}

/// One thing wrong with a reply, in the words sent back to the model.
#[derive(Debug)]
struct Problem {
    text: String,
}

impl Problem {
    fn hard(text: String) -> Self {
        Self { text }
    }
}

/// The finished steps of a replan followed by the reply's steps.
fn merge(request: &PlanRequest, reply: Plan) -> Plan {
    let mut steps: Vec<Step> = request.kept().iter().map(|f| f.step.clone()).collect();
    steps.extend(reply.steps);
    Plan::new(request.goal.clone(), steps)
}

/// The first JSON value in `text`, found by plan-llm's one extraction
/// ([`plan_llm::extract_json`]: the whole text, a code fence, or the first complete value
/// after prose); when there is none, what is wrong, in words the model can act on.
pub(crate) fn extract_json(text: &str) -> Result<serde_json::Value, String> {
    if let Some(value) = plan_llm::extract_json(text) {
        return Ok(value);
    }
    let none =
        || "the reply contains no JSON object: reply with the plan as one JSON object".to_owned();
    let Some(start) = text.find(['{', '[']) else {
        return Err(none());
    };
    match serde_json::Deserializer::from_str(&text[start..])
        .into_iter::<serde_json::Value>()
        .next()
    {
        Some(Err(e)) => Err(format!(
            "the reply is not valid JSON ({e}): reply with one complete JSON object"
        )),
        _ => Err(none()),
    }
}

/// Parses a plan reply: a plan object (the goal may be left out) or a bare array of steps.
pub(crate) fn parse_reply(goal: &str, text: &str) -> Result<Plan, String> {
    let value = extract_json(text)?;
    let mut object = match value {
        serde_json::Value::Array(steps) => {
            let mut m = serde_json::Map::new();
            m.insert("steps".to_owned(), serde_json::Value::Array(steps));
            m
        }
        serde_json::Value::Object(m) => m,
        other => {
            return Err(format!(
                "the reply is a JSON {} where a plan object was expected: reply with {{\"goal\": ..., \"steps\": [...]}}",
                json_type(&other)
            ));
        }
    };
    if !object.contains_key("steps") {
        return Err("the reply has no `steps` array: put the steps in a `steps` array".to_owned());
    }
    object.insert(
        "goal".to_owned(),
        serde_json::Value::String(goal.to_owned()),
    );
    let text = serde_json::Value::Object(object).to_string();
    Plan::from_json(&text).map_err(|e| {
        format!(
            "the plan does not have the plan's shape: {}; every step needs a string `id`, a string `description` and a `dependencies` array of ids",
            e.message
        )
    })
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Releases streamed steps in dependency order, holding back any step whose dependencies
/// have not been released yet, and any step that is malformed on its own.
#[derive(Debug)]
pub(crate) struct StepGate {
    released: HashSet<StepId>,
    waiting: Vec<Step>,
    limit: usize,
    count: usize,
}

impl StepGate {
    pub(crate) fn new(done: impl IntoIterator<Item = StepId>, limit: usize) -> Self {
        Self {
            released: done.into_iter().collect(),
            waiting: Vec::new(),
            limit,
            count: 0,
        }
    }

    pub(crate) fn offer(&mut self, step: Step) -> Vec<Step> {
        let malformed = step.id.as_str().is_empty()
            || step.description.trim().is_empty()
            || step.dependencies.contains(&step.id)
            || self.released.contains(&step.id)
            || self.waiting.iter().any(|w| w.id == step.id);
        if malformed {
            return Vec::new();
        }
        self.waiting.push(step);
        let mut out = Vec::new();
        while self.count < self.limit {
            let Some(pos) = self
                .waiting
                .iter()
                .position(|s| s.dependencies.iter().all(|d| self.released.contains(d)))
            else {
                break;
            };
            let s = self.waiting.remove(pos);
            self.released.insert(s.id.clone());
            self.count += 1;
            out.push(s);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plan_llm::{Capabilities, ChunkStream, LlmError, Reply, Response, ScriptedModel};

    /// A provider that learns about its server with its first call, as the OpenAI adapter
    /// does when it identifies llama-cpp-python (JSON object mode, no schema mode).
    struct Learns(ScriptedModel);

    #[async_trait]
    impl Provider for Learns {
        fn name(&self) -> &str {
            "learns"
        }
        fn capabilities(&self) -> Capabilities {
            if self.0.call_count() == 0 {
                Capabilities::all().with_streaming(false)
            } else {
                Capabilities::default().with_json_object(true)
            }
        }
        async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
            self.0.complete(request).await
        }
        async fn stream(&self, request: &Request) -> Result<ChunkStream, LlmError> {
            self.0.stream(request).await
        }
    }

    fn reply(steps: serde_json::Value) -> Reply {
        Reply::text(serde_json::json!({ "goal": "g", "steps": steps }).to_string())
    }

    #[tokio::test]
    async fn re_prompts_are_asked_for_as_the_first_request_was() {
        let model = ScriptedModel::new()
            // A cycle: the repair pass does not fix it for sure, the model is asked to.
            .reply(reply(serde_json::json!([
                {"id": "a", "description": "A", "dependencies": ["b"]},
                {"id": "b", "description": "B", "dependencies": ["a"]}
            ])))
            .reply(reply(serde_json::json!([
                {"id": "a", "description": "A", "dependencies": []},
                {"id": "b", "description": "B", "dependencies": ["a"]}
            ])));
        let planner = LlmPlanner::new(Learns(model.clone()));
        let planned = planner.plan(&PlanRequest::new("g")).await.unwrap();
        assert_eq!(planned.attempts, 2);
        let requests = model.requests();
        assert_eq!(requests.len(), 2);
        for r in &requests {
            assert!(
                matches!(&r.response_format, ResponseFormat::JsonSchema { name, .. } if name == "plan"),
                "every request carries the plan schema: {:?}",
                r.response_format
            );
        }
    }

    #[tokio::test]
    async fn what_repair_fixes_for_sure_is_repaired_without_a_re_prompt() {
        let model = ScriptedModel::new().reply(reply(serde_json::json!([
            {"id": "venue", "description": "Book a venue", "dependencies": ["Choose a date"]},
            {"id": "venue", "description": "Send invitations", "dependencies": ["venue", "venue"]}
        ])));
        let planned = LlmPlanner::new(model.clone())
            .plan(&PlanRequest::new("g"))
            .await
            .unwrap();
        assert_eq!(model.call_count(), 1, "no re-prompt");
        assert_eq!(planned.attempts, 1);
        let note = planned.repair.expect("the repair is reported");
        assert!(
            note.problems.iter().any(|p| p.contains("Choose a date")),
            "{note:?}"
        );
        assert!(
            planned
                .adjustments
                .iter()
                .any(|a| a.contains("repaired") && a.contains("Choose a date")),
            "{:?}",
            planned.adjustments
        );
        let ids: Vec<&str> = planned.plan.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["venue", "venue-2"]);
    }

    #[tokio::test]
    async fn a_reply_cut_by_the_servers_context_names_it_not_the_step_cap() {
        let cut = || {
            Reply::text("{\"goal\": \"g\", \"steps\": [{\"id\": \"a\", \"description\": \"and then")
                .with_finish_reason(FinishReason::Length)
                .with_usage(Usage::new(700, 1_348))
        };
        let model = ScriptedModel::new().reply(cut()).reply(cut()).reply(cut());
        let err = LlmPlanner::new(model)
            .plan(&PlanRequest::new("g"))
            .await
            .unwrap_err();
        assert!(err.hint().is_none(), "not a --max-steps problem: {err}");
        let text = err.to_string();
        assert!(
            text.contains("context window") && text.contains("larger context"),
            "{text}"
        );
    }

    #[test]
    fn parse_reply_accepts_fences_arrays_and_missing_goal() {
        let p = parse_reply(
            "g",
            "Sure!\n```json\n{\"steps\": [{\"id\": \"a\", \"description\": \"x\"}]}\n```",
        )
        .unwrap();
        assert_eq!(p.goal, "g");
        let p = parse_reply("g", "[{\"id\": \"a\", \"description\": \"x\"}]").unwrap();
        assert_eq!(p.steps.len(), 1);
        let e = parse_reply("g", "no plan here").unwrap_err();
        assert!(e.contains("no JSON object"));
        let e = parse_reply("g", "{\"steps\": [{\"id\": \"a\"}]}").unwrap_err();
        assert!(e.contains("description"), "{e}");
    }

    #[test]
    fn gate_releases_in_dependency_order() {
        let mut g = StepGate::new([StepId::new("kept")], 10);
        assert!(g.offer(Step::new("b", "b").depends_on(["a"])).is_empty());
        let out = g.offer(Step::new("a", "a").depends_on(["kept"]));
        let ids: Vec<&str> = out.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(g.offer(Step::new("a", "dup")).is_empty());
        assert!(g.offer(Step::new("c", "c").depends_on(["c"])).is_empty());
    }
}
