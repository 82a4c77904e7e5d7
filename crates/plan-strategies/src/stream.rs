//! Incremental parsing of a plan while the model is still writing it.
//!
//! [`StepStreamParser`] is fed the reply text in whatever pieces the provider delivers and
//! yields every complete object of the plan's `steps` array the moment its closing brace
//! arrives. It tracks strings and escapes, so braces inside descriptions do not confuse it,
//! and it works byte by byte, so a piece may end anywhere (in a key, an escape, a number).

use plan_core::Step;

/// Where the scanner is in the JSON text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Container {
    Object,
    Array,
}

/// Splits a streamed plan reply into its step objects as they complete.
///
/// The reply may be a plan object (`{"goal": .., "steps": [..]}`, keys in any order) or a
/// bare array of steps; text before the first `{` or `[` (prose, a code fence) is skipped.
///
/// ```
/// use plan_strategies::StepStreamParser;
///
/// let mut parser = StepStreamParser::new();
/// assert!(parser.feed(r#"{"steps": [{"id": "a", "descr"#).is_empty());
/// let steps = parser.feed(r#"iption": "use {braces}"}, {"id""#);
/// assert_eq!(steps.len(), 1);
/// assert_eq!(steps[0].as_ref().unwrap().description, "use {braces}");
/// ```
#[derive(Debug, Default)]
pub struct StepStreamParser {
    started: bool,
    finished: bool,
    stack: Vec<Container>,
    in_string: bool,
    escaped: bool,
    /// At depth 1 of a root object: whether the next string is a key.
    expect_key: bool,
    /// The key being read or last read at depth 1 (raw bytes).
    key: Vec<u8>,
    reading_key: bool,
    /// The depth (stack length) of the `steps` array once it is open.
    steps_depth: Option<usize>,
    /// Bytes of the step object being captured.
    capture: Option<Vec<u8>>,
    /// Objects yielded so far.
    yielded: usize,
}

impl StepStreamParser {
    /// A parser at the start of a reply.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many step objects have been yielded so far.
    pub fn yielded(&self) -> usize {
        self.yielded
    }

    /// Whether the root JSON value has been closed.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Feeds the next piece of the reply; returns the step objects it completed, in order.
    /// A complete object that is not a valid step is returned as an error naming the
    /// problem (the whole plan is validated again when the reply ends).
    pub fn feed(&mut self, piece: &str) -> Vec<Result<Step, String>> {
        let mut out = Vec::new();
        for &b in piece.as_bytes() {
            if self.finished {
                break;
            }
            self.byte(b, &mut out);
        }
        out
    }

    fn byte(&mut self, b: u8, out: &mut Vec<Result<Step, String>>) {
        if !self.started {
            match b {
                b'{' => {
                    self.started = true;
                    self.stack.push(Container::Object);
                    self.expect_key = true;
                }
                b'[' => {
                    // A bare array of steps.
                    self.started = true;
                    self.stack.push(Container::Array);
                    self.steps_depth = Some(1);
                }
                _ => {}
            }
            return;
        }
        if let Some(capture) = self.capture.as_mut() {
            capture.push(b);
        }
        if self.in_string {
            if self.escaped {
                self.escaped = false;
                if self.reading_key {
                    self.key.push(b);
                }
            } else if b == b'\\' {
                self.escaped = true;
                if self.reading_key {
                    self.key.push(b);
                }
            } else if b == b'"' {
                self.in_string = false;
                self.reading_key = false;
            } else if self.reading_key {
                self.key.push(b);
            }
            return;
        }
        match b {
            b'"' => {
                self.in_string = true;
                if self.stack.len() == 1 && self.stack[0] == Container::Object && self.expect_key {
                    self.reading_key = true;
                    self.key.clear();
                }
            }
            b':' if self.stack.len() == 1 => self.expect_key = false,
            b',' if self.stack.len() == 1 => {
                self.expect_key = true;
                self.key.clear();
            }
            b'{' | b'[' => {
                let container = if b == b'{' {
                    Container::Object
                } else {
                    Container::Array
                };
                let depth = self.stack.len();
                if b == b'['
                    && depth == 1
                    && self.stack[0] == Container::Object
                    && self.key == b"steps"
                    && self.steps_depth.is_none()
                {
                    self.steps_depth = Some(depth + 1);
                }
                if b == b'{' && self.steps_depth == Some(depth) && self.capture.is_none() {
                    self.capture = Some(vec![b'{']);
                }
                self.stack.push(container);
            }
            b'}' | b']' => {
                self.stack.pop();
                let depth = self.stack.len();
                if b == b'}'
                    && self.steps_depth == Some(depth)
                    && let Some(bytes) = self.capture.take()
                {
                    self.yielded += 1;
                    out.push(parse_step(&bytes));
                }
                if b == b']' && self.steps_depth == Some(depth + 1) {
                    // The steps array closed; later arrays named `steps` are ignored.
                    self.steps_depth = Some(usize::MAX);
                }
                if depth == 0 {
                    self.finished = true;
                }
            }
            _ => {}
        }
    }
}

fn parse_step(bytes: &[u8]) -> Result<Step, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("step is not UTF-8: {e}"))?;
    serde_json::from_str::<Step>(text).map_err(|e| format!("step #{text:.60} is not a step: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PLAN: &str = r#"Here is the plan:
```json
{"goal": "g {not a step}", "notes": {"steps": [{"id": "fake", "description": "x"}]},
 "steps": [
  {"id": "a", "description": "print \"}\" and {x}", "dependencies": []},
  {"id": "b", "description": "ünïcode \\ back\\\"slash ]", "dependencies": ["a"],
   "fallback": {"description": "{nested}"}},
  {"id": "c", "description": "c", "dependencies": ["a", "b"], "kind": "verify"}
 ],
 "after": [{"id": "late", "description": "y"}]}
```"#;

    fn ids(results: &[Result<Step, String>]) -> Vec<String> {
        results
            .iter()
            .map(|r| r.as_ref().unwrap().id.to_string())
            .collect()
    }

    #[test]
    fn whole_text_yields_the_steps_only() {
        let mut p = StepStreamParser::new();
        let out = p.feed(PLAN);
        assert_eq!(ids(&out), ["a", "b", "c"]);
        assert_eq!(out[0].as_ref().unwrap().description, "print \"}\" and {x}");
        assert_eq!(
            out[1].as_ref().unwrap().description,
            "ünïcode \\ back\\\"slash ]"
        );
        assert!(p.is_finished());
    }

    #[test]
    fn each_step_arrives_at_its_closing_brace() {
        let mut p = StepStreamParser::new();
        let end_of_a =
            PLAN.find(r#""dependencies": []}"#).unwrap() + r#""dependencies": []}"#.len();
        assert!(p.feed(&PLAN[..end_of_a - 1]).is_empty());
        assert_eq!(ids(&p.feed("}")), ["a"]);
    }

    #[test]
    fn bare_array_and_invalid_step() {
        let mut p = StepStreamParser::new();
        let out = p.feed(r#"[{"id": "a", "description": "x"}, {"id": "b"}]"#);
        assert_eq!(out.len(), 2);
        assert!(out[0].is_ok());
        assert!(out[1].as_ref().unwrap_err().contains("description"));
    }

    proptest! {
        #[test]
        fn split_anywhere_gives_the_same_steps(cuts in proptest::collection::vec(0usize..PLAN.len(), 0..12)) {
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| PLAN.is_char_boundary(*c)).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut p = StepStreamParser::new();
            let mut out = Vec::new();
            let mut start = 0;
            for c in cuts.into_iter().chain([PLAN.len()]) {
                out.extend(p.feed(&PLAN[start..c]));
                start = c;
            }
            prop_assert_eq!(ids(&out), vec!["a", "b", "c"]);
        }
    }
}
