//! One trace per job, across every step and every worker, and the engine's metrics.
//!
//! A job's W3C `traceparent` is chosen when it is created (the producer's, when its message
//! carried one) and stored on the record (`TraceParent`); every task message carries it as
//! a `traceparent` message attribute; every worker parents its job span on it. With no
//! OpenTelemetry subscriber or meter provider installed, all of this costs next to nothing.

use std::sync::OnceLock;

use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The message attribute (and record attribute) name of the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// A `traceparent` for a new job: the current span's, if it belongs to a trace, else a
/// fresh trace.
pub fn new_trace_parent() -> String {
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        return format(&sc);
    }
    let mut trace = [0u8; 16];
    let mut span = [0u8; 8];
    rand::fill(&mut trace);
    rand::fill(&mut span);
    // An all-zero id is invalid; the odds are nil, but keep the value well-formed.
    trace[15] |= 1;
    span[7] |= 1;
    format!(
        "00-{}-{}-01",
        TraceId::from_bytes(trace),
        SpanId::from_bytes(span)
    )
}

fn format(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

/// Parses a W3C `traceparent` (`00-<trace>-<span>-<flags>`).
pub fn parse(traceparent: &str) -> Option<SpanContext> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let sc = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

/// Makes `span` a child of the job's trace.
pub(crate) fn join(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(sc) = traceparent.and_then(parse) {
        // Without an OpenTelemetry layer there is nothing to join: that is fine.
        let _ = span.set_parent(Context::new().with_remote_span_context(sc));
    }
}

/// The engine's instruments (no-ops until a meter provider is installed).
pub(crate) struct Metrics {
    pub(crate) jobs_started: Counter<u64>,
    pub(crate) jobs_finished: Counter<u64>,
    pub(crate) step_duration: Histogram<f64>,
    pub(crate) retries: Counter<u64>,
    pub(crate) start_lag: Histogram<f64>,
}

pub(crate) fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = opentelemetry::global::meter("certflow-engine");
        Metrics {
            jobs_started: meter
                .u64_counter("certflow.jobs.started")
                .with_description("Jobs created, by workflow")
                .build(),
            jobs_finished: meter
                .u64_counter("certflow.jobs.finished")
                .with_description("Jobs that reached a terminal status, by workflow and status")
                .build(),
            step_duration: meter
                .f64_histogram("certflow.step.duration")
                .with_unit("s")
                .with_description("Time one step attempt ran, by workflow, step and outcome")
                .build(),
            retries: meter
                .u64_counter("certflow.step.retries")
                .with_description(
                    "Step attempts that failed and were scheduled again, by error class",
                )
                .build(),
            start_lag: meter
                .f64_histogram("certflow.step.start_lag")
                .with_unit("s")
                .with_description("How late a due step started (queue and timer lag)")
                .build(),
        }
    })
}

/// Attributes for a workflow (and optionally step).
pub(crate) fn attrs(workflow: &str, extra: &[(&'static str, String)]) -> Vec<KeyValue> {
    let mut v = vec![KeyValue::new("workflow", workflow.to_string())];
    v.extend(extra.iter().map(|(k, val)| KeyValue::new(*k, val.clone())));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_trace_parents_are_well_formed_and_parse_back() {
        let tp = new_trace_parent();
        let sc = parse(&tp).expect("parses");
        assert_eq!(format(&sc), tp);
        assert_ne!(new_trace_parent(), tp);
        assert!(parse("00-00000000000000000000000000000000-0000000000000000-01").is_none());
        assert!(parse("garbage").is_none());
    }
}
