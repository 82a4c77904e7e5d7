//! [`Tokenizer`]: the model's byte-level BPE tokenizer, rebuilt from the GGUF metadata.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

use crate::error::LocalError;

/// GGUF token type of control (special) tokens.
const TOKEN_TYPE_CONTROL: i32 = 3;

/// The model's tokenizer, rebuilt from the `tokenizer.ggml.*` metadata of a GGUF file:
/// byte-level BPE over `tokens` and `merges`, digits split one by one, and the control
/// tokens (`token_type == 3`, e.g. `<|im_start|>`) matched whole in text.
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    specials: Arc<HashMap<u32, String>>,
    /// The bytes each token stands for (control tokens: a 0xFF marker and their name).
    token_bytes: Arc<Vec<Vec<u8>>>,
    eos: u32,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("eos", &self.eos)
            .finish()
    }
}

impl Tokenizer {
    /// Reads the tokenizer of a GGUF model file.
    ///
    /// # Errors
    /// [`LocalError::Load`] when the file cannot be read, [`LocalError::Tokenizer`] when its
    /// tokenizer metadata is missing or not byte-level BPE.
    pub fn from_gguf_file(path: &Path) -> Result<Self, LocalError> {
        let load = |message: String| LocalError::Load {
            path: path.to_path_buf(),
            message,
        };
        let mut file = std::fs::File::open(path).map_err(|e| load(e.to_string()))?;
        let content = Content::read(&mut file).map_err(|e| load(e.to_string()))?;
        Self::from_gguf(&content)
    }

    pub(crate) fn from_gguf(content: &Content) -> Result<Self, LocalError> {
        let json = tokenizer_json(&content.metadata)?;
        let inner = tokenizers::Tokenizer::from_bytes(json.as_bytes())
            .map_err(|e| LocalError::Tokenizer(e.to_string()))?;
        let tokens = string_array(&content.metadata, "tokenizer.ggml.tokens")?;
        let types = int_array(&content.metadata, "tokenizer.ggml.token_type")?;
        let specials = tokens
            .iter()
            .zip(types.iter())
            .enumerate()
            .filter(|(_, (_, t))| **t == TOKEN_TYPE_CONTROL)
            .map(|(i, (s, _))| (i as u32, s.clone()))
            .collect::<HashMap<_, _>>();
        let eos = match content.metadata.get("tokenizer.ggml.eos_token_id") {
            Some(v) => v
                .to_u32()
                .map_err(|e| LocalError::Tokenizer(format!("eos_token_id: {e}")))?,
            None => inner
                .token_to_id("<|im_end|>")
                .ok_or_else(|| LocalError::Tokenizer("no end-of-sequence token".into()))?,
        };
        if eos as usize >= tokens.len() {
            return Err(LocalError::Tokenizer(format!(
                "eos_token_id {eos} is outside the vocabulary ({} tokens)",
                tokens.len()
            )));
        }
        let decode = byte_decoder();
        let token_bytes = tokens
            .iter()
            .zip(types.iter())
            .map(|(t, ty)| {
                if *ty == TOKEN_TYPE_CONTROL {
                    let mut b = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    b.extend_from_slice(t.as_bytes());
                    b
                } else {
                    let mut b = Vec::with_capacity(t.len());
                    for ch in t.chars() {
                        match decode.get(&ch) {
                            Some(byte) => b.push(*byte),
                            None => {
                                let mut buf = [0u8; 4];
                                b.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            }
                        }
                    }
                    b
                }
            })
            .collect();
        Ok(Self {
            inner: Arc::new(inner),
            specials: Arc::new(specials),
            token_bytes: Arc::new(token_bytes),
            eos,
        })
    }

    /// Encodes text; control tokens written in the text (e.g. `<|im_start|>`) become their
    /// single token.
    ///
    /// # Errors
    /// [`LocalError::Tokenizer`] if encoding fails.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LocalError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| LocalError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes tokens back into text, control tokens included.
    ///
    /// # Errors
    /// [`LocalError::Tokenizer`] if a token is out of range.
    pub fn decode(&self, tokens: &[u32]) -> Result<String, LocalError> {
        self.inner
            .decode(tokens, false)
            .map_err(|e| LocalError::Tokenizer(e.to_string()))
    }

    /// The id of a token given its text form, e.g. `<|im_end|>`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Whether a token is a control token (`token_type == 3`).
    pub fn is_special(&self, token: u32) -> bool {
        self.specials.contains_key(&token)
    }

    /// The end-of-sequence token the model ends its turn with.
    pub fn eos_token(&self) -> u32 {
        self.eos
    }

    /// How many tokens the vocabulary has.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The token environment llguidance works with: a trie over every token's bytes,
    /// padded to the model's `n_vocab`, ending the text at any of `eos_tokens`.
    pub(crate) fn tok_env(&self, n_vocab: usize, eos_tokens: &[u32]) -> Result<TokEnv, LocalError> {
        let mut words = self.token_bytes.as_ref().clone();
        if n_vocab < words.len() {
            return Err(LocalError::Tokenizer(format!(
                "the model has {n_vocab} outputs but the tokenizer {} tokens",
                words.len()
            )));
        }
        while words.len() < n_vocab {
            let mut name = format!("<[{}]>", words.len()).into_bytes();
            name.insert(0, TokTrie::SPECIAL_TOKEN_MARKER);
            words.push(name);
        }
        let (&first, _) = eos_tokens
            .split_first()
            .ok_or_else(|| LocalError::Tokenizer("no end-of-turn token".to_owned()))?;
        if eos_tokens.iter().any(|&t| t as usize >= n_vocab) {
            return Err(LocalError::Tokenizer(
                "an end-of-turn token is outside the vocabulary".to_owned(),
            ));
        }
        let info = TokRxInfo::new(n_vocab as u32, first);
        let trie = TokTrie::from(&info, &words).with_eos_tokens(eos_tokens);
        Ok(Arc::new(GgufTokEnv {
            trie,
            hf: Arc::clone(&self.inner),
        }))
    }
}

/// [`TokenizerEnv`] over the GGUF vocabulary, encoding text with the rebuilt tokenizer.
struct GgufTokEnv {
    trie: TokTrie,
    hf: Arc<tokenizers::Tokenizer>,
}

impl TokenizerEnv for GgufTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |text| {
            match self.hf.encode(text, false) {
                Ok(enc) => enc.get_ids().to_vec(),
                // Encoding plain text does not fail for BPE; fall back to bytes if it does.
                Err(_) => self.trie.greedy_tokenize(text.as_bytes()),
            }
        })
    }
}

/// GPT-2's byte-level alphabet, reversed: the printable character that stands for each
/// byte in token strings, mapped back to the byte.
fn byte_decoder() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = ('!' as u32..='~' as u32)
        .chain('¡' as u32..='¬' as u32)
        .chain('®' as u32..='ÿ' as u32)
        .collect();
    let mut chars = printable.clone();
    let mut extra = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    printable
        .into_iter()
        .zip(chars)
        .filter_map(|(b, c)| Some((char::from_u32(c)?, u8::try_from(b).ok()?)))
        .collect()
}

fn string_array(md: &HashMap<String, Value>, key: &str) -> Result<Vec<String>, LocalError> {
    let values = md
        .get(key)
        .ok_or_else(|| LocalError::Tokenizer(format!("the model has no {key}")))?
        .to_vec()
        .map_err(|e| LocalError::Tokenizer(format!("{key}: {e}")))?;
    values
        .iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|e| LocalError::Tokenizer(format!("{key}: {e}")))
        })
        .collect()
}

fn int_array(md: &HashMap<String, Value>, key: &str) -> Result<Vec<i32>, LocalError> {
    let values = md
        .get(key)
        .ok_or_else(|| LocalError::Tokenizer(format!("the model has no {key}")))?
        .to_vec()
        .map_err(|e| LocalError::Tokenizer(format!("{key}: {e}")))?;
    values
        .iter()
        .map(|v| {
            v.to_i32()
                .or_else(|_| v.to_u32().map(|u| u as i32))
                .map_err(|e| LocalError::Tokenizer(format!("{key}: {e}")))
        })
        .collect()
}

/// A `tokenizer.json` document equivalent to the GGUF metadata, so the well-tested
/// `tokenizers` crate (and llguidance's bridge to it) does the work.
fn tokenizer_json(md: &HashMap<String, Value>) -> Result<String, LocalError> {
    let model = md
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
        .unwrap_or("gpt2");
    if model != "gpt2" {
        return Err(LocalError::Tokenizer(format!(
            "tokenizer model {model:?} is not supported (only byte-level BPE, \"gpt2\")"
        )));
    }
    let tokens = string_array(md, "tokenizer.ggml.tokens")?;
    let types = int_array(md, "tokenizer.ggml.token_type")?;
    let merges = string_array(md, "tokenizer.ggml.merges")?;
    if types.len() != tokens.len() {
        return Err(LocalError::Tokenizer(format!(
            "{} tokens but {} token types",
            tokens.len(),
            types.len()
        )));
    }
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::Value::from(i)))
        .collect();
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .zip(types.iter())
        .enumerate()
        .filter(|(_, (_, t))| **t == TOKEN_TYPE_CONTROL)
        .map(|(i, (content, _))| {
            serde_json::json!({
                "id": i, "content": content, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            ],
        },
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "vocab": vocab,
            "merges": merges,
        },
    });
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_decoder_covers_every_byte_once() {
        let d = byte_decoder();
        assert_eq!(d.len(), 256);
        assert_eq!(d[&'Ġ'], b' ');
        assert_eq!(d[&'Ċ'], b'\n');
        assert_eq!(d[&'a'], b'a');
    }
}
