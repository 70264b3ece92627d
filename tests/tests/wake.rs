//! Wake-ups on the emulator: SSM's `EC2 Command Status-change Notification`, published
//! through EventBridge as SSM publishes it, reaches the events queue through the
//! `<prefix>-commands` rule and wakes the `wait` step of the job whose install command
//! ended, so the job ends within a second of the event instead of at its next look. A
//! repeated or stale event changes nothing, and with no event the looks still end the job.
//! (The emulator's SSM is the simulated fleet, which publishes no events: the test does,
//! when the fleet says the command ended.)

use std::time::Duration;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use certflow_tests::certflow::Env;
use certflow_tests::fleet::Fleet;
use certflow_tests::unique;
use engine::{EventKind, JobId, JobStatus};
use workflows::events::{self, RuleSettings};
use workflows::export_certificate::ExportState;

fn payload(arn: &str, key: &str, value: &str) -> String {
    format!(
        r#"{{"CertificateArn": "{arn}", "CertName": "web", "TargetTagKey": "{key}", "TargetTagValue": "{value}"}}"#
    )
}

/// The rules, as bootstrap makes them, for this test's queue, source and document.
async fn rules(env: &Env) {
    let mut settings = RuleSettings::new(unique("certflow"), vec![env.source.clone()]);
    settings.document_name = env.deps.config.document_name.clone();
    events::ensure_rules(
        &aws_sdk_eventbridge::Client::new(&env.sdk),
        &aws_sdk_sqs::Client::new(&env.sdk),
        env.events.url(),
        &settings,
    )
    .await
    .unwrap();
}

/// Publishes SSM's status change of `command`, as SSM sends it (with this test's source);
/// returns when EventBridge took it.
async fn publish(env: &Env, command: &str, job: &JobId, status: &str) {
    let detail = serde_json::json!({
        "command-id": command,
        "document-name": env.deps.config.document_name,
        "expire-after": "2026-12-05T12:00:00.000Z",
        "parameters": {
            "CertName": ["web"],
            "CertflowJob": [job.as_str()]
        },
        "requested-date-time": "2026-12-05T10:00:00.000Z",
        "status": status
    });
    let out = aws_sdk_eventbridge::Client::new(&env.sdk)
        .put_events()
        .entries(
            PutEventsRequestEntry::builder()
                .source(&env.source)
                .detail_type(events::COMMAND_STATUS_CHANGE)
                .detail(detail.to_string())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_entry_count(), 0, "{out:?}");
}

/// Waits until `job` has sent a command and the fleet says it ended; returns its id.
async fn ended_command(env: &Env, job: &JobId) -> String {
    let until = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        assert!(tokio::time::Instant::now() < until, "no command ended");
        if let Ok(rec) = env.jobs.get(job).await {
            let st: ExportState = serde_json::from_value(rec.data).unwrap();
            if let Some(id) = st.command_id {
                if let Some(c) = Fleet::global().command(&id) {
                    if c.status == "Success" {
                        return id;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn woken(history: &[engine::HistoryEvent]) -> usize {
    history
        .iter()
        .filter(|e| e.kind == EventKind::Woken)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_status_event_ends_the_wait_within_a_second_and_a_repeat_changes_nothing() {
    // Looks at most a minute apart: only the event can end the job quickly.
    let env = Env::with_config(None, |c| c.wait_poll_max = Duration::from_secs(60)).await;
    rules(&env).await;
    let tag = unique("wake");
    let servers = env.instances(1, "Tier", &tag);
    // The install takes 25 s: the looks (2 s, growing by half) have grown past 10 s apart.
    Fleet::global().set_latency(&servers[0], Duration::from_secs(25));
    let arn = env.certificate(true).await;
    env.allow(&arn, "Tier", &tag).await;
    let worker = env.worker("w1");
    let job = env.submit(&payload(&arn, "Tier", &tag)).await;
    let command = ended_command(&env, &job).await;
    let sent = std::time::SystemTime::now();
    publish(&env, &command, &job, "Success").await;
    let rec = env.wait(&job).await;
    assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
    let sent_ms = sent
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let after = rec.updated_at - sent_ms;
    eprintln!("SUCCEEDED {after} ms after the command status event");
    assert!(after < 1000, "the job ended {after} ms after the event");
    let history = env.jobs.history(&job).await.unwrap();
    assert_eq!(woken(&history), 1, "{history:?}");
    let w = history.iter().find(|e| e.kind == EventKind::Woken).unwrap();
    assert_eq!(w.step, "wait");
    assert_eq!(
        w.note.as_deref(),
        Some(format!("SSM command {command} is Success").as_str())
    );

    // The same event again (EventBridge delivers at least once), and a stale one: the job
    // has ended, nothing changes.
    publish(&env, &command, &job, "Success").await;
    publish(&env, "0b1c2d3e-0000-0000-0000-000000000000", &job, "Failed").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = env.jobs.history(&job).await.unwrap();
    assert_eq!(again.len(), history.len(), "{again:?}");
    assert_eq!(env.jobs.get(&job).await.unwrap().version, rec.version);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_event_the_looks_still_end_the_job() {
    let env = Env::with_config(None, |c| c.wait_poll_max = Duration::from_secs(5)).await;
    rules(&env).await;
    let tag = unique("wake");
    let servers = env.instances(1, "Tier", &tag);
    Fleet::global().set_latency(&servers[0], Duration::from_secs(8));
    let arn = env.certificate(true).await;
    env.allow(&arn, "Tier", &tag).await;
    let worker = env.worker("w1");
    let job = env.submit(&payload(&arn, "Tier", &tag)).await;
    let rec = env.wait(&job).await;
    assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
    let history = env.jobs.history(&job).await.unwrap();
    assert_eq!(woken(&history), 0);
    assert!(
        history
            .iter()
            .any(|e| e.kind == EventKind::Polled && e.step == "wait"),
        "{history:?}"
    );
    worker.stop().await;
}
