//! A provider that replies from a script and records the requests (until plan-llm's
//! scripted model is available on this branch).

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use plan_llm::{LlmError, Provider, Request, Response, Usage};

pub struct Scripted {
    replies: Mutex<VecDeque<String>>,
    requests: Mutex<Vec<Request>>,
}

impl Scripted {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(replies: I) -> Self {
        Scripted {
            replies: Mutex::new(replies.into_iter().map(Into::into).collect()),
            requests: Mutex::new(Vec::new()),
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The user message of request `i`.
    pub fn prompt(&self, i: usize) -> String {
        self.requests()[i].messages.last().unwrap().content.clone()
    }
}

#[async_trait]
impl Provider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        self.requests.lock().unwrap().push(request.clone());
        let reply = self
            .replies
            .lock()
            .unwrap()
            .pop_front()
            .expect("the script ran out of replies");
        Ok(Response::text(reply, Usage::new(10, 5)))
    }
}
