//! Where the libraries' `tracing` spans and diagnostics go: stderr when `RUST_LOG` asks for
//! them (e.g. `RUST_LOG=plan_strategies=debug` shows rejected plan replies), and an
//! OpenTelemetry collector over OTLP (HTTP/protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, configured by the standard `OTEL_*`
//! variables (headers, timeout, service name, resource attributes). The export is flushed
//! before the process exits.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// The crates whose spans are exported (not the HTTP stack's).
const TRACED_CRATES: [&str; 6] = [
    "plan_core",
    "plan_llm",
    "plan_exec",
    "plan_strategies",
    "plan_llm_local",
    "plan_worker",
];

/// The installed exporters; [`shutdown`](Self::shutdown) flushes them.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the subscriber for this process. Diagnostics go to stderr when `RUST_LOG`
    /// asks for them, else by the `default` filter when a command has one (`plan worker`
    /// logs its claims).
    pub fn init(default: Option<&str>) -> Telemetry {
        let filter = match std::env::var("RUST_LOG") {
            Ok(v) if !v.is_empty() => Some(EnvFilter::from_default_env()),
            _ => default.map(EnvFilter::new),
        };
        let stderr = filter.map(|filter| {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(crate::style::stderr_colours())
                .with_filter(filter)
        });
        let provider = otlp_wanted().then(otlp_provider).and_then(|built| {
            built
                .map_err(|e| eprintln!("warning: traces will not be exported: {e}"))
                .ok()
        });
        let otel = provider.as_ref().map(|provider| {
            let targets = TRACED_CRATES.iter().fold(Targets::new(), |t, krate| {
                t.with_target(*krate, Level::INFO)
            });
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("plan"))
                .with_filter(targets)
        });
        let _ = tracing_subscriber::registry()
            .with(stderr)
            .with(otel)
            .try_init();
        Telemetry { provider }
    }

    /// Sends what is still buffered and stops the exporters.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: exporting traces failed: {e}");
        }
    }
}

fn otlp_wanted() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()))
        && std::env::var("OTEL_TRACES_EXPORTER").map_or(true, |v| v != "none")
}

fn otlp_provider() -> anyhow::Result<SdkTracerProvider> {
    if let Ok(protocol) = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL")
        && !protocol.is_empty()
        && protocol != "http/protobuf"
    {
        anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported; plan exports http/protobuf (unset it or set http/protobuf)"
        );
    }
    // https collectors: rustls on the ring provider (the process default, installed once).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("plan");
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}
