//! Structured model calls other than planning: the critique (reflection), the
//! decomposition (hierarchical planning) and the synthesis of the answer.

use plan_llm::{
    CallRecord, LlmError, Message, Provider, Purpose, Request, StructuredCall, Usage,
    complete_recorded,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::StrategyError;
use crate::prompts::{
    CRITIQUE_SCHEMA, DECOMPOSE_SCHEMA, STRUCTURED_TOKEN_BUDGET, render, schema_compact,
    schema_value,
};

/// A review of a plan against its goal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Critique {
    /// Whether the plan can be run as it is.
    pub approved: bool,
    /// What to fix (empty when approved).
    #[serde(default)]
    pub issues: Vec<String>,
}

/// One sub-goal of a decomposition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SubGoal {
    pub(crate) id: String,
    pub(crate) goal: String,
    #[serde(default)]
    pub(crate) dependencies: Vec<String>,
}

/// Whether a goal is atomic, or its sub-goals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Decomposition {
    pub(crate) atomic: bool,
    #[serde(default)]
    pub(crate) subgoals: Vec<SubGoal>,
}

/// Why a reply was cut off at the length limit: at the call's token cap, or, when it
/// stopped short of the cap, because the server's context window (prompt and reply
/// together) was full. The usage tells them apart; a server that gives none is taken to
/// have stopped at the cap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CutOff {
    /// The call's token cap.
    cap: u32,
    /// What set the cap, in words (`planning's budget for a plan of at most 30 steps`).
    set_by: String,
    /// Prompt and reply tokens, when the reply stopped short of the cap.
    context: Option<(u64, u64)>,
}

impl CutOff {
    /// A reply cut off with this `usage` by a call capped at `cap` tokens (`set_by`).
    pub(crate) fn new(cap: u32, usage: Usage, set_by: impl Into<String>) -> Self {
        let short = usage.completion_tokens > 0 && usage.completion_tokens < u64::from(cap);
        Self {
            cap,
            set_by: set_by.into(),
            context: short.then_some((usage.prompt_tokens, usage.completion_tokens)),
        }
    }

    /// Whether the server's context window, not the cap, ended the reply.
    pub(crate) fn by_context(&self) -> bool {
        self.context.is_some()
    }

    /// Where the reply stopped, to follow "the reply was cut off".
    pub(crate) fn cause(&self) -> String {
        match self.context {
            Some((prompt, reply)) => format!(
                "by the model server's context window after {reply} tokens (about {} tokens with the {prompt}-token prompt), short of the token limit of {} tokens",
                prompt + reply,
                self.cap
            ),
            None => format!("at the token limit ({} tokens, {})", self.cap, self.set_by),
        }
    }

    /// What to do about it.
    pub(crate) fn remedy(&self) -> &'static str {
        if self.by_context() {
            "start the model server with a larger context (llama.cpp: llama-server -c N; llama-cpp-python: --n_ctx N), or plan a shorter goal"
        } else {
            "a reply within the schema fits in that limit, so the model did not keep to the schema: use a larger model, or a server that constrains its replies to the schema"
        }
    }
}

/// A structured reply, and whether a reply on the way to it was cut off at the token limit
/// (the model was then asked to reply more briefly).
struct Reply<T> {
    value: T,
    cut: bool,
}

/// Sends a request for a JSON reply of type `T`; a reply that does not parse is answered
/// once with the problem.
async fn structured<T: DeserializeOwned>(
    provider: &dyn Provider,
    purpose: Purpose,
    system: String,
    user: String,
    schema: &str,
    max_tokens: u32,
    calls: &mut Vec<CallRecord>,
) -> Result<T, StrategyError> {
    structured_reply(provider, purpose, system, user, schema, max_tokens, calls)
        .await
        .map(|reply| reply.value)
}

/// As [`structured`], also saying whether a reply was cut off at the token limit. The
/// call is plan-llm's [`StructuredCall`]: the best format the provider takes, an unusable
/// reply sent back once with what was wrong, every call made recorded in `calls`.
async fn structured_reply<T: DeserializeOwned>(
    provider: &dyn Provider,
    purpose: Purpose,
    system: String,
    user: String,
    schema: &str,
    max_tokens: u32,
    calls: &mut Vec<CallRecord>,
) -> Result<Reply<T>, StrategyError> {
    let name = purpose.as_str().to_owned();
    let request = Request::new(vec![Message::system(system), Message::user(user)])
        .with_max_tokens(max_tokens)
        .with_purpose(purpose);
    let schema = schema_value(schema);
    let convert = |value| {
        serde_json::from_value::<T>(value)
            .map_err(|e| format!("the JSON does not match the schema: {e}"))
    };
    // One repair in the provider's best mode, as a planning reply gets; the strategies
    // check the value themselves (a plan over its cap is reported with the flag).
    let reply = match StructuredCall::new(&name, &schema)
        .with_repairs(1)
        .with_next_mode_on_invalid(false)
        .without_schema_check()
        .run_as(provider, &request, calls, convert)
        .await
    {
        Ok(reply) => reply,
        Err(LlmError::StructuredOutput { mut attempts, .. }) => {
            // The last attempt's problem (each starts with its mode).
            return Err(StrategyError::InvalidReply {
                purpose: name,
                message: attempts.pop().unwrap_or_default(),
            });
        }
        Err(e) => return Err(StrategyError::llm(&name, e)),
    };
    Ok(Reply {
        value: reply.value,
        cut: reply.cut,
    })
}

/// Asks the model to review `plan_json` against `goal`.
pub(crate) async fn critique(
    provider: &dyn Provider,
    goal: &str,
    plan_json: &str,
    calls: &mut Vec<CallRecord>,
) -> Result<Critique, StrategyError> {
    let system = render(
        "critique_system",
        serde_json::json!({ "schema": schema_compact(CRITIQUE_SCHEMA) }),
    )?;
    let user = render(
        "critique_user",
        serde_json::json!({ "goal": goal, "plan": plan_json }),
    )?;
    structured(
        provider,
        Purpose::Critique,
        system,
        user,
        CRITIQUE_SCHEMA,
        STRUCTURED_TOKEN_BUDGET,
        calls,
    )
    .await
}

/// Asks the model whether `goal` is atomic or how to split it.
pub(crate) async fn decompose(
    provider: &dyn Provider,
    goal: &str,
    ancestors: &[String],
    max_subgoals: usize,
    calls: &mut Vec<CallRecord>,
) -> Result<Decomposition, StrategyError> {
    let system = render(
        "decompose_system",
        serde_json::json!({
            "schema": schema_compact(DECOMPOSE_SCHEMA),
            "max_subgoals": max_subgoals,
        }),
    )?;
    let user = render(
        "decompose_user",
        serde_json::json!({ "goal": goal, "ancestors": ancestors }),
    )?;
    structured(
        provider,
        Purpose::Decompose,
        system,
        user,
        DECOMPOSE_SCHEMA,
        STRUCTURED_TOKEN_BUDGET,
        calls,
    )
    .await
}

/// How the `auto` strategy meets a goal.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Route {
    /// Answered directly: in the routing call, or in full by a follow-up call when the
    /// routing reply's answer may have been cut.
    Direct {
        /// The answer.
        answer: String,
        /// What may still be wrong with it (it may be cut), in words; usually none.
        warnings: Vec<String>,
    },
    /// A plan (as the model wrote it; the caller validates it).
    Planned(serde_json::Value),
}

/// The routing reply: one object whose `answer` and `plan` are both present and exactly
/// one of which is null (OpenAI's strict mode refuses a root `anyOf`).
#[derive(Deserialize)]
#[serde(try_from = "RawRoute")]
struct Routed(Route);

#[derive(Deserialize)]
struct RawRoute {
    #[serde(default)]
    answer: Option<String>,
    #[serde(default)]
    plan: Option<serde_json::Value>,
}

impl TryFrom<RawRoute> for Routed {
    type Error = String;
    fn try_from(raw: RawRoute) -> Result<Self, String> {
        let answer = raw.answer.filter(|a| !a.trim().is_empty());
        let plan = raw.plan.filter(|p| !p.is_null());
        match (answer, plan) {
            (_, Some(plan)) => Ok(Routed(Route::Planned(plan))),
            (Some(answer), None) => Ok(Routed(Route::Direct {
                answer,
                warnings: Vec::new(),
            })),
            (None, None) => Err("both `answer` and `plan` are null: give one of them".to_owned()),
        }
    }
}

/// The rule the routing call follows (from the seed's advice on when not to plan).
const ROUTE_SYSTEM: &str = "You decide how to meet a goal. Answer it directly when it needs no plan: a single-step task, a factual question, a definition, a small calculation, a greeting or other conversation, a short rewrite. Make a plan when it needs several distinct steps whose results build on each other: research across sources, comparisons, building or analysing something in parts. Reply with one JSON object with the fields \"answer\" and \"plan\", exactly one of them null: {\"answer\": \"...\", \"plan\": null} to answer, or {\"answer\": null, \"plan\": {\"goal\": \"...\", \"steps\": [{\"id\": \"...\", \"description\": \"...\", \"dependencies\": []}]}} to plan. A plan has at most {max_steps} steps; each step's dependencies name the ids of the steps whose outputs it needs.";

/// The longest direct answer the routing reply may hold: schema-constrained decoding (the
/// embedded model) must end within the call's token cap, planning's budget. An answer that
/// reaches it may have been cut by a server that enforces the schema, so it is written
/// again in full by a call of its own ([`full_answer`]).
const ANSWER_MAX_CHARS: usize = 1200;

/// The system prompt of the follow-up call that writes a direct answer in full.
const ANSWER_SYSTEM: &str = "You answer a goal directly and in full. Reply with the complete answer only: no preamble, no JSON.";

/// The purpose of that call, as its `llm_call` event names it.
const ANSWER_PURPOSE: &str = "answer";

/// The schema of the routing reply for plans of at most `max_steps` steps.
pub(crate) fn route_schema(max_steps: usize) -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "answer": {"type": ["string", "null"], "maxLength": ANSWER_MAX_CHARS, "description": "The answer, when no plan is needed"},
            "plan": {"anyOf": [crate::prompts::plan_schema(max_steps), {"type": "null"}]}
        },
        "required": ["answer", "plan"],
        "additionalProperties": false
    })
}

/// Asks the model to answer `goal` directly or plan it (the `auto` strategy's one call).
pub(crate) async fn decide(
    provider: &dyn Provider,
    goal: &str,
    max_steps: usize,
    calls: &mut Vec<CallRecord>,
) -> Result<Route, StrategyError> {
    let system = ROUTE_SYSTEM.replace("{max_steps}", &max_steps.to_string());
    let schema = route_schema(max_steps).to_string();
    let max_tokens = crate::prompts::plan_token_budget(max_steps);
    let reply: Reply<Routed> = structured_reply(
        provider,
        Purpose::Plan,
        system,
        format!("Goal: {goal}"),
        &schema,
        max_tokens,
        calls,
    )
    .await?;
    match reply.value.0 {
        Route::Direct { answer, .. } if reply.cut => {
            let why = format!(
                "a routing reply was cut off at the token limit ({max_tokens} tokens), so the answer it holds may be shortened"
            );
            Ok(full_answer(provider, goal, answer, &why, calls).await)
        }
        Route::Direct { answer, .. } if answer.chars().count() >= ANSWER_MAX_CHARS => {
            let why = format!(
                "the answer in the routing reply reached the schema's limit of {ANSWER_MAX_CHARS} characters, so it may be cut"
            );
            Ok(full_answer(provider, goal, answer, &why, calls).await)
        }
        route => Ok(route),
    }
}

/// Writes a direct answer in full with a call of its own, with no schema and no length
/// limit, when the routing reply's answer may be cut (`why`). Should that call fail, come
/// back empty or be cut itself, the best answer at hand is kept and the route's warnings
/// say what is wrong with it.
async fn full_answer(
    provider: &dyn Provider,
    goal: &str,
    routed: String,
    why: &str,
    calls: &mut Vec<CallRecord>,
) -> Route {
    let request = Request::new(vec![
        Message::system(ANSWER_SYSTEM),
        Message::user(format!("Goal: {goal}")),
    ])
    .with_purpose(Purpose::Other(ANSWER_PURPOSE.to_owned()));
    let response = match complete_recorded(provider, &request).await {
        Ok((response, record)) => {
            calls.push(record);
            response
        }
        Err(e) => {
            return Route::Direct {
                answer: routed,
                warnings: vec![format!(
                    "{why}, and the call to write it in full failed ({e}): the answer may be incomplete"
                )],
            };
        }
    };
    let full = response.content.trim();
    if full.is_empty() {
        return Route::Direct {
            answer: routed,
            warnings: vec![format!(
                "{why}, and the call to write it in full returned nothing: the answer may be incomplete"
            )],
        };
    }
    let mut warnings = Vec::new();
    if response.finish_reason.is_truncated() {
        warnings.push(
            "the direct answer was cut off at the model's output token limit: it is incomplete"
                .to_owned(),
        );
    }
    Route::Direct {
        answer: full.to_owned(),
        warnings,
    }
}

/// A step's result as the synthesis sees it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct SynthesisInput {
    pub(crate) id: String,
    pub(crate) description: String,
    pub(crate) status: String,
    pub(crate) output: Option<String>,
    pub(crate) error: Option<String>,
}

/// The synthesis prompt's messages.
pub(crate) fn synthesis_messages(
    goal: &str,
    steps: &[SynthesisInput],
    tree: Option<&str>,
) -> Result<Vec<Message>, StrategyError> {
    Ok(vec![
        Message::system(render("synthesize_system", serde_json::json!({}))?),
        Message::user(render(
            "synthesize_user",
            serde_json::json!({ "goal": goal, "steps": steps, "tree": tree }),
        )?),
    ])
}

/// The messages of one summarising call of the synthesis: part `part` of `parts` of the
/// final steps' results, to be summarised in at most `max_chars` characters.
pub(crate) fn part_messages(
    goal: &str,
    part: usize,
    parts: usize,
    steps: &[SynthesisInput],
    max_chars: usize,
) -> Result<Vec<Message>, StrategyError> {
    Ok(vec![
        Message::system(render(
            "synthesize_part_system",
            serde_json::json!({ "max_chars": max_chars }),
        )?),
        Message::user(render(
            "synthesize_part_user",
            serde_json::json!({ "goal": goal, "part": part, "parts": parts, "steps": steps }),
        )?),
    ])
}

/// Writes the final answer from the (bounded) step results.
pub(crate) async fn synthesize(
    provider: &dyn Provider,
    goal: &str,
    steps: &[SynthesisInput],
    tree: Option<&str>,
    calls: &mut Vec<CallRecord>,
) -> Result<String, StrategyError> {
    synthesis_call(provider, synthesis_messages(goal, steps, tree)?, calls).await
}

/// Summarises part `part` of `parts` of the final steps' results (a round of the
/// synthesis of a plan with more final steps than one call reads), in at most `max_chars`
/// characters as asked; the caller bounds the reply.
pub(crate) async fn summarise_part(
    provider: &dyn Provider,
    goal: &str,
    (part, parts): (usize, usize),
    steps: &[SynthesisInput],
    max_chars: usize,
    calls: &mut Vec<CallRecord>,
) -> Result<String, StrategyError> {
    let messages = part_messages(goal, part, parts, steps, max_chars)?;
    synthesis_call(provider, messages, calls).await
}

/// One model call of the synthesis (purpose `synthesize`), recorded in `calls`.
async fn synthesis_call(
    provider: &dyn Provider,
    messages: Vec<Message>,
    calls: &mut Vec<CallRecord>,
) -> Result<String, StrategyError> {
    let mut request = Request::new(messages).with_purpose(Purpose::Synthesize);
    // The prompt's own framing: an answer that starts writing it is echoing the prompt.
    // (Four at most: OpenAI's limit.)
    request.stop = vec![
        "\nResults of the steps:".to_owned(),
        "\nResults of the steps (part".to_owned(),
        "\nHow the goal was broken down:".to_owned(),
        "\nYour step (`".to_owned(),
    ];
    let (response, record) = complete_recorded(provider, &request)
        .await
        .map_err(|e| StrategyError::llm(Purpose::Synthesize.as_str(), e))?;
    calls.push(record);
    Ok(response.content.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_off_names_what_set_the_limit() {
        let budget = CutOff::new(
            13_328,
            Usage::new(700, 13_328),
            "planning's budget for a plan of at most 30 steps",
        );
        assert!(!budget.by_context());
        assert!(
            budget.cause().contains("13328 tokens, planning's budget"),
            "{}",
            budget.cause()
        );
        assert!(!budget.remedy().contains("--max-steps"));
        let context = CutOff::new(13_328, Usage::new(700, 1_348), "planning's budget");
        assert!(context.by_context());
        assert!(
            context.cause().contains("context window after 1348 tokens")
                && context.cause().contains("about 2048 tokens"),
            "{}",
            context.cause()
        );
        assert!(context.remedy().contains("larger context"));
        // No usage: taken to have stopped at the cap.
        assert!(!CutOff::new(100, Usage::default(), "x").by_context());
    }

    /// Constrained decoding of a direct answer must end within the routing call's token
    /// cap (planning's budget) at 2.5 characters a token, or the embedded model runs into
    /// the cap and the run fails.
    #[test]
    fn a_direct_answer_fits_the_routing_calls_token_cap() {
        let schema = route_schema(1);
        assert_eq!(
            schema["properties"]["answer"]["maxLength"],
            ANSWER_MAX_CHARS
        );
        let frame = 40;
        assert!(crate::prompts::plan_token_budget(1) as usize * 5 / 2 >= ANSWER_MAX_CHARS + frame);
    }
}
