//! What a request can make certflow write, and where.
//!
//! - A `certflow worker` run with `CERTFLOW_LOG=trace` through a whole export logs no
//!   passphrase, no PEM and no line of the key: the AWS SDK's trace logs (which hold each
//!   request and response body) stay off whatever the filter says.
//! - A `RequestId` sent again with a different request goes to the intake DLQ with the
//!   reason, and the job the `RequestId` made first keeps its record and history; the same
//!   request sent again (spaced and ordered differently) is still a silent duplicate.

use std::time::Duration;

use certflow_tests::certflow::Env;
use certflow_tests::unique;
use certflow_tests::worker_process::{LogDir, WorkerCommand};
use engine::{JobId, JobStatus};
use workflows::export_certificate;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_level_worker_logs_no_passphrase_pem_or_key_line() {
    let env = Env::new().await;
    let tag = unique("logged");
    env.instances(1, "Tier", &tag);
    let arn = env.certificate(true).await;
    env.allow(&arn, "Tier", &tag).await;
    let emulator = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (the emulator)");
    let logs = LogDir::new(env!("CARGO_TARGET_TMPDIR"), "intake-safety-trace");
    let mut worker = WorkerCommand::new(&env, &emulator)
        .id("trace-worker")
        .args(["--poll-wait-secs", "1", "--shutdown-budget-secs", "5"])
        // Everything a user could ask for: trace everywhere, and the SDK by name.
        .log_level("trace,aws_smithy_runtime=trace,aws_smithy_runtime_api=trace,aws_sigv4=trace,hyper=trace,hyper_util=trace,h2=trace,rustls=trace")
        .log_in(&logs)
        .spawn();
    let name = unique("traced");
    let id = env
        .submit(&format!(
            r#"{{"CertificateArn":"{arn}","CertName":"{name}","TargetTagKey":"Tier","TargetTagValue":"{tag}"}}"#
        ))
        .await;
    let rec = env.wait(&id).await;
    worker.stop(Duration::from_secs(30)).await;
    assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);

    let log = worker.log();
    // The log is the trace-level one asked for: the engine's own trace and debug lines,
    // and the SDK's debug lines (one per attempt), are there.
    assert!(log.contains("step starting"), "engine debug lines logged");
    assert!(
        log.contains("beginning attempt #1"),
        "the SDK's debug lines are kept"
    );
    // The SDK's trace lines, which carry the bodies, are not.
    for trace_only in [
        "transmitting request",
        "received response from service",
        "signing request",
    ] {
        assert!(
            !log.contains(trace_only),
            "SDK trace line {trace_only:?} logged"
        );
    }

    assert!(!log.contains("-----BEGIN"), "a PEM block was logged");
    assert!(!log.contains("PRIVATE KEY"), "a key was logged");
    let material = env.secret_material(&rec.data).await;
    let passphrases = material
        .iter()
        .filter(|s| !s.contains("-----BEGIN"))
        .count();
    let pem_lines: Vec<&str> = material
        .iter()
        .flat_map(|s| s.lines())
        .filter(|l| l.len() >= 40)
        .collect();
    assert!(
        passphrases >= 1 && pem_lines.len() > 10,
        "{passphrases} passphrase(s), {} PEM lines",
        pem_lines.len()
    );
    for secret in material.iter().filter(|s| !s.contains("-----BEGIN")) {
        assert!(secret.len() >= 16, "a passphrase long enough to search for");
        assert!(!log.contains(secret.as_str()), "the passphrase was logged");
    }
    for line in pem_lines {
        assert!(!log.contains(line), "a line of a PEM block was logged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_reused_for_another_request_is_refused_and_the_first_job_kept() {
    let env = Env::new().await;
    let tag = unique("first");
    env.instances(1, "Tier", &tag);
    let arn = env.certificate(true).await;
    env.allow(&arn, "Tier", &tag).await;
    let worker = env.worker("w1");
    let request_id = unique("r");
    let name = unique("web");
    let first = format!(
        r#"{{"CertificateArn":"{arn}","CertName":"{name}","TargetTagKey":"Tier","TargetTagValue":"{tag}","RequestId":"{request_id}"}}"#
    );
    env.submit(&first).await;
    let id = JobId::from_key(export_certificate::NAME, &request_id);
    let rec = env.wait(&id).await;
    assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
    let history = env.jobs.history(&id).await.unwrap();

    // The same RequestId, another target: the payload that would send the key elsewhere.
    let other = format!(
        r#"{{"CertificateArn":"{arn}","CertName":"{name}","TargetTagKey":"Tier","TargetTagValue":"dev","RequestId":"{request_id}"}}"#
    );
    // And a true duplicate, keys reordered and spaced: the same request.
    let duplicate = format!(
        "{{ \"RequestId\": \"{request_id}\", \"TargetTagValue\": \"{tag}\", \"TargetTagKey\": \"Tier\",\n  \"CertName\": \"{name}\", \"CertificateArn\": \"{arn}\" }}"
    );
    env.submit(&other).await;
    env.submit(&duplicate).await;

    let mut dead = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while dead.is_empty() && tokio::time::Instant::now() < until {
        dead.extend(env.intake_dead_letters().await);
    }
    // Let the duplicate be handled too before looking again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    dead.extend(env.intake_dead_letters().await);
    worker.stop().await;

    assert_eq!(dead.len(), 1, "only the other request is refused: {dead:?}");
    assert_eq!(dead[0].0, other);
    assert_eq!(
        dead[0].1,
        format!(
            "RequestId {request_id} was already used for a different request (job {id}); use a new RequestId"
        )
    );
    assert_eq!(env.jobs.get(&id).await.unwrap(), rec, "record unchanged");
    assert_eq!(
        env.jobs.history(&id).await.unwrap(),
        history,
        "history unchanged"
    );
    assert_eq!(rec.labels["Target"], format!("Tier={tag}"));
}
