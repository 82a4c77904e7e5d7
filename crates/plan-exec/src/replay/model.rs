//! [`JournaledModel`]: a model whose calls are recorded or replayed (see the module docs).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt as _;
use plan_core::CallKind;
use plan_llm::{Capabilities, Chunk, ChunkStream, LlmError, Provider, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Call, Recorder, call};

/// `inner`, with each call recorded in the run's journal while a run records, and served
/// from the recording while a run is replayed (the model is then never called). Outside
/// both it is `inner`. Agents wrap every model they use in it.
pub struct JournaledModel {
    inner: Arc<dyn Provider>,
}

impl JournaledModel {
    /// Wraps `inner`.
    pub fn wrap(inner: Arc<dyn Provider>) -> Arc<dyn Provider> {
        Arc::new(Self { inner })
    }

    /// What answers: the model's name and capabilities, recorded with each reply so a
    /// replay's stand-in model can say the same ([`ReplayModel`]), and the tools the
    /// request offered, so a replay can offer the same without starting their servers
    /// ([`Replayer::tool_specs`](super::Replayer::tool_specs)).
    fn about(&self, request: &Request) -> Value {
        let caps = self.inner.capabilities();
        let mut about = json!({
            "name": self.inner.name(),
            "capabilities": {
                "streaming": caps.streaming,
                "json_schema": caps.json_schema,
                "json_object": caps.json_object,
                "tools": caps.tools,
            },
        });
        if !request.tools.is_empty() {
            about["tools"] = json!(request.tools);
        }
        about
    }
}

/// The model a replayed run is built with in place of its own: it has the name and
/// capabilities the run's model had (from the recording: those its next call was shaped
/// by), so the run's requests come out the same, and it answers nothing itself: every
/// call is served from the recording by [`JournaledModel`] above it.
pub struct ReplayModel {
    name: String,
    replayer: Arc<super::Replayer>,
}

impl ReplayModel {
    /// The stand-in for the model named `name` in `replayer`'s recording (the run's first
    /// model when no recorded call names it).
    pub fn new(name: impl Into<String>, replayer: Arc<super::Replayer>) -> Self {
        Self {
            name: name.into(),
            replayer,
        }
    }
}

#[async_trait]
impl Provider for ReplayModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        self.replayer.capabilities(&self.name)
    }

    async fn complete(&self, _request: &Request) -> Result<Response, LlmError> {
        Err(LlmError::Config(
            "replay makes no model calls, and this one was not served from the recording"
                .to_owned(),
        ))
    }
}

/// What the key of a model call covers: the request, and whether it was streamed.
#[derive(Serialize)]
struct Keyed<'a> {
    stream: bool,
    request: &'a Request,
}

/// A streamed reply as recorded: its chunks, and the error that ended it, if one did.
#[derive(Default, Serialize, Deserialize)]
struct Streamed {
    chunks: Vec<Chunk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<LlmError>,
}

fn purpose(request: &Request) -> String {
    request
        .purpose
        .as_ref()
        .map_or_else(|| "call".to_owned(), |p| p.as_str().to_owned())
}

fn diverged(d: &super::Divergence) -> LlmError {
    LlmError::Config(format!("replay: {d}"))
}

#[async_trait]
impl Provider for JournaledModel {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        let keyed = Keyed {
            stream: false,
            request,
        };
        match call::<_, Response, LlmError>(CallKind::Model, &purpose(request), &keyed, diverged) {
            Call::Served(reply) => reply,
            Call::Make(recorder) => {
                // What the caller saw when it shaped the request.
                let about = recorder.is_on().then(|| self.about(request));
                let reply = self.inner.complete(request).await;
                recorder.done_with(&reply, about);
                reply
            }
        }
    }

    async fn stream(&self, request: &Request) -> Result<ChunkStream, LlmError> {
        let keyed = Keyed {
            stream: true,
            request,
        };
        match call::<_, Streamed, LlmError>(CallKind::Model, &purpose(request), &keyed, diverged) {
            Call::Served(reply) => {
                let Streamed { chunks, error } = reply?;
                let items = chunks.into_iter().map(Ok).chain(error.map(Err));
                Ok(Box::pin(futures::stream::iter(items)))
            }
            Call::Make(recorder) => {
                if !recorder.is_on() {
                    return self.inner.stream(request).await;
                }
                // What the caller saw when it shaped the request.
                let about = self.about(request);
                match self.inner.stream(request).await {
                    Err(e) => {
                        recorder.done_with::<Streamed, _>(&Err(e.clone()), Some(about));
                        Err(e)
                    }
                    Ok(stream) => Ok(recorded_stream(stream, recorder, about)),
                }
            }
        }
    }
}

/// `stream`, recording its chunks once it ends: at its `Finish` chunk, an error, or its
/// end, whichever comes first (a stream dropped before any of them was not a whole reply,
/// and is not recorded).
fn recorded_stream(stream: ChunkStream, recorder: Recorder, about: Value) -> ChunkStream {
    type State = (Streamed, Option<(Recorder, Value)>);
    fn finish(s: &mut State) {
        if let Some((recorder, about)) = s.1.take() {
            let streamed = std::mem::take(&mut s.0);
            recorder.done_with::<_, LlmError>(&Ok(streamed), Some(about));
        }
    }
    let state = Arc::new(Mutex::new((Streamed::default(), Some((recorder, about)))));
    let at_end = state.clone();
    let chunks = stream.map(move |item| {
        let mut s = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &item {
            Ok(chunk) => {
                // Text is kept in one piece: a replay streams it at once, as a server
                // that buffers would (the recording is a tenth of the size).
                match (s.0.chunks.last_mut(), chunk) {
                    (Some(Chunk::Text(text)), Chunk::Text(more)) => text.push_str(more),
                    _ => s.0.chunks.push(chunk.clone()),
                }
                if matches!(chunk, Chunk::Finish(_)) {
                    finish(&mut s);
                }
            }
            Err(e) => {
                s.0.error = Some(e.clone());
                finish(&mut s);
            }
        }
        item
    });
    Box::pin(chunks.chain(futures::stream::poll_fn(move |_| {
        finish(
            &mut at_end
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        std::task::Poll::Ready(None)
    })))
}
