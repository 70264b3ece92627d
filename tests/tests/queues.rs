//! Queues by trust, through the real `certflow worker` on the emulator: the intake queue
//! takes export requests only, the events queue ACM events only; a message on the wrong
//! queue goes to that queue's DLQ with the reason and makes no job; and each job made from
//! a message carries the sender SQS recorded for it, which `certflow jobs show` prints.
//!
//! The emulator does not enforce queue policies, so who may send to which queue is
//! checked on the template (`cloudformation.rs`); here the worker's side is tested.

use std::time::Duration;

use certflow_tests::certflow::Env;
use certflow_tests::unique;
use certflow_tests::worker_process::{WorkerCommand, WorkerProcess};
use engine::{JobId, JobRecord};
use workflows::renew_certificate;

fn emulator_url() -> String {
    std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (run deploy/local/test.sh)")
}

fn worker(env: &Env) -> WorkerProcess {
    WorkerCommand::new(env, &emulator_url())
        .args(["--poll-wait-secs", "1", "--shutdown-budget-secs", "10"])
        .accept_test_events()
        .spawn()
}

/// ACM's renewal event (the reference fixture) for `arn`, with a fresh event id.
fn renewal(arn: &str) -> (String, String) {
    let path = format!(
        "{}/fixtures/acm-events/certificate-available-renewal.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
    let id = unique("event");
    v["id"] = id.clone().into();
    v["resources"] = serde_json::json!([arn]);
    (id, v.to_string())
}

/// Waits until `n` messages have reached a DLQ, taking them: (body, reason).
async fn dead_letters(env: &Env, events: bool, n: usize) -> Vec<(String, String)> {
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while got.len() < n && tokio::time::Instant::now() < until {
        if events {
            got.extend(env.events_dead_letters().await);
        } else {
            got.extend(env.intake_dead_letters().await);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    got
}

async fn wait_terminal(env: &Env, id: &JobId) -> JobRecord {
    let until = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(rec) = env.jobs.get(id).await {
            if rec.status.is_terminal() {
                return rec;
            }
        }
        assert!(
            tokio::time::Instant::now() < until,
            "job {id} did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_envelope_on_the_request_queue_goes_to_its_dlq_with_the_reason() {
    let env = Env::new().await;
    let arn = env.certificate(true).await;
    let mut w = worker(&env);

    // A forged renewal on the request queue: dead-lettered there, no renewal job.
    let (event_id, envelope) = renewal(&arn);
    env.submit(&envelope).await;
    let dead = dead_letters(&env, false, 1).await;
    assert_eq!(
        dead.len(),
        1,
        "the envelope reached the intake DLQ: {dead:?}"
    );
    assert_eq!(dead[0].0, envelope);
    assert!(
        dead[0]
            .1
            .contains("ACM events are accepted only on the events queue"),
        "{}",
        dead[0].1
    );
    let renewal_job = JobId::from_key(renew_certificate::NAME, &event_id);
    assert!(
        env.jobs.get(&renewal_job).await.is_err(),
        "the forged renewal made a job"
    );

    // An export request on the events queue: dead-lettered there, no job.
    let request = format!(
        r#"{{"CertificateArn":"{arn}","CertName":"web","TargetTagKey":"Tier","TargetTagValue":"{}"}}"#,
        unique("t")
    );
    let message_id = env.submit_event(&request).await;
    let dead = dead_letters(&env, true, 1).await;
    assert_eq!(
        dead.len(),
        1,
        "the request reached the events DLQ: {dead:?}"
    );
    assert_eq!(dead[0].0, request);
    assert!(
        dead[0]
            .1
            .contains("export requests are accepted only on the intake queue"),
        "{}",
        dead[0].1
    );
    let export_job = JobId::from_key(workflows::export_certificate::NAME, &message_id);
    assert!(env.jobs.get(&export_job).await.is_err());

    // The same renewal on the events queue is one: the worker reads that queue too (the
    // certificate is in no inventory row, so the renewal fails saying so).
    env.submit_event(&envelope).await;
    let rec = wait_terminal(&env, &renewal_job).await;
    assert!(
        rec.last_error
            .as_deref()
            .is_some_and(|e| e.contains("certificate not in inventory")),
        "{rec:?}"
    );
    w.stop(Duration::from_secs(40)).await;
    assert!(env.intake_dead_letters().await.is_empty());
    assert!(env.events_dead_letters().await.is_empty());
}

/// The sender id SQS records for a message this test sends (the emulator reports one
/// fixed user id; AWS reports the sending account, user or role session).
async fn my_sender_id(sdk: &aws_config::SdkConfig) -> String {
    use aws_sdk_sqs::types::MessageSystemAttributeName;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let url = sqs
        .create_queue()
        .queue_name(unique("x-probe"))
        .send()
        .await
        .expect("create a probe queue")
        .queue_url
        .expect("queue URL");
    sqs.send_message()
        .queue_url(&url)
        .message_body("probe")
        .send()
        .await
        .expect("send the probe");
    let got = sqs
        .receive_message()
        .queue_url(&url)
        .message_system_attribute_names(MessageSystemAttributeName::SenderId)
        .send()
        .await
        .expect("receive the probe");
    let _ = sqs.delete_queue().queue_url(&url).send().await;
    got.messages()
        .first()
        .and_then(|m| m.attributes())
        .and_then(|a| a.get(&MessageSystemAttributeName::SenderId))
        .cloned()
        .expect("SQS reports a SenderId")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_job_from_a_queue_records_who_sent_it_and_jobs_show_prints_it() {
    let env = Env::new().await;
    let sender = my_sender_id(&env.sdk).await;
    assert!(!sender.is_empty());
    let arn = env.certificate(true).await;
    let mut w = worker(&env);
    // An export request (to a target with no servers: it fails, which does not matter
    // here) and a renewal event.
    let request = format!(
        r#"{{"CertificateArn":"{arn}","CertName":"web","TargetTagKey":"Tier","TargetTagValue":"{}"}}"#,
        unique("nobody")
    );
    let export_job = env.submit(&request).await;
    let (event_id, envelope) = renewal(&arn);
    env.submit_event(&envelope).await;
    let renewal_job = JobId::from_key(renew_certificate::NAME, &event_id);
    for id in [&export_job, &renewal_job] {
        let rec = wait_terminal(&env, id).await;
        assert_eq!(
            rec.labels.get(engine::schema::SENDER_ID_LABEL),
            Some(&sender),
            "{id}: {:?}",
            rec.labels
        );
    }
    w.stop(Duration::from_secs(40)).await;

    let out = env
        .certflow_command(&emulator_url())
        .args(["jobs", "show", export_job.as_str(), "-o", "table"])
        .output()
        .expect("run certflow jobs show");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("SenderId"))
        .unwrap_or_else(|| panic!("no SenderId line:\n{text}"));
    assert!(line.ends_with(&sender), "{line}");
    let out = env
        .certflow_command(&emulator_url())
        .args(["jobs", "show", export_job.as_str(), "-o", "json"])
        .output()
        .expect("run certflow jobs show -o json");
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("jobs show -o json prints JSON");
    assert_eq!(v["SenderId"], sender.as_str(), "{v}");
}
