//! Shared helpers: the research corpus and its questions, and a scripted model.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use plan_llm::{LlmError, Provider, Request, Response, Usage};
use serde::Deserialize;

pub fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/research-corpus")
}

#[derive(Deserialize)]
struct Questions {
    question: Vec<Question>,
}

#[derive(Deserialize, Clone)]
pub struct Question {
    pub id: String,
    pub query: String,
    #[serde(default)]
    pub second_query: Option<String>,
    pub files: Vec<String>,
    pub answer: String,
}

pub fn questions() -> Vec<Question> {
    let text = std::fs::read_to_string(corpus().join("questions.toml")).unwrap();
    toml::from_str::<Questions>(&text).unwrap().question
}

/// A model that replies with fixed texts in order and records every request.
#[derive(Clone, Default)]
pub struct Script {
    replies: Arc<Mutex<Vec<String>>>,
    pub requests: Arc<Mutex<Vec<Request>>>,
}

impl Script {
    pub fn new<S: Into<String>>(replies: impl IntoIterator<Item = S>) -> Self {
        let mut replies: Vec<String> = replies.into_iter().map(Into::into).collect();
        replies.reverse();
        Self {
            replies: Arc::new(Mutex::new(replies)),
            requests: Arc::default(),
        }
    }

    pub fn request(&self, i: usize) -> Request {
        self.requests.lock().unwrap()[i].clone()
    }
}

#[async_trait]
impl Provider for Script {
    fn name(&self) -> &str {
        "script"
    }
    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        self.requests.lock().unwrap().push(request.clone());
        let reply = self
            .replies
            .lock()
            .unwrap()
            .pop()
            .expect("the script ran out of replies");
        Ok(Response::text(reply, Usage::new(10, 5)))
    }
}
