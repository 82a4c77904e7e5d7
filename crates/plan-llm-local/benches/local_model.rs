//! Speed of the embedded model: load time, prompt (prefill) tokens/s and decode tokens/s,
//! free text and JSON-schema constrained, for 1 and 2 threads; then two workloads of a run:
//! three parallel DAG steps (started at once vs one after another) and research-like
//! calls sharing a long prefix. Prints figures; run with `cargo bench -p plan-llm-local`
//! (the model is fetched into the cache if missing).
//! On a shared machine the figures are noisy: other processes take the same cores.

use std::time::{Duration, Instant};

use plan_llm::{Message, Provider, Request, ResponseFormat};
use plan_llm_local::{FetchOptions, LocalConfig, LocalModel, ModelStore, PrefillStats};
use serde_json::json;

fn timed(rt: &tokio::runtime::Runtime, model: &LocalModel, request: &Request) -> (Duration, u64) {
    let started = Instant::now();
    let reply = rt
        .block_on(model.complete(request))
        .unwrap_or_else(|e| panic!("{e}"));
    (started.elapsed(), reply.usage.completion_tokens)
}

/// Best of `runs` (the least disturbed by other load).
fn best(
    rt: &tokio::runtime::Runtime,
    model: &LocalModel,
    request: &Request,
    runs: usize,
) -> (Duration, u64) {
    (0..runs)
        .map(|_| timed(rt, model, request))
        .min_by_key(|(d, _)| *d)
        .unwrap_or_default()
}

/// Wall time of `requests` run one after another, and the reply tokens.
fn sequential(
    rt: &tokio::runtime::Runtime,
    model: &LocalModel,
    requests: &[Request],
) -> (Duration, u64) {
    let started = Instant::now();
    let tokens = requests.iter().map(|r| timed(rt, model, r).1).sum();
    (started.elapsed(), tokens)
}

/// Wall time of `requests` started at once (each on its own model handle), and the reply
/// tokens.
fn parallel(
    rt: &tokio::runtime::Runtime,
    models: &[LocalModel],
    requests: &[Request],
) -> (Duration, u64) {
    let started = Instant::now();
    let replies = rt.block_on(futures::future::join_all(
        requests
            .iter()
            .zip(models.iter().cycle())
            .map(|(r, m)| m.complete(r)),
    ));
    let tokens = replies
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{e}")).usage.completion_tokens)
        .sum();
    (started.elapsed(), tokens)
}

const STEP_SYSTEM: &str = "You are the executor of one step of a plan. You are given the \
goal of the whole plan, an outline of its steps and the one step that is yours. Do only your \
step: do not repeat the work of the other steps and do not plan further. Write a short, \
concrete answer that the steps after yours can build on: name the things you decided, give \
numbers where they matter, and say plainly what you could not settle. No preamble, no \
closing remarks.";

const GOAL: &str = "Organise a two-day offsite for a team of twelve engineers in the \
mountains in late September: travel from the city by train, a lodge with meeting rooms, \
meals for everyone including two vegetarians and one person with a nut allergy, one \
half-day hike for mixed fitness levels, and a budget of 9,000 euros all included.";

const OUTLINE: &str = "Plan outline:\n1. book_travel: choose trains and buy group tickets.\n\
2. book_lodge: find a lodge with a meeting room for twelve and book two nights.\n\
3. plan_meals: agree the menus with the lodge, covering the dietary needs.\n\
4. plan_hike: choose a half-day route suitable for mixed fitness levels.\n\
5. budget: add up the costs and check them against the budget.";

/// Three requests like three parallel DAG steps of one run: the same system prompt and
/// goal, a different step each.
fn dag_steps() -> Vec<Request> {
    [
        "book_travel: choose the trains for the outward and return journeys and say how to buy group tickets for twelve people.",
        "book_lodge: pick a kind of lodge with a meeting room for twelve and two nights, and list what to ask before booking.",
        "plan_hike: choose a half-day mountain route for mixed fitness levels in late September and say what everyone should bring.",
    ]
    .iter()
    .map(|step| {
        Request::new(vec![
            Message::system(STEP_SYSTEM),
            Message::user(format!("Goal: {GOAL}\n\n{OUTLINE}\n\nYour step: {step}")),
        ])
        .with_temperature(0.0)
        .with_max_tokens(64)
    })
    .collect()
}

const ANSWER_SYSTEM: &str = "You answer a question from the passages given, never from \
outside knowledge. Reply with one or two sentences that state the answer, each fact followed \
by the tag of its passage in square brackets, exactly as given (for example [doc#1]). If the \
passages do not answer the question, say so.";

/// About 600 tokens of passages, as a research step retrieves them.
fn passages() -> String {
    let docs = [
        (
            "runbooks/db-failover.md",
            "When the primary database stops answering health checks for 30 seconds, the \
             orchestrator promotes the replica in the other zone. Operators confirm the \
             promotion with `dbctl status --cluster main` and then point the read pool at the \
             new primary. The old primary must be fenced before it rejoins as a replica.",
        ),
        (
            "runbooks/cache-flush.md",
            "The edge cache is flushed with `edgectl purge --all` only during the maintenance \
             window on Tuesdays from 02:00 to 04:00 UTC. Outside the window, purge single \
             paths with `edgectl purge --path`. A full purge raises origin load about fourfold \
             for twenty minutes.",
        ),
        (
            "policies/on-call.md",
            "On-call engineers acknowledge a page within 5 minutes and escalate to the \
             secondary after 15 minutes without progress. Handover happens on Mondays at \
             10:00 local time with a written summary of open incidents in the on-call channel.",
        ),
        (
            "incidents/2024-03-queue-backlog.md",
            "On 12 March the message queue backlog grew to 2.3 million messages after a \
             consumer deploy disabled batching. The fix was a rollback, followed by raising \
             the consumer count from 8 to 24 until the backlog drained, which took 47 minutes.",
        ),
        (
            "runbooks/certificates.md",
            "TLS certificates renew automatically 21 days before expiry. If renewal fails, \
             the alert names the domain; run `certctl renew DOMAIN --force` and check the \
             new expiry with `certctl show DOMAIN`. Wildcard certificates need the DNS \
             challenge and the credentials in the secrets vault.",
        ),
        (
            "notes/2024-04-capacity-review.md",
            "The capacity review agreed to keep 35 percent headroom on the API cluster, to \
             add two nodes before the autumn campaign, and to move batch reports to the night \
             pool. Storage grows about 4 percent a month; the next disk expansion is due in \
             August.",
        ),
        (
            "policies/access.md",
            "Production access is granted for 8 hours at a time through the access portal and \
             needs a ticket number. Break-glass access pages the security lead and is reviewed \
             within one working day. Service accounts never get interactive shells.",
        ),
    ];
    let mut text = String::from("Passages:\n");
    for (i, (file, body)) in docs.iter().enumerate() {
        text.push_str(&format!("[doc#{}] {file}: {body}\n", i + 1));
    }
    text
}

/// Four research-like calls: one system prompt and the same passages, a different short
/// question each.
fn research_calls() -> Vec<Request> {
    let passages = passages();
    [
        "How long does the orchestrator wait before promoting the replica, and which command confirms it?",
        "When may the whole edge cache be purged?",
        "How quickly must a page be acknowledged, and when is it escalated?",
        "How much headroom does the API cluster keep?",
    ]
    .iter()
    .map(|q| {
        Request::new(vec![
            Message::system(ANSWER_SYSTEM),
            Message::user(format!(
                "{passages}\nQuestion: {q}\nAnswer in one or two sentences:"
            )),
        ])
        .with_temperature(0.0)
        .with_max_tokens(32)
    })
    .collect()
}

/// Prompt tokens run and reused since `before`.
fn prefill_since(model: &LocalModel, before: PrefillStats) -> String {
    let now = model.prefill_stats();
    format!(
        "{} prompt tokens run, {} reused",
        now.prefilled - before.prefilled,
        now.reused - before.reused
    )
}

fn main() {
    let path = ModelStore::default()
        .ensure(&FetchOptions::default(), &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let long_prompt = "The quick brown fox jumps over the lazy dog. ".repeat(30);
    let free = |max: u32| {
        Request::new(vec![Message::user(
            "Write a short story about a lighthouse keeper.",
        )])
        .with_temperature(0.0)
        .with_max_tokens(max)
    };
    let prefill = Request::new(vec![Message::user(format!("Summarise: {long_prompt}"))])
        .with_temperature(0.0)
        .with_max_tokens(1);
    let schema = json!({
        "type": "object",
        "properties": {
            "goal": {"type": "string", "maxLength": 80},
            "steps": {"type": "array", "minItems": 3, "maxItems": 5, "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,15}$"},
                    "description": {"type": "string", "maxLength": 100},
                    "dependencies": {"type": "array", "items": {"type": "string"}}
                },
                "required": ["id", "description", "dependencies"],
                "additionalProperties": false
            }}
        },
        "required": ["goal", "steps"],
        "additionalProperties": false
    });
    let constrained = |max: u32| {
        Request::new(vec![Message::user(
            "Goal: plan a trip to the mountains for a weekend.",
        )])
        .with_temperature(0.0)
        .with_max_tokens(max)
        .with_response_format(ResponseFormat::JsonSchema {
            name: "plan".into(),
            schema: schema.clone(),
        })
    };
    let config = |threads: usize| {
        LocalConfig::default()
            .with_model_path(&path)
            .with_threads(threads)
    };

    println!("plan-llm-local benchmark (best of 2 runs; noisy on a shared machine)");
    for threads in [1usize, 2] {
        let started = Instant::now();
        // Every prompt run whole: the speed of the model itself.
        let model = LocalModel::load(config(threads).with_prefix_reuse(false))
            .unwrap_or_else(|e| panic!("{e}"));
        let load = started.elapsed();
        let stats = model.load_stats();
        let prompt_tokens = model
            .prompt_tokens(&prefill)
            .unwrap_or_else(|e| panic!("{e}"))
            .len();
        // Warm up (first-touch of the weights and cache pages).
        timed(&rt, &model, &free(4));
        let (t_prefill, _) = best(&rt, &model, &prefill, 2);
        let (t_free_1, _) = best(&rt, &model, &free(1), 2);
        let (t_free_n, n_free) = best(&rt, &model, &free(129), 2);
        let (t_con_1, _) = best(&rt, &model, &constrained(1), 2);
        let (t_con_n, n_con) = best(&rt, &model, &constrained(400), 2);
        let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
        println!("threads={threads}");
        println!(
            "  load: {:.2} s (weights {:.2} s, tokenizer+grammar tables {:.2} s)",
            load.as_secs_f64(),
            stats.weights.as_secs_f64(),
            stats.tokenizer.as_secs_f64()
        );
        println!(
            "  prompt: {:.0} tok/s ({prompt_tokens} tokens in {:.2} s)",
            rate(prompt_tokens as u64, t_prefill),
            t_prefill.as_secs_f64()
        );
        println!(
            "  decode, free text: {:.1} tok/s ({} tokens)",
            rate(n_free.saturating_sub(1), t_free_n.saturating_sub(t_free_1)),
            n_free
        );
        println!(
            "  decode, JSON schema: {:.1} tok/s ({} tokens incl. forced, {:.2} s)",
            rate(n_con.saturating_sub(1), t_con_n.saturating_sub(t_con_1)),
            n_con,
            t_con_n.as_secs_f64()
        );
    }

    let threads = plan_llm_local::default_threads();
    let steps = dag_steps();
    let step_tokens: Vec<usize> = {
        let model = LocalModel::load(config(threads)).unwrap_or_else(|e| panic!("{e}"));
        steps
            .iter()
            .map(|r| model.prompt_tokens(r).map_or(0, |p| p.len()))
            .collect()
    };
    println!(
        "three parallel DAG steps (threads={threads}, prompts of {step_tokens:?} tokens, up to 64 reply tokens each)"
    );
    // A run loads the model once per use (its planner, each agent profile): three loads of
    // the same file, as three steps on three profiles would (they share one model).
    let models: Vec<LocalModel> = (0..3)
        .map(|_| LocalModel::load(config(threads)).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    // Each measure starts from a cache that holds nothing of the steps (as after the
    // planning call).
    timed(&rt, &models[0], &free(4));
    let mark = models[0].prefill_stats();
    let (t_seq, n_seq) = sequential(&rt, &models[0], &steps);
    let seq_prefill = prefill_since(&models[0], mark);
    timed(&rt, &models[0], &free(4));
    let mark = models[0].prefill_stats();
    let (t_one, n_one) = parallel(&rt, &models[..1], &steps);
    let one_prefill = prefill_since(&models[0], mark);
    timed(&rt, &models[0], &free(4));
    let mark = models[0].prefill_stats();
    let (t_three, n_three) = parallel(&rt, &models, &steps);
    let three_prefill = prefill_since(&models[0], mark);
    let ratio = |t: Duration| t.as_secs_f64() / t_seq.as_secs_f64().max(1e-9);
    println!(
        "  one after another: {:.2} s ({n_seq} reply tokens; {seq_prefill})",
        t_seq.as_secs_f64()
    );
    println!(
        "  at once, one LocalModel: {:.2} s ({n_one} reply tokens; {one_prefill}), {:.2}x sequential",
        t_one.as_secs_f64(),
        ratio(t_one)
    );
    println!(
        "  at once, three loads of the same file: {:.2} s ({n_three} reply tokens; {three_prefill}), {:.2}x sequential",
        t_three.as_secs_f64(),
        ratio(t_three)
    );
    drop(models);

    let calls = research_calls();
    let model = LocalModel::load(config(threads)).unwrap_or_else(|e| panic!("{e}"));
    let prompt_total: usize = calls
        .iter()
        .map(|r| model.prompt_tokens(r).map_or(0, |p| p.len()))
        .sum();
    println!(
        "research-like calls (threads={threads}, 4 calls sharing system prompt + passages, {prompt_total} prompt tokens in all)"
    );
    // The same loaded model with reuse off (the comparison `LocalConfig::with_prefix_reuse`
    // is for).
    let no_reuse = LocalModel::load(config(threads).with_prefix_reuse(false))
        .unwrap_or_else(|e| panic!("{e}"));
    let mark = no_reuse.prefill_stats();
    let (t_off, n_off) = sequential(&rt, &no_reuse, &calls);
    println!(
        "  prefix reuse off: {:.2} s ({n_off} reply tokens; {})",
        t_off.as_secs_f64(),
        prefill_since(&no_reuse, mark)
    );
    // Starting from a cache that holds nothing of the passages, as the first call of a
    // research run does.
    timed(&rt, &model, &free(4));
    let mark = model.prefill_stats();
    let (t_on, n_on) = sequential(&rt, &model, &calls);
    println!(
        "  prefix reuse on: {:.2} s ({n_on} reply tokens; {}), {:.2}x the time with it off",
        t_on.as_secs_f64(),
        prefill_since(&model, mark),
        t_on.as_secs_f64() / t_off.as_secs_f64().max(1e-9)
    );
}
