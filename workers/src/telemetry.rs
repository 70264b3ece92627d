//! Logging and OpenTelemetry set-up.
//!
//! Logs: human lines by default, JSON behind `--log-format json`, on stderr so that command
//! output on stdout stays clean for pipes.
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
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
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

/// Installs logging, and OpenTelemetry when configured. Call before starting the async
/// runtime (the OTLP exporter uses a blocking HTTP client on its own thread).
pub(crate) fn init(format: LogFormat, filter: &str) -> Telemetry {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let human = (format == LogFormat::Human)
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
    });
    let logs = human
        .with_filter(filter.clone())
        .and_then(json.with_filter(filter));

    let mut telemetry = Telemetry {
        tracer: None,
        meter: None,
    };
    let enabled = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|v| !v.trim().is_empty());
    let otel = if enabled {
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
                Some(layer)
            }
            Err(e) => {
                eprintln!("warning: OpenTelemetry export is off: {e}");
                None
            }
        }
    } else {
        None
    };
    // A second init (tests calling main twice) is harmless: keep the first.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(otel)
        .try_init();
    telemetry
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
