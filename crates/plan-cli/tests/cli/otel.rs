//! Traces through the binary: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, `plan` exports one
//! trace per run over OTLP/HTTP (protobuf) to a receiver in this test, which decodes the
//! export requests and checks the span tree and its GenAI attributes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::Value;

use super::support::*;
use plan_llm::testing::FakeReply;

/// An OTLP/HTTP trace receiver on loopback that keeps every request body.
#[derive(Clone)]
pub(crate) struct Receiver {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

async fn export(State(bodies): State<Arc<Mutex<Vec<Vec<u8>>>>>, body: Bytes) -> &'static str {
    bodies.lock().unwrap().push(body.to_vec());
    ""
}

impl Receiver {
    pub(crate) fn start() -> Receiver {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let state = bodies.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let app = Router::new()
                    .route("/v1/traces", post(export))
                    .with_state(state);
                axum::serve(listener, app).await.unwrap();
            });
        });
        Receiver {
            addr: rx.recv().unwrap(),
            bodies,
        }
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn raw(&self) -> Vec<u8> {
        self.bodies.lock().unwrap().concat()
    }

    pub(crate) fn spans(&self) -> Vec<Span> {
        let mut spans = Vec::new();
        for body in self.bodies.lock().unwrap().iter() {
            let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
            for rs in request.resource_spans {
                for ss in rs.scope_spans {
                    spans.extend(ss.spans);
                }
            }
        }
        spans
    }
}

pub(crate) fn attr(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?;
    Some(match value.value.as_ref()? {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        AnyValue::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

fn op(span: &Span) -> String {
    attr(span, "gen_ai.operation.name").unwrap_or_default()
}

fn traced_exec(
    sb: &Sandbox,
    receiver: &Receiver,
    server_flags: Vec<String>,
    capture: bool,
) -> Value {
    let plan = sb.write("plan.json", DIAMOND);
    let mut cmd = sb.plan(
        ["exec".into(), plan.display().to_string(), "--json".into()]
            .into_iter()
            .chain(server_flags),
    );
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint());
    if capture {
        cmd.env("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true");
    }
    let out = output(&mut cmd);
    expect_code(&out, 0);
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[test]
fn a_run_is_one_trace_of_genai_spans() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    let receiver = Receiver::start();
    let report = traced_exec(&sb, &receiver, model_flags(&server), false);
    let spans = receiver.spans();
    assert!(!spans.is_empty(), "no spans were exported");

    // One trace, one root: the run.
    let trace = &spans[0].trace_id;
    assert!(
        spans.iter().all(|s| &s.trace_id == trace),
        "more than one trace"
    );
    let roots: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(
        roots.len(),
        1,
        "roots: {:?}",
        roots.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let root = roots[0];
    assert_eq!(op(root), "invoke_workflow");
    assert_eq!(
        attr(root, "plan.run.id").as_deref(),
        report["run_id"].as_str()
    );
    let by_id: HashMap<&[u8], &Span> = spans.iter().map(|s| (s.span_id.as_slice(), s)).collect();

    // A step span per step, under the run, named by its agent.
    let steps: Vec<&Span> = spans.iter().filter(|s| op(s) == "invoke_agent").collect();
    let mut ids: Vec<String> = steps
        .iter()
        .filter_map(|s| attr(s, "plan.step.id"))
        .collect();
    ids.sort();
    assert_eq!(ids, ["a", "b", "c"]);
    for step in &steps {
        assert_eq!(step.parent_span_id, root.span_id);
        assert_eq!(attr(step, "gen_ai.agent.name").as_deref(), Some("default"));
    }

    // Each model call is a `chat` span with model, provider and usage, inside a step (the
    // steps' calls) or the run (the synthesis).
    let chats: Vec<&Span> = spans.iter().filter(|s| op(s) == "chat").collect();
    assert_eq!(chats.len(), 4, "three steps and the synthesis");
    for chat in &chats {
        assert_eq!(
            attr(chat, "gen_ai.request.model").as_deref(),
            Some("fake-model")
        );
        assert_eq!(
            attr(chat, "gen_ai.provider.name").as_deref(),
            Some("openai")
        );
        let tokens: u64 = attr(chat, "gen_ai.usage.input_tokens")
            .unwrap()
            .parse()
            .unwrap();
        assert!(tokens > 0);
        assert!(attr(chat, "gen_ai.usage.output_tokens").is_some());
        let parent = by_id[chat.parent_span_id.as_slice()];
        assert!(matches!(
            op(parent).as_str(),
            "invoke_agent" | "invoke_workflow"
        ));
        assert!(
            attr(chat, "gen_ai.input.messages").is_none(),
            "content is opt-in"
        );
    }

    // Neither the key nor the prompts leave the process.
    let raw = String::from_utf8_lossy(&receiver.raw()).into_owned();
    assert!(
        !raw.contains("sk-test-secret-0000"),
        "the API key was exported"
    );
    assert!(
        !raw.contains("Describe the first thing"),
        "a prompt was exported"
    );
}

#[test]
fn planning_and_failures_are_spans_and_content_is_opt_in() {
    let sb = Sandbox::new();
    let server = agent_server(DIAMOND);
    // `b` fails for good (400 is not retryable): its step span says so.
    server.on_first(&step_prompt("b"), FakeReply::error(400, "fake failure"));
    let receiver = Receiver::start();
    let plan_flags = model_flags(&server);
    let out = output(
        sb.plan(
            ["run", "Compare two things", "--json"]
                .into_iter()
                .map(String::from)
                .chain(plan_flags),
        )
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true"),
    );
    expect_code(&out, 1);
    let spans = receiver.spans();
    let root = spans.iter().find(|s| s.parent_span_id.is_empty()).unwrap();
    assert_eq!(attr(root, "error.type").as_deref(), Some("failed"));
    let planning = spans.iter().find(|s| op(s) == "plan").expect("a plan span");
    assert_eq!(planning.parent_span_id, root.span_id);
    assert_eq!(attr(planning, "plan.plan.steps").as_deref(), Some("3"));
    let planning_chat = spans
        .iter()
        .find(|s| op(s) == "chat" && s.parent_span_id == planning.span_id)
        .expect("the planning call inside the plan span");
    assert!(
        attr(planning_chat, "gen_ai.input.messages")
            .is_some_and(|m| m.contains("Compare two things")),
        "content was asked for"
    );
    let b = spans
        .iter()
        .find(|s| op(s) == "invoke_agent" && attr(s, "plan.step.id").as_deref() == Some("b"))
        .unwrap();
    assert_eq!(attr(b, "error.type").as_deref(), Some("fatal"));
    let b_chat = spans
        .iter()
        .find(|s| op(s) == "chat" && s.parent_span_id == b.span_id)
        .unwrap();
    assert_eq!(attr(b_chat, "error.type").as_deref(), Some("bad_request"));
    let raw = String::from_utf8_lossy(&receiver.raw()).into_owned();
    assert!(
        !raw.contains("sk-test-secret-0000"),
        "the API key was exported"
    );
}
