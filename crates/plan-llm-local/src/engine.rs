//! The generation loop: prompt, sampling, constrained decoding with llguidance, stop
//! conditions, incremental UTF-8 decoding.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use plan_llm::{FinishReason, ResponseFormat};
use rand::{Rng, SeedableRng};
use toktrie::TokEnv;

use crate::error::LocalError;
use crate::model::Llama;
use crate::tokenizer::Tokenizer;

/// Everything one generation needs besides the prompt.
pub(crate) struct GenParams {
    pub(crate) max_tokens: usize,
    pub(crate) temperature: f32,
    pub(crate) seed: u64,
    pub(crate) repeat_penalty: f32,
    pub(crate) repeat_window: usize,
    pub(crate) format: ResponseFormat,
    pub(crate) stop: Vec<String>,
    /// Whether the keys and values of a prompt prefix left in the cache by the previous
    /// generation may be reused (see [`Engine::generate`]).
    pub(crate) reuse_prefix: bool,
}

/// What a generation produced, besides its text.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) prompt_tokens: usize,
    /// Prompt tokens whose keys and values were already in the cache (not run again).
    pub(crate) reused_tokens: usize,
    pub(crate) completion_tokens: usize,
    pub(crate) finish: FinishReason,
}

/// The loaded model with everything needed to run requests.
pub(crate) struct Engine {
    pub(crate) model: Llama,
    pub(crate) tokenizer: Tokenizer,
    pub(crate) factory: Arc<ParserFactory>,
    pub(crate) tok_env: TokEnv,
    /// Tokens that end the assistant's turn.
    pub(crate) stop_tokens: Vec<u32>,
    /// The tokens whose keys and values are in the model's cache, at positions
    /// `0..cached.len()`: the last prompt and the reply tokens run after it.
    pub(crate) cached: Vec<u32>,
}

/// Prompt tokens run in one forward pass at most: between chunks a generation whose
/// caller went away stops. Chunking changes no number (each token's arithmetic does not
/// depend on the batch it runs in).
const PREFILL_CHUNK: usize = 256;

/// Runs `tokens` at `pos` in `model` and records them in `cached` (what the model's cache
/// holds). On an error the cache is forgotten from `pos` on.
fn run_cached(
    model: &mut Llama,
    cached: &mut Vec<u32>,
    tokens: &[u32],
    pos: usize,
) -> Result<(), LocalError> {
    cached.truncate(pos);
    model.run(tokens, pos).map_err(LocalError::Inference)?;
    cached.extend_from_slice(tokens);
    Ok(())
}

/// How many leading tokens `a` and `b` share.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Engine {
    /// The grammar a response format asks for, or `None` for free text.
    pub(crate) fn grammar(format: &ResponseFormat) -> Result<Option<TopLevelGrammar>, LocalError> {
        let schema = match format {
            ResponseFormat::Text => return Ok(None),
            ResponseFormat::JsonObject => serde_json::json!({"type": "object"}),
            ResponseFormat::JsonSchema { schema, .. } => schema.clone(),
            other => {
                return Err(LocalError::Grammar(format!(
                    "{other:?} is not supported by the local model"
                )));
            }
        };
        let mut schema = match schema {
            serde_json::Value::Object(map) => map,
            serde_json::Value::Bool(true) => serde_json::Map::new(),
            other => {
                return Err(LocalError::Grammar(format!(
                    "the JSON schema must be an object, got {other}"
                )));
            }
        };
        // Only the declared keys: a key is a string with no length bound, and a small
        // model that strays into an undeclared key can write it until the token cap.
        close_map(&mut schema);
        // Compact JSON: a small model given free whitespace can pad forever.
        schema
            .entry("x-guidance")
            .or_insert_with(|| serde_json::json!({"whitespace_flexible": false}));
        Ok(Some(TopLevelGrammar::from_json_schema(
            serde_json::Value::Object(schema),
        )))
    }

    fn matcher(&self, grammar: TopLevelGrammar) -> Result<Matcher, LocalError> {
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| LocalError::Grammar(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(LocalError::Grammar(e));
        }
        Ok(matcher)
    }

    /// Forgets what the cache holds (after a panic its contents are not to be trusted):
    /// the next generation runs its whole prompt.
    pub(crate) fn forget_cache(&mut self) {
        self.cached.clear();
    }

    /// Generates a reply to `prompt` (already tokenised), calling `on_text` with each
    /// piece of text as it is decoded. `on_text` returns false to stop early (the caller
    /// went away); `alive` is asked between prompt chunks and reply tokens, and false
    /// stops the generation too.
    ///
    /// With [`GenParams::reuse_prefix`], only the prompt tokens after the longest prefix
    /// it shares with [`Engine::cached`] are run (at least one, for the logits): their
    /// keys and values are already in the cache, computed by the same arithmetic, so the
    /// reply is the same as from an empty cache.
    pub(crate) fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenParams,
        on_text: &mut dyn FnMut(&str) -> bool,
        alive: &(dyn Fn() -> bool + Sync),
    ) -> Result<Outcome, LocalError> {
        let context = self.model.context();
        if prompt.is_empty() || prompt.len() >= context {
            return Err(LocalError::ContextLength {
                prompt_tokens: prompt.len(),
                context,
            });
        }
        let mut matcher = match Self::grammar(&params.format)? {
            Some(g) => Some(self.matcher(g)?),
            None => None,
        };
        let budget = params.max_tokens.min(context - prompt.len());
        let mut rng = rand::rngs::StdRng::seed_from_u64(params.seed);
        let mut text = TextOut::new(&params.stop);
        let reused = if params.reuse_prefix {
            common_prefix(&self.cached, prompt).min(prompt.len() - 1)
        } else {
            0
        };
        let stopped = |generated| Outcome {
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            completion_tokens: generated,
            finish: FinishReason::Stop,
        };
        let mut pos = reused;
        for chunk in prompt[reused..].chunks(PREFILL_CHUNK) {
            if !alive() {
                return Ok(stopped(0));
            }
            run_cached(&mut self.model, &mut self.cached, chunk, pos)?;
            pos += chunk.len();
        }
        let mut generated = 0usize;
        let trie = self.tok_env.tok_trie();
        let mut recent: std::collections::VecDeque<u32> =
            std::collections::VecDeque::with_capacity(params.repeat_window);
        let finish = loop {
            if generated >= budget {
                break FinishReason::Length;
            }
            let logits = match matcher.as_mut() {
                None => self.model.logits(None),
                Some(m) => {
                    let mask = m.compute_mask().map_err(|e| grammar_err(m, e))?;
                    let vocab = self.model.hyper.vocab;
                    if mask.num_set() * 4 < vocab {
                        // Few tokens allowed: compute only their logits.
                        self.model.logits(Some(&mask.to_list()))
                    } else {
                        let mut logits = self.model.logits(None);
                        for (i, l) in logits.iter_mut().enumerate() {
                            if !mask.is_allowed(i as u32) {
                                *l = f32::NEG_INFINITY;
                            }
                        }
                        logits
                    }
                }
            };
            let mut logits = logits;
            if matcher.is_none() {
                // Free text only: in JSON the penalty would hold back the quotes and
                // commas that end a string, and the grammar already bounds its length.
                penalise(&mut logits, recent.iter().copied(), params.repeat_penalty);
            }
            let token = sample(&logits, params.temperature, &mut rng).ok_or_else(|| {
                LocalError::Inference("no token is allowed at this point".to_owned())
            })?;
            if self.stop_tokens.contains(&token) {
                break FinishReason::Stop;
            }
            let mut batch = vec![token];
            if let Some(m) = matcher.as_mut() {
                m.consume_token(token).map_err(|e| grammar_err(m, e))?;
                if !m.is_stopped() {
                    // Tokens the grammar forces: taken without sampling, run in one batch.
                    let room = budget - generated - 1;
                    let forced = m.compute_ff_tokens();
                    let forced = &forced[..forced.len().min(room)];
                    if !forced.is_empty() {
                        m.consume_tokens(forced).map_err(|e| grammar_err(m, e))?;
                        batch.extend_from_slice(forced);
                    }
                }
            }
            generated += batch.len();
            for &t in &batch {
                if params.repeat_window > 0 {
                    if recent.len() == params.repeat_window {
                        recent.pop_front();
                    }
                    recent.push_back(t);
                }
            }
            let mut stopped_by_text = false;
            for &t in &batch {
                if !self.tokenizer.is_special(t) {
                    match text.push(trie.token(t)) {
                        Push::More(piece) => {
                            if !piece.is_empty() && !on_text(&piece) {
                                return Ok(stopped(generated));
                            }
                        }
                        Push::Stop(piece) => {
                            if !piece.is_empty() {
                                on_text(&piece);
                            }
                            stopped_by_text = true;
                            break;
                        }
                    }
                }
            }
            if stopped_by_text {
                return Ok(stopped(generated));
            }
            if matcher.as_ref().is_some_and(Matcher::is_stopped) {
                break FinishReason::Stop;
            }
            if generated >= budget {
                break FinishReason::Length;
            }
            if !alive() {
                return Ok(stopped(generated));
            }
            run_cached(&mut self.model, &mut self.cached, &batch, pos)?;
            pos += batch.len();
        };
        let rest = text.finish();
        if !rest.is_empty() {
            on_text(&rest);
        }
        Ok(Outcome {
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            completion_tokens: generated,
            finish,
        })
    }
}

/// Sets `additionalProperties: false` on every object schema in `value` that declares
/// its `properties` and says nothing about others. Values given as data (`const`, `enum`,
/// `default`, `examples`) are left as they are.
fn close_objects(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => close_map(map),
        serde_json::Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// [`close_objects`] for a schema object: its subschemas, then itself.
fn close_map(map: &mut serde_json::Map<String, serde_json::Value>) {
    for (key, child) in map.iter_mut() {
        if !matches!(key.as_str(), "const" | "enum" | "default" | "examples") {
            close_objects(child);
        }
    }
    if map
        .get("properties")
        .is_some_and(serde_json::Value::is_object)
        && !map.contains_key("additionalProperties")
        && !map.contains_key("patternProperties")
    {
        map.insert(
            "additionalProperties".to_owned(),
            serde_json::Value::Bool(false),
        );
    }
}

fn grammar_err(m: &Matcher, e: impl std::fmt::Display) -> LocalError {
    LocalError::Inference(format!(
        "constrained decoding failed: {}",
        m.get_error().unwrap_or_else(|| e.to_string())
    ))
}

/// Applies the repetition penalty to the logits of `recent` tokens (each once): divides a
/// positive logit by `penalty`, multiplies a negative one, so the token gets less likely.
fn penalise(logits: &mut [f32], recent: impl Iterator<Item = u32>, penalty: f32) {
    if penalty <= 1.0 {
        return;
    }
    let mut seen = std::collections::HashSet::new();
    for t in recent {
        if !seen.insert(t) {
            continue;
        }
        if let Some(l) = logits.get_mut(t as usize)
            && l.is_finite()
        {
            *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
        }
    }
}

/// Greedy at temperature 0, else a draw from the softmax at that temperature.
fn sample(logits: &[f32], temperature: f32, rng: &mut impl Rng) -> Option<u32> {
    let (best, best_logit) = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_finite())
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    if temperature <= 0.0 {
        return Some(best as u32);
    }
    let weights: Vec<f32> = logits
        .iter()
        .map(|l| {
            if l.is_finite() {
                ((l - best_logit) / temperature).exp()
            } else {
                0.0
            }
        })
        .collect();
    let total: f32 = weights.iter().sum();
    let mut r = rng.random::<f32>() * total;
    for (i, w) in weights.iter().enumerate() {
        if *w > 0.0 {
            if r < *w {
                return Some(i as u32);
            }
            r -= w;
        }
    }
    Some(best as u32)
}

enum Push {
    /// Text safe to emit now (may be empty).
    More(String),
    /// A stop sequence was reached: the text before it.
    Stop(String),
}

/// Turns token bytes into text: holds back incomplete UTF-8 sequences and any tail that
/// could still become a stop sequence.
struct TextOut<'a> {
    pending: Vec<u8>,
    text: String,
    emitted: usize,
    stops: &'a [String],
    hold: usize,
}

impl<'a> TextOut<'a> {
    fn new(stops: &'a [String]) -> Self {
        let hold = stops.iter().map(String::len).max().unwrap_or(0);
        Self {
            pending: Vec::new(),
            text: String::new(),
            emitted: 0,
            stops,
            hold,
        }
    }

    fn push(&mut self, bytes: &[u8]) -> Push {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_some() => {
                // Invalid bytes (not just incomplete): replace them and move on.
                let s = String::from_utf8_lossy(&self.pending).into_owned();
                self.text.push_str(&s);
                self.pending.clear();
                return self.emit();
            }
            Err(e) => e.valid_up_to(),
        };
        let rest = self.pending.split_off(valid);
        let done = std::mem::replace(&mut self.pending, rest);
        self.text.push_str(&String::from_utf8_lossy(&done));
        self.emit()
    }

    fn emit(&mut self) -> Push {
        let search_from = self.emitted.saturating_sub(self.hold);
        let search_from = floor_char_boundary(&self.text, search_from);
        let found = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.text[search_from..].find(s.as_str()))
            .min();
        if let Some(at) = found {
            let end = search_from + at;
            let piece = self.text[self.emitted.min(end)..end].to_owned();
            self.emitted = self.text.len();
            return Push::Stop(piece);
        }
        let safe = floor_char_boundary(
            &self.text,
            self.text.len().saturating_sub(self.hold.saturating_sub(1)),
        )
        .max(self.emitted);
        let piece = self.text[self.emitted..safe].to_owned();
        self.emitted = safe;
        Push::More(piece)
    }

    fn finish(&mut self) -> String {
        if !self.pending.is_empty() {
            let tail = String::from_utf8_lossy(&self.pending).into_owned();
            self.text.push_str(&tail);
            self.pending.clear();
        }
        let piece = self.text[self.emitted..].to_owned();
        self.emitted = self.text.len();
        piece
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_out_joins_split_utf8_and_stops_at_sequences() {
        let stops = vec!["END".to_owned()];
        let mut out = TextOut::new(&stops);
        let mut got = String::new();
        let e = "é".as_bytes();
        for chunk in [b"ab".as_slice(), &e[..1], &e[1..], b"cE", b"NDzz"] {
            match out.push(chunk) {
                Push::More(p) => got.push_str(&p),
                Push::Stop(p) => {
                    got.push_str(&p);
                    break;
                }
            }
        }
        assert_eq!(got, "abéc");
    }

    #[test]
    fn objects_with_declared_properties_get_no_others() {
        let mut schema = serde_json::json!({
            "type": "object",
            "properties": {
                "steps": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "string"}}}},
                "meta": {"type": "object", "additionalProperties": true, "properties": {}},
                "free": {"type": "object"},
                "fixed": {"const": {"properties": {"a": 1}}}
            }
        });
        close_objects(&mut schema);
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(
            schema["properties"]["steps"]["items"]["additionalProperties"],
            false
        );
        assert_eq!(schema["properties"]["meta"]["additionalProperties"], true);
        assert_eq!(
            schema["properties"]["fixed"]["const"],
            serde_json::json!({"properties": {"a": 1}})
        );
        assert!(
            schema["properties"]["free"]
                .get("additionalProperties")
                .is_none()
        );
    }

    #[test]
    fn the_penalty_makes_recent_tokens_less_likely_once_each() {
        let mut logits = vec![2.0, -1.0, 1.5, f32::NEG_INFINITY];
        penalise(&mut logits, [0, 0, 1, 3].into_iter(), 2.0);
        assert_eq!(logits[..3], [1.0, -2.0, 1.5]);
        assert_eq!(logits[3], f32::NEG_INFINITY);
        // Greedy now prefers the token it has not just said.
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        assert_eq!(sample(&logits, 0.0, &mut rng), Some(2));
        let mut same = vec![2.0, 1.0];
        penalise(&mut same, [0].into_iter(), 1.0);
        assert_eq!(same, [2.0, 1.0]);
    }

    #[test]
    fn greedy_picks_the_largest_allowed_logit() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let logits = [0.5, f32::NEG_INFINITY, 2.0, 1.0];
        assert_eq!(sample(&logits, 0.0, &mut rng), Some(2));
        for _ in 0..50 {
            assert_ne!(sample(&logits, 1.0, &mut rng), Some(1));
        }
        assert_eq!(sample(&[f32::NEG_INFINITY], 0.7, &mut rng), None);
    }
}
