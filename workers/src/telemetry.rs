//! Logging and OpenTelemetry set-up.
//!
//! Logs: human lines by default, JSON behind `--log-format json`, on stderr so that command
//! output on stdout stays clean for pipes. The AWS SDK and the HTTP and TLS crates under it
//! are capped at `debug` whatever the filter says ([`wire_crate`]): at `trace` the SDK logs
//! each request and response whole, and those bodies hold the passphrase and the exported
//! key (`PutSecretValue`, `ExportCertificate`, `GetSecretValue`).
//!
//! Traces and metrics: exported over OTLP (HTTP, JSON encoding) when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (`OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`
//! are honoured); when it is unset nothing is installed and nothing is paid. The engine
//! makes one trace per job across every worker; the AWS SDK's own spans (one per call and
//! per attempt, with service and operation) are exported as its children. Only spans and
//! info-level events are exported — never debug payloads.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Level;
use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::Registry;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::cli::LogFormat;

/// Keeps the exporters alive; flushes them when dropped (at exit).
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(t) = self.tracer.take() {
            if let Err(e) = t.shutdown() {
                eprintln!("warning: flushing traces failed: {e}");
            }
        }
        if let Some(m) = self.meter.take() {
            if let Err(e) = m.shutdown() {
                eprintln!("warning: flushing metrics failed: {e}");
            }
        }
    }
}

/// A layer of the subscriber, boxed so that the layers in use go in one `Vec`.
type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs logging, and OpenTelemetry when configured. Call before starting the async
/// runtime (the OTLP exporter uses a blocking HTTP client on its own thread).
///
/// The layers go in a `Vec` holding only those in use, never an `Option` that is `None`:
/// an absent layer would count as interested in every callsite, so that each of the AWS
/// SDK's and hyper's disabled debug and trace lines would ask the filters again at every
/// call instead of being switched off once (about 5 % of a busy worker's CPU).
pub(crate) fn init(format: LogFormat, filter: &str) -> Telemetry {
    let mut layers = vec![log_layer(format, filter, std::io::stderr)];
    let mut telemetry = Telemetry {
        tracer: None,
        meter: None,
    };
    let enabled = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|v| !v.trim().is_empty());
    if enabled {
        match providers() {
            Ok((tracer, meter)) => {
                let layer = tracing_opentelemetry::layer()
                    .with_tracer(tracer.tracer("certflow"))
                    .with_filter(filter_fn(|meta| {
                        // Spans: the engine's (info), and the AWS SDK's per call (`SSM.SendCommand`,
                        // with rpc.service and rpc.method) and per attempt (`try_attempt`),
                        // which are debug. Events: info and above only.
                        let level = *meta.level();
                        if meta.is_span() {
                            let target = meta.target();
                            level <= Level::INFO
                                || (level == Level::DEBUG
                                    && (target.starts_with("aws_sdk_")
                                        || (target.starts_with("aws_smithy_runtime")
                                            && meta.name() == "try_attempt")))
                        } else {
                            level <= Level::INFO
                        }
                    }));
                opentelemetry::global::set_meter_provider(meter.clone());
                telemetry.tracer = Some(tracer);
                telemetry.meter = Some(meter);
                layers.push(layer.boxed());
            }
            Err(e) => eprintln!("warning: OpenTelemetry export is off: {e}"),
        }
    }
    // A second init (tests calling main twice) is harmless: keep the first.
    let _ = tracing_subscriber::registry().with(layers).try_init();
    telemetry
}

/// The log lines under `directives` (an invalid filter falls back to `info`), in `format`,
/// to `writer`; the [`wire_crate`]s capped at `debug` whatever the directives say.
fn log_layer<W>(format: LogFormat, directives: &str, writer: W) -> BoxedLayer
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info"));
    // No directive (`trace`, `aws_smithy_runtime=trace`) can switch on the wire crates'
    // trace logs: the cap is a second filter every log line must also pass.
    let filter = filter.and(filter_fn(under_cap));
    match format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    }
}

/// Whether a log line of this target and level may be written at all: the
/// [`wire_crate`]s only up to `debug`, everything else as the filter decides.
fn under_cap(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() <= Level::DEBUG || !wire_crate(meta.target())
}

/// The crates that see request and response bodies: the AWS SDK (`aws_sdk_*`,
/// `aws_smithy_*`, `aws_config`, `aws_sigv4`, `aws_runtime`, … — every `aws_` crate) and the
/// HTTP and TLS stack under it (`hyper*`, `h2`, `rustls`, `tokio_rustls`, `reqwest`,
/// `tower*`, `http_body*`). At `debug` they log no bodies (checked against the SDK's
/// sources: endpoint, retry and timeout settings, attempt numbers, errors' codes).
pub(crate) fn wire_crate(target: &str) -> bool {
    let krate = target.split("::").next().unwrap_or(target);
    let family = |name: &str| krate == name || krate.starts_with(&format!("{name}_"));
    krate.starts_with("aws_")
        || [
            "hyper",
            "h2",
            "rustls",
            "tokio_rustls",
            "reqwest",
            "tower",
            "http_body",
        ]
        .into_iter()
        .any(family)
}

fn providers() -> Result<(SdkTracerProvider, SdkMeterProvider), String> {
    let resource = Resource::builder().build();
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .build()
        .map_err(|e| format!("span exporter: {e}"))?;
    let tracer = SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(resource.clone())
        .build();
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .build()
        .map_err(|e| format!("metric exporter: {e}"))?;
    let meter = SdkMeterProvider::builder()
        .with_periodic_exporter(metrics)
        .with_resource(resource)
        .build();
    Ok((tracer, meter))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing::callsite::{Callsite, Identifier};
    use tracing::field::FieldSet;
    use tracing::metadata::Kind;
    use tracing::subscriber::Interest;
    use tracing::{Metadata, Subscriber};

    use super::*;

    #[test]
    fn the_wire_crates_are_the_sdk_and_the_http_stack() {
        for t in [
            "aws_smithy_runtime::client::orchestrator",
            "aws_smithy_runtime_api::client",
            "aws_smithy_http_client::hyper_legacy",
            "aws_smithy_http",
            "aws_sdk_secretsmanager::operation",
            "aws_config::imds",
            "aws_sigv4::http_request::sign",
            "aws_runtime::auth",
            "hyper",
            "hyper::proto::h1::io",
            "hyper_util::client::legacy",
            "hyper_rustls",
            "h2::codec",
            "rustls::client::hs",
            "tokio_rustls",
            "reqwest::connect",
        ] {
            assert!(wire_crate(t), "{t}");
        }
        for t in [
            "engine::worker",
            "certflow::service",
            "workflows",
            "hyperion",
            "h2o",
            "awsome",
        ] {
            assert!(!wire_crate(t), "{t}");
        }
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// What is logged under `directives`, built as [`init`] builds it.
    fn logged(directives: &str) -> String {
        let out = Captured::default();
        let subscriber = tracing_subscriber::registry().with(vec![log_layer(
            LogFormat::Human,
            directives,
            out.clone(),
        )]);
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: "aws_smithy_runtime::client::orchestrator", "SECRET-BODY transmitting request");
            tracing::trace!(target: "aws_sigv4::http_request::sign", "SECRET-SIGNING");
            tracing::trace!(target: "hyper::proto::h1::io", "SECRET-BYTES");
            tracing::debug!(target: "aws_smithy_runtime::client::orchestrator", "beginning attempt #1");
            tracing::trace!(target: "engine::worker::task", "engine trace line");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text
    }

    /// A callsite standing for one log line of `target` at `level`.
    struct Site(&'static Metadata<'static>);

    impl Callsite for Site {
        fn set_interest(&self, _: Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            self.0
        }
    }

    macro_rules! line_at {
        ($target:literal, $level:expr) => {{
            static SITE: Site = Site(&META);
            static META: Metadata<'static> = Metadata::new(
                "line",
                $target,
                $level,
                None,
                None,
                None,
                FieldSet::new(&[], Identifier(&SITE)),
                Kind::EVENT,
            );
            &META
        }};
    }

    #[test]
    fn disabled_lines_are_switched_off_once_not_asked_at_every_call() {
        let subscriber = tracing_subscriber::registry().with(vec![log_layer(
            LogFormat::Human,
            "info",
            std::io::sink,
        )]);
        let sdk_debug = line_at!("aws_smithy_runtime::client::orchestrator", Level::DEBUG);
        let hyper_trace = line_at!("hyper::proto::h1::io", Level::TRACE);
        let engine_info = line_at!("engine::worker", Level::INFO);
        // `never`, not `sometimes`: a `sometimes` callsite runs the filters at each call.
        assert!(subscriber.register_callsite(sdk_debug).is_never());
        assert!(subscriber.register_callsite(hyper_trace).is_never());
        assert!(subscriber.register_callsite(engine_info).is_always());
    }

    #[test]
    fn no_filter_switches_on_the_sdks_trace_logs() {
        for directives in [
            "trace",
            "aws_smithy_runtime=trace",
            "aws_smithy_runtime::client::orchestrator=trace,hyper=trace,aws_sigv4=trace",
            "info,aws_smithy_runtime=trace,hyper=trace",
        ] {
            let text = logged(directives);
            assert!(!text.contains("SECRET"), "{directives}: {text}");
        }
        let all = logged("trace");
        assert!(
            all.contains("beginning attempt #1"),
            "the SDK's debug lines stay: {all}"
        );
        assert!(
            all.contains("engine trace line"),
            "other crates keep trace: {all}"
        );
        assert!(logged("aws_smithy_runtime=debug").contains("beginning attempt #1"));
        assert!(!logged("info").contains("beginning attempt"));
    }
}
