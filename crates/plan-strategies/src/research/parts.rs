//! Questions in several parts ("which port, and which protocol does it use?"), split by
//! their wording, not by the model, so that each part can be searched and judged on its
//! own: a passage about the port rarely covers the protocol too.
//!
//! The split is lexical and conservative: a question splits only where a new question
//! clearly starts (a second `?`, a `;`, `, and`, or `and`/`,` before a question word), and
//! a piece without words of its own ("..., and why?") stays with the part before it. A
//! part that names its subject only by a pronoun ("...and who approved it?") or that is a
//! bare question phrase sharing the rest of the sentence ("which port and which protocol
//! does the gateway use?") borrows the subject's words from its neighbour for its search.

use super::grounding::{QUESTION_WORDS, question_query};

/// One part of a question: its words as asked and the query that searches for it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuestionPart {
    /// The part as asked ("which protocol does it speak").
    pub text: String,
    /// What is searched for it: its own words and, when it names its subject only by a
    /// pronoun or shares it with its neighbour, the subject's words.
    pub query: String,
}

/// Words that start a question.
const WH_WORDS: &[&str] = &[
    "who", "whom", "whose", "what", "which", "when", "where", "why", "how",
];

/// Words that stand for a subject named elsewhere in the question.
const PRONOUNS: &[&str] = &[
    "it", "its", "it's", "they", "them", "their", "theirs", "he", "him", "his", "she", "her",
    "hers", "this", "that", "these", "those", "there", "one",
];

/// Words that carry no subject of their own (besides the question words
/// [`question_query`] leaves out).
const FILLER: &[&str] = &[
    "a", "an", "the", "of", "to", "in", "on", "at", "for", "by", "with", "from", "is", "are",
    "was", "were", "be", "been", "it", "its", "it's", "i", "we", "you", "does", "do", "did", "and",
    "or", "also", "then", "else", "so",
];

fn words(text: &str) -> Vec<&str> {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '-')
        .filter(|w| !w.is_empty())
        .collect()
}

fn lower(word: &str) -> String {
    word.to_lowercase()
}

/// Whether a piece has words of its own, beyond question words, pronouns and filler.
fn has_content(piece: &str) -> bool {
    words(piece).iter().any(|w| {
        let w = lower(w);
        !WH_WORDS.contains(&w.as_str())
            && !PRONOUNS.contains(&w.as_str())
            && !FILLER.contains(&w.as_str())
            && !QUESTION_WORDS.contains(&w.as_str())
    })
}

/// Whether the piece names its subject by a pronoun.
fn has_pronoun(piece: &str) -> bool {
    words(piece)
        .iter()
        .any(|w| PRONOUNS.contains(&lower(w).as_str()))
}

/// A bare question phrase: a question word and at most two more words ("which port",
/// "how many hours"). Only a piece something follows can be one ("...and who wrote it" is
/// a question of its own).
fn is_bare_phrase(piece: &str) -> bool {
    let w = words(piece);
    !w.is_empty() && w.len() <= 3 && WH_WORDS.contains(&lower(w[0]).as_str())
}

/// The piece without its leading question phrase (a question word and the word after
/// it): "which protocol does the gateway use" → "does the gateway use".
fn without_question_phrase(piece: &str) -> String {
    let w = words(piece);
    match w.first() {
        Some(first) if WH_WORDS.contains(&lower(first).as_str()) => {
            let skip = if w.len() > 2 { 2 } else { w.len() };
            w[skip..].join(" ")
        }
        _ => w.join(" "),
    }
}

/// Cuts the question where a new question clearly starts.
fn pieces(question: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    // Sentences first: `?` and `;` end a question.
    for sentence in question.split_inclusive(['?', ';']) {
        let sentence = sentence.trim_matches(|c: char| c.is_whitespace() || c == ';');
        if sentence.is_empty() {
            continue;
        }
        let tokens: Vec<&str> = sentence.split_whitespace().collect();
        let mut current: Vec<&str> = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            let token = tokens[i];
            let next_is_wh = |j: usize| {
                tokens
                    .get(j)
                    .is_some_and(|t| WH_WORDS.contains(&lower(&clean(t)).as_str()))
            };
            // `, and ...`: the comma ends the previous clause.
            let comma_before = current.last().is_some_and(|t| t.ends_with(','));
            let cut = (token.eq_ignore_ascii_case("and") && (comma_before || next_is_wh(i + 1)))
                || (comma_before && WH_WORDS.contains(&lower(&clean(token)).as_str()));
            if cut && !current.is_empty() {
                out.push(join(&current));
                current.clear();
                if token.eq_ignore_ascii_case("and") {
                    i += 1;
                    continue;
                }
            }
            current.push(token);
            i += 1;
        }
        if !current.is_empty() {
            out.push(join(&current));
        }
    }
    out
}

fn clean(token: &str) -> String {
    token
        .trim_matches(|c: char| !c.is_alphanumeric() && c != '\'' && c != '-')
        .to_owned()
}

fn join(tokens: &[&str]) -> String {
    tokens
        .join(" ")
        .trim_end_matches([',', '?', ';', ' '])
        .to_owned()
}

/// The parts of a question, in order; one part (the whole question) when it does not
/// split.
pub fn question_parts(question: &str) -> Vec<QuestionPart> {
    let whole = || {
        vec![QuestionPart {
            text: question.trim().to_owned(),
            query: question_query(question),
        }]
    };
    // Pieces without words of their own stay with the part before them (or after, for
    // the first).
    let mut merged: Vec<String> = Vec::new();
    let mut pending = String::new();
    for piece in pieces(question) {
        if has_content(&piece) || is_bare_phrase(&piece) && merged.is_empty() {
            let piece = if pending.is_empty() {
                piece
            } else {
                format!("{} {piece}", std::mem::take(&mut pending))
            };
            merged.push(piece);
        } else if let Some(last) = merged.last_mut() {
            last.push_str(", ");
            last.push_str(&piece);
        } else {
            pending = piece;
        }
    }
    if !pending.is_empty() {
        merged.push(pending);
    }
    if merged.len() < 2 {
        return whole();
    }
    let mut parts = Vec::with_capacity(merged.len());
    for (i, text) in merged.iter().enumerate() {
        let mut query = text.clone();
        if i + 1 < merged.len() && is_bare_phrase(text) {
            // "which port [and which protocol does the gateway use]": the rest of the
            // next part is this one's too.
            if let Some(next) = merged.get(i + 1) {
                query = format!("{text} {}", without_question_phrase(next));
            }
        } else if has_pronoun(text) && i > 0 {
            // "...and who approved it": the subject is the previous part's.
            query = format!("{text} {}", without_question_phrase(&merged[i - 1]));
        }
        parts.push(QuestionPart {
            text: text.clone(),
            query: dedup_words(&question_query(&query)),
        });
    }
    parts
}

/// The words of a query, each once, without pronouns.
fn dedup_words(query: &str) -> String {
    let mut seen: Vec<String> = Vec::new();
    let mut out: Vec<&str> = Vec::new();
    for w in words(query) {
        let l = lower(w);
        if PRONOUNS.contains(&l.as_str()) || seen.contains(&l) {
            continue;
        }
        seen.push(l);
        out.push(w);
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(q: &str) -> Vec<String> {
        question_parts(q).into_iter().map(|p| p.text).collect()
    }

    fn queries(q: &str) -> Vec<String> {
        question_parts(q).into_iter().map(|p| p.query).collect()
    }

    #[test]
    fn a_plain_question_is_one_part() {
        assert_eq!(
            queries("Who designed the Quillon programming language?"),
            ["designed the Quillon programming language"]
        );
        // "and" inside a name or a list does not split.
        assert_eq!(texts("What do Marrowby and Halvard share?").len(), 1);
    }

    #[test]
    fn a_trailing_question_word_stays_with_its_part() {
        assert_eq!(
            texts("How many Heron robots were recalled in 2026, and why?"),
            ["How many Heron robots were recalled in 2026, and why?"]
        );
        assert_eq!(
            texts("Who discovered the planet Vessa, and where?").len(),
            1
        );
    }

    #[test]
    fn two_clauses_split_and_a_pronoun_borrows_the_subject() {
        let parts = question_parts(
            "Which port does the billing gateway listen on, and which protocol does it speak?",
        );
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0].text,
            "Which port does the billing gateway listen on"
        );
        assert_eq!(parts[1].text, "which protocol does it speak");
        assert!(parts[1].query.contains("billing gateway"), "{:?}", parts[1]);
        assert!(!parts[1].query.contains("port"), "{:?}", parts[1]);
    }

    #[test]
    fn a_bare_phrase_shares_the_rest_of_the_sentence() {
        let parts = question_parts("Which port and which protocol does the gateway use?");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].query, "port the gateway use");
        assert_eq!(parts[1].query, "protocol the gateway use");
    }

    #[test]
    fn separate_questions_split() {
        assert_eq!(
            texts("Who designed Quillon? What are the rings of Tallow called?"),
            [
                "Who designed Quillon",
                "What are the rings of Tallow called"
            ]
        );
        assert_eq!(
            texts("How often does the ferry leave and how long does the crossing take?"),
            [
                "How often does the ferry leave",
                "how long does the crossing take"
            ]
        );
    }
}
