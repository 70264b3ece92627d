//! OpenTelemetry end to end: two `certflow worker` processes export over OTLP (HTTP/JSON)
//! to a collector in this test; one export job, started by the first worker and finished by
//! the second, must make one trace — every step span under one trace id, across both
//! workers — with the AWS calls as spans, and nothing secret in any exported byte.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certflow_tests::certflow::Env;
use certflow_tests::unique;
use certflow_tests::worker_process::{WorkerCommand, WorkerProcess};
use engine::backend::sqs::create_queue_with_dlq;
use engine::JobStatus;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// A minimal OTLP/HTTP collector: keeps every body posted to it, by path.
#[derive(Clone, Default)]
struct Collector {
    bodies: Arc<Mutex<Vec<(String, String)>>>,
}

impl Collector {
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = self.bodies.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let bodies = bodies.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let bodies = bodies.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            bodies
                                .lock()
                                .unwrap()
                                .push((path, String::from_utf8_lossy(&body).into_owned()));
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        format!("http://{addr}")
    }

    fn spans(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for (path, body) in self.bodies.lock().unwrap().iter() {
            if path != "/v1/traces" {
                continue;
            }
            let v: Value = serde_json::from_str(body).expect("OTLP JSON");
            for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    out.extend(ss["spans"].as_array().into_iter().flatten().cloned());
                }
            }
        }
        out
    }

    fn everything(&self) -> String {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn attr(span: &Value, key: &str) -> Option<String> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .and_then(|a| {
            let v = &a["value"];
            v["stringValue"]
                .as_str()
                .map(str::to_string)
                .or_else(|| v["intValue"].as_str().map(str::to_string))
                .or_else(|| v["intValue"].as_i64().map(|i| i.to_string()))
        })
}

fn worker(env: &Env, tasks: &str, otlp: &str, id: &str) -> WorkerProcess {
    let emulator = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (the emulator)");
    WorkerCommand::new(env, &emulator)
        .id(id)
        // Every wait through the task queue (none held in the task), so that the job
        // waits where the test can see it and hand it to the second worker.
        .args([
            "--poll-wait-secs",
            "1",
            "--shutdown-budget-secs",
            "5",
            "--hold-waits-ms",
            "0",
        ])
        .env("CERTFLOW_TASKS_QUEUE", tasks)
        .log_level("warn")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
        .env("OTEL_SERVICE_NAME", "certflow-test")
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "500")
        .spawn()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_is_one_trace_across_two_workers_and_no_secret_is_exported() {
    let env = Env::new().await;
    let collector = Collector::default();
    let otlp = collector.start().await;
    let tasks = unique("x-trace-tasks");
    create_queue_with_dlq(
        &aws_sdk_sqs::Client::new(&env.sdk),
        &tasks,
        Duration::from_secs(30),
        5,
    )
    .await
    .unwrap();
    let tag = unique("traced");
    env.instances(1, "Tier", &tag);
    let arn = env.certificate(true).await;
    env.allow(&arn, "Tier", &tag).await;

    // The first worker takes the job while the certificate is still pending validation…
    let mut first = worker(&env, &tasks, &otlp, "worker-one");
    let name = unique("traced");
    let id = env
        .submit(&format!(
            r#"{{"CertificateArn":"{arn}","CertName":"{name}","TargetTagKey":"Tier","TargetTagValue":"{tag}"}}"#
        ))
        .await;
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(rec) = env.jobs.get(&id).await {
            if rec.status == JobStatus::Waiting {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < until, "the job never waited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.stop(Duration::from_secs(30)).await;
    // …and the second finishes it.
    let mut second = worker(&env, &tasks, &otlp, "worker-two");
    let rec = env.wait(&id).await;
    second.stop(Duration::from_secs(30)).await;
    assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
    let trace_parent = rec.trace_parent.clone().expect("TraceParent on the record");

    let spans = collector.spans();
    let ours: Vec<&Value> = spans
        .iter()
        .filter(|s| attr(s, "job_id").as_deref() == Some(id.as_str()))
        .collect();
    let steps: Vec<&&Value> = ours.iter().filter(|s| s["name"] == "step").collect();
    assert!(steps.len() >= 5, "step spans exported: {}", steps.len());
    let trace_ids: std::collections::BTreeSet<&str> =
        ours.iter().filter_map(|s| s["traceId"].as_str()).collect();
    assert_eq!(trace_ids.len(), 1, "one trace for the job: {trace_ids:?}");
    let trace_id = *trace_ids.iter().next().unwrap();
    assert!(
        trace_parent.contains(&trace_id.to_ascii_lowercase()),
        "{trace_parent} vs {trace_id}"
    );
    let workers: std::collections::BTreeSet<String> = ours
        .iter()
        .filter(|s| s["name"] == "job")
        .filter_map(|s| attr(s, "worker"))
        .collect();
    assert!(
        workers.contains("worker-one") && workers.contains("worker-two"),
        "both workers took part: {workers:?}"
    );
    // The AWS calls are spans of the same trace, with service and operation.
    let calls: Vec<String> = spans
        .iter()
        .filter(|s| s["traceId"].as_str() == Some(trace_id))
        .filter_map(|s| {
            Some(format!(
                "{}.{}",
                attr(s, "rpc.service")?,
                attr(s, "rpc.method")?
            ))
        })
        .collect();
    for call in [
        "ACM.DescribeCertificate",
        "ACM.ExportCertificate",
        "SSM.SendCommand",
    ] {
        assert!(
            calls.iter().any(|c| c == call),
            "{call} not among {calls:?}"
        );
    }

    // Each attempt of a call is a span too, numbered.
    let attempts: Vec<String> = spans
        .iter()
        .filter(|s| s["traceId"].as_str() == Some(trace_id) && s["name"] == "try_attempt")
        .filter_map(|s| attr(s, "attempt"))
        .collect();
    assert!(
        attempts.len() >= calls.len() && attempts.iter().any(|a| a == "1"),
        "{} calls, attempts {attempts:?}",
        calls.len()
    );

    // Nothing secret in any exported byte (spans, events, attributes, metrics).
    let sm = aws_sdk_secretsmanager::Client::new(&env.sdk);
    let secret = sm
        .get_secret_value()
        .secret_id(env.secret_name(&name, "Tier", &tag))
        .send()
        .await
        .unwrap();
    let secret: Value = serde_json::from_str(secret.secret_string().unwrap()).unwrap();
    let exported = collector.everything();
    assert!(!exported.contains("BEGIN") && !exported.contains("PRIVATE KEY"));
    assert!(!exported.contains(secret["passphrase"].as_str().unwrap()));
    for line in secret["private_key"]
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| l.len() >= 40)
    {
        assert!(!exported.contains(line), "a line of the key was exported");
    }
    assert!(
        collector
            .bodies
            .lock()
            .unwrap()
            .iter()
            .any(|(p, _)| p == "/v1/metrics"),
        "metrics were exported too"
    );
}
