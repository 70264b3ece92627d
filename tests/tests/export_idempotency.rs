//! Every export step run twice — its side effect made, then its commit lost — still makes
//! one secret version, one inventory row, one SSM command and one export.
//!
//! A task commits once, when the job leaves it (docs/architecture.md, *One commit per
//! task*): for an issued certificate and one server, `check`, `export`, `inventory`,
//! `install` and `wait` (its first look held in the task) all run in the job's first task
//! and are committed together. The emulator cannot lose that commit, so the fault proxy
//! does: a `certflow worker` process talks to AWS through it, and the proxy answers the
//! task's commit (a DynamoDB `TransactWriteItems`) with 500 until the SDK gives up. The
//! worker abandons the task, as one that died at any point of it would; the message comes
//! back once its lease lapses and every step runs again, none of them on a first run
//! (`StepContext::first_run`), finding what the first task did. Every line the worker logs
//! meanwhile, at debug level, is then scanned for the passphrases and key material.

use std::time::Duration;

use certflow_tests::certflow::Env;
use certflow_tests::proxy::{Action, FaultProxy, Rule, Trigger};
use certflow_tests::unique;
use certflow_tests::worker_process::{LogDir, WorkerCommand};
use engine::backend::sqs::create_queue_with_dlq;
use engine::JobStatus;

/// The commits (`TransactWriteItems`, counting from the job's creation) lost: 1 creates
/// the job, 2 ends its first task, after every step has made its side effect.
const LOST: [(&str, u64); 1] = [("the first task", 2)];

/// The steps whose side effects must be found again, in order.
const STEPS: [&str; 5] = ["check", "export", "inventory", "install", "wait"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_survives_losing_its_commit_after_its_side_effect() {
    let env = Env::new().await;
    let proxy = FaultProxy::start(&std::env::var("AWS_ENDPOINT_URL").unwrap(), 7).await;
    let tasks = unique("x-idem-tasks");
    create_queue_with_dlq(
        &aws_sdk_sqs::Client::new(&env.sdk),
        &tasks,
        Duration::from_secs(30),
        50,
    )
    .await
    .unwrap();
    let tag = unique("idem");
    env.instances(1, "Tier", &tag);
    let arn = env.certificate(true).await;
    env.allow(&arn, "Tier", &tag).await;
    // Let validation finish so that `check` commits once (no polling).
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Every log line the worker writes, at debug level, is scanned for secrets at the end.
    let logs = LogDir::new(env!("CARGO_TARGET_TMPDIR"), "export-idempotency");
    let mut worker = WorkerCommand::new(&env, &proxy.url())
        .args([
            "--poll-wait-secs",
            "1",
            "--lease-secs",
            "4",
            "--visibility-secs",
            "4",
            "--sweep-every-secs",
            "0",
        ])
        .env("CERTFLOW_TASKS_QUEUE", &tasks)
        .log_level("debug")
        .log_in(&logs)
        .spawn();

    let sm = aws_sdk_secretsmanager::Client::new(&env.sdk);
    let ddb = aws_sdk_dynamodb::Client::new(&env.sdk);
    let mut secrets = Vec::new();
    for (step, commit) in LOST {
        let name = unique("task");
        // The SDK tries three times: lose all three.
        let rules: Vec<_> = (0..3)
            .map(|i| {
                proxy.add_rule(Rule::new(
                    "dynamodb",
                    Some("TransactWriteItems"),
                    Trigger::Nth(commit + i),
                    Action::Status(500),
                ))
            })
            .collect();
        proxy.clear_calls();
        let id = env
            .submit(&format!(
                r#"{{"CertificateArn":"{arn}","CertName":"{name}","TargetTagKey":"Tier","TargetTagValue":"{tag}"}}"#
            ))
            .await;
        let rec = env.wait(&id).await;
        for r in rules {
            proxy.remove_rule(r);
        }
        assert_eq!(
            rec.status,
            JobStatus::Succeeded,
            "{step}: {:?}",
            rec.last_error
        );
        let history = env.jobs.history(&id).await.unwrap();
        let runs: Vec<(&str, u32)> = history
            .iter()
            .filter(|e| e.kind != engine::EventKind::Created)
            .map(|e| (e.step.as_str(), e.attempt))
            .collect();
        // The task run again took the job at `check` (its second lease: attempt 2) and
        // fused the rest; each step committed once, by that task.
        let expected: Vec<(&str, u32)> = STEPS
            .iter()
            .map(|s| (*s, if *s == "check" { 2 } else { 1 }))
            .collect();
        assert_eq!(runs, expected, "{step}: {history:?}");
        assert!(
            history.iter().any(|e| e
                .note
                .as_deref()
                .is_some_and(|n| n.contains("adopted command"))),
            "{step}: install adopted the first task's command: {history:?}"
        );

        // One version of the target's secret.
        let secret = env.secret_name(&name, "Tier", &tag);
        let versions = env.secret_version_ids(&secret).await;
        assert_eq!(versions.len(), 1, "{step}: versions of {secret}");
        // One inventory row for the (target, certificate, name).
        let rows = ddb
            .query()
            .table_name(&env.deps.config.inventory_table)
            .key_condition_expression("TagKeyValue = :k")
            .expression_attribute_values(
                ":k",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("Tier#{tag}")),
            )
            .send()
            .await
            .unwrap();
        let ours = rows
            .items()
            .iter()
            .filter(|i| i.get("CertName").and_then(|v| v.as_s().ok()) == Some(&name))
            .count();
        assert_eq!(ours, 1, "{step}: inventory rows");
        // One SSM command (one server: the canary is the only batch), one export from ACM.
        let comment = format!("certflow job {id} batch 0\"");
        let sent = proxy
            .calls()
            .iter()
            .filter(|c| c.operation == "SendCommand" && c.forwarded && c.body.contains(&comment))
            .count();
        assert_eq!(sent, 1, "{step}: SSM commands sent");
        let exports = proxy
            .calls()
            .iter()
            .filter(|c| c.operation == "ExportCertificate" && c.forwarded)
            .count();
        assert_eq!(exports, 1, "{step}: ACM exports");
        println!("{step}: ran twice, one secret version, one row, one command, one export");
        let value = sm
            .get_secret_value()
            .secret_id(&secret)
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(value.secret_string().unwrap()).unwrap();
        for field in ["passphrase", "private_key"] {
            let text = v[field].as_str().unwrap_or_default();
            assert!(!text.is_empty(), "{step}: {field} in {secret}");
            secrets.extend(
                text.lines()
                    .filter(|l| l.len() >= 20 && !l.starts_with("-----"))
                    .map(str::to_string),
            );
        }
    }
    worker.kill();
    let log = worker.log();
    assert!(
        log.lines().count() > 100,
        "the worker logged at debug level"
    );
    assert!(
        !log.contains("BEGIN") && !log.contains("PRIVATE KEY"),
        "PEM material in the log"
    );
    for s in &secrets {
        assert!(
            !log.contains(s.as_str()),
            "secret material in the worker's log"
        );
    }
}
