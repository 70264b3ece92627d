//! Intake and automatic renewal on the emulator: ACM renewal events published to
//! EventBridge reach the events queue through the rule certflow creates and fan out to one
//! export job per inventory row; duplicates make nothing twice; and a corpus of hostile
//! messages, interleaved with valid requests, all end somewhere with a reason.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use certflow_tests::certflow::Env;
use certflow_tests::unique;
use engine::{JobId, JobStatus};
use workflows::renew_certificate::{self, Child, ChildStatus, RenewState};

fn payload(arn: &str, name: &str, key: &str, value: &str) -> String {
    format!(
        r#"{{"CertificateArn": "{arn}", "CertName": "{name}", "TargetTagKey": "{key}", "TargetTagValue": "{value}"}}"#
    )
}

fn fixture_detail(name: &str) -> serde_json::Value {
    let path = format!("{}/fixtures/acm-events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["detail"].clone()
}

/// Publishes an ACM event on the default bus with this test's source; returns its id.
async fn put_event(env: &Env, detail_type: &str, arn: &str, detail: &serde_json::Value) -> String {
    let eb = aws_sdk_eventbridge::Client::new(&env.sdk);
    let out = eb
        .put_events()
        .entries(
            PutEventsRequestEntry::builder()
                .source(&env.source)
                .detail_type(detail_type)
                .resources(arn)
                .detail(detail.to_string())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_entry_count(), 0, "{out:?}");
    out.entries()[0].event_id().unwrap().to_string()
}

async fn rules(env: &Env) {
    let sqs = aws_sdk_sqs::Client::new(&env.sdk);
    let eb = aws_sdk_eventbridge::Client::new(&env.sdk);
    let settings =
        workflows::events::RuleSettings::new(unique("certflow"), vec![env.source.clone()]);
    workflows::events::ensure_rules(&eb, &sqs, env.events.url(), &settings)
        .await
        .unwrap();
}

/// A renewal's child export jobs: entries beside its record (collection `children`),
/// each with its group (`running`, or the child's final status in lowercase).
async fn children(env: &Env, parent: &JobId) -> Vec<(String, Child)> {
    env.jobs
        .all_entries(parent, renew_certificate::CHILDREN, &engine::Groups::All)
        .await
        .expect("the renewal's child entries")
        .into_iter()
        .map(|e| {
            let child: Child = serde_json::from_value(e.data.clone())
                .unwrap_or_else(|err| panic!("child entry {e:?}: {err}"));
            assert_eq!(e.key, child.job_id, "{e:?}");
            (e.group, child)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_events_fan_out_to_the_inventory_rows_of_that_certificate() {
    let env = Env::new().await;
    rules(&env).await;
    let (web, api) = (unique("web"), unique("api"));
    env.instances(1, "Tier", &web);
    env.instances(1, "Tier", &api);
    let renewed = env.certificate(true).await;
    let other = env.certificate(true).await;
    env.allow(&renewed, "Tier", &web).await;
    env.allow(&renewed, "Tier", &api).await;
    env.allow(&other, "Tier", &web).await;
    let worker = env.worker("w1");
    // Three inventory rows, made the way users make them: two targets for one certificate
    // (neither in the inventory before), one for another certificate.
    let first = [
        env.submit(&payload(&renewed, "shop", "Tier", &web)).await,
        env.submit(&payload(&renewed, "shop", "Tier", &api)).await,
        env.submit(&payload(&other, "blog", "Tier", &web)).await,
    ];
    for id in &first {
        assert_eq!(env.wait(id).await.status, JobStatus::Succeeded);
    }
    let other_before = env
        .jobs
        .list(JobStatus::Succeeded, 100, None)
        .await
        .unwrap()
        .jobs
        .len();

    // Both boolean encodings of the reference renewal event.
    for fixture in [
        "certificate-available-renewal.json",
        "certificate-available-renewal-bool.json",
    ] {
        // ACM confirms a renewal by a new serial; the emulator never renews, so the rows
        // are made to hold an older one.
        env.pretend_renewed(&renewed).await;
        let event_id = put_event(
            &env,
            "ACM Certificate Available",
            &renewed,
            &fixture_detail(fixture),
        )
        .await;
        let parent_id = JobId::from_key(renew_certificate::NAME, &event_id);
        let parent = env.wait(&parent_id).await;
        assert_eq!(
            parent.status,
            JobStatus::Succeeded,
            "{fixture}: {:?}",
            parent.last_error
        );
        // The record keeps counts; the children are entries beside it.
        let state: RenewState = serde_json::from_value(parent.data.clone()).unwrap();
        assert!(state.children.is_empty(), "{fixture}: {state:?}");
        assert_eq!(
            (
                state.tally.started,
                state.tally.succeeded,
                state.tally.unsuccessful
            ),
            (2, 2, 0),
            "{fixture}: {state:?}"
        );
        let kids = children(&env, &parent_id).await;
        assert_eq!(kids.len(), 2, "{fixture}: {kids:?}");
        let mut targets: Vec<&str> = kids.iter().map(|(_, c)| c.target.as_str()).collect();
        targets.sort();
        let mut expected = vec![format!("Tier={web}"), format!("Tier={api}")];
        expected.sort();
        assert_eq!(targets, expected);
        for (group, child) in &kids {
            assert_eq!(group, "succeeded", "{child:?}");
            assert_eq!(child.status, Some(ChildStatus::Succeeded), "{child:?}");
            let rec = env
                .jobs
                .get(&JobId::new(child.job_id.clone()))
                .await
                .unwrap();
            assert_eq!(rec.status, JobStatus::Succeeded);
            assert_eq!(rec.labels.get("CertificateArn"), Some(&renewed));
        }
        let last = env.jobs.history(&parent_id).await.unwrap().pop().unwrap();
        assert_eq!(last.note.as_deref(), Some("2 of 2 export job(s) succeeded"));
    }
    worker.stop().await;
    // The other certificate's row was not re-exported: 3 first jobs, 2 parents, and 2
    // children: an export job is one per row and serial, and the emulator never renews, so
    // the second event (the same serial) found the first one's jobs.
    let all = env
        .jobs
        .list(JobStatus::Succeeded, 100, None)
        .await
        .unwrap()
        .jobs;
    assert_eq!(other_before, 3);
    assert_eq!(all.len(), 3 + 2 + 2, "{all:?}");
    let for_other = all
        .iter()
        .filter(|j| j.labels.get("CertificateArn") == Some(&other))
        .count();
    assert_eq!(
        for_other, 1,
        "only the original export of the other certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_events_and_requests_start_nothing_twice() {
    let env = Env::new().await;
    let tag = unique("dup");
    env.instances(1, "Tier", &tag);
    let arn = env.certificate(true).await;
    env.allow(&arn, "Tier", &tag).await;
    let worker = env.worker("w1");
    let body = format!(
        r#"{{"CertificateArn":"{arn}","CertName":"dup","TargetTagKey":"Tier","TargetTagValue":"{tag}","RequestId":"req-{tag}"}}"#
    );
    env.submit(&body).await;
    env.submit(&body).await;
    let export_id = JobId::from_key(workflows::export_certificate::NAME, &format!("req-{tag}"));
    assert_eq!(env.wait(&export_id).await.status, JobStatus::Succeeded);
    env.pretend_renewed(&arn).await;

    // The same envelope delivered twice (as EventBridge's at-least-once delivery may).
    let event_id = unique("event");
    let envelope = serde_json::json!({
        "version": "0", "id": event_id, "detail-type": "ACM Certificate Available",
        "source": env.source, "account": "123456789012", "time": "2026-05-23T18:43:48Z",
        "region": "us-east-1", "resources": [arn],
        "detail": {"Action": "RENEWAL", "Exportable": "TRUE", "InUse": true}
    })
    .to_string();
    env.submit_event(&envelope).await;
    env.submit_event(&envelope).await;
    let parent_id = JobId::from_key(renew_certificate::NAME, &event_id);
    let parent = env.wait(&parent_id).await;
    assert_eq!(
        parent.status,
        JobStatus::Succeeded,
        "{:?}",
        parent.last_error
    );
    env.submit_event(&envelope).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    worker.stop().await;

    let jobs = env
        .jobs
        .list(JobStatus::Succeeded, 100, None)
        .await
        .unwrap()
        .jobs;
    let by_workflow = |w: &str| jobs.iter().filter(|j| j.workflow == w).count();
    assert_eq!(by_workflow(renew_certificate::NAME), 1, "one renewal job");
    assert_eq!(
        by_workflow(workflows::export_certificate::NAME),
        2,
        "the request once, the renewal's child once"
    );
    let state: RenewState = serde_json::from_value(parent.data.clone()).unwrap();
    assert_eq!(
        (state.tally.started, state.tally.succeeded),
        (1, 1),
        "{state:?}"
    );
    let kids = children(&env, &parent_id).await;
    assert_eq!(kids.len(), 1, "{kids:?}");
    let commands = env.ssm_commands().await;
    for job in [export_id.to_string(), kids[0].1.job_id.clone()] {
        // One server: the canary is the job's only batch, and it got one command.
        let prefix = format!("certflow job {job} ");
        let ours: Vec<_> = commands
            .iter()
            .filter_map(|c| c.comment())
            .filter(|c| c.starts_with(&prefix))
            .collect();
        assert_eq!(
            ours,
            [format!("certflow job {job} batch 0")],
            "one SSM command for job {job}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_of_a_certificate_not_in_inventory_fails_once_with_the_reason() {
    let env = Env::new().await;
    let arn = env.certificate(true).await;
    let worker = env.worker("w1");
    let envelope = serde_json::json!({
        "version": "0", "id": unique("event"), "detail-type": "ACM Certificate Available",
        "source": "aws.acm", "resources": [arn], "detail": {"Action": "RENEWAL"}
    });
    env.submit_event(&envelope.to_string()).await;
    let id = JobId::from_key(renew_certificate::NAME, envelope["id"].as_str().unwrap());
    let rec = env.wait(&id).await;
    worker.stop().await;
    assert_eq!(rec.status, JobStatus::Failed);
    assert!(rec
        .last_error
        .unwrap()
        .contains("certificate not in inventory"));
    assert_eq!(rec.attempt, 1, "not a retry loop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_events_become_alerts_with_the_action_needed() {
    let env = Env::new().await;
    rules(&env).await;
    let arn = env.certificate(true).await;
    let worker = env.worker("w1");
    let id = put_event(
        &env,
        "ACM Certificate Approaching Expiration",
        &arn,
        &fixture_detail("certificate-approaching-expiration.json"),
    )
    .await;
    let rec = env
        .wait(&JobId::from_key(renew_certificate::alert::NAME, &id))
        .await;
    worker.stop().await;
    assert_eq!(rec.status, JobStatus::Failed);
    let err = rec.last_error.unwrap();
    assert!(
        err.contains(&arn) && err.contains("31 day(s) to expiry") && err.contains("not renewed"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_ends_with_a_reason_and_valid_work_carries_on() {
    let env = Env::new().await;
    let tag = unique("hostile");
    env.instances(1, "Role", &tag);
    let arn = env.certificate(true).await;
    env.allow(&arn, "Role", &tag).await;
    let worker = env.worker("w1");

    let corpus: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/hostile-intake.json")).unwrap();
    let cases = corpus["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    let big = format!(r#"{{"CertificateArn": "{}"}}"#, "a".repeat(250 * 1024));
    let mut hostile = Vec::new();
    let mut valid = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let body = case["body"]
            .as_str()
            .unwrap()
            .replace("{ARN}", &arn)
            .replace("{TAG}", &tag)
            .replace("{EVENT_ID}", &unique("ev"))
            .replace("{BIG}", &big);
        let id = env.submit(&body).await;
        hostile.push((case.clone(), body, id));
        if i % 4 == 0 && valid.len() < 10 {
            valid.push(
                env.submit(&payload(&arn, &format!("valid-{i}"), "Role", &tag))
                    .await,
            );
        }
    }
    while valid.len() < 10 {
        let n = valid.len();
        valid.push(
            env.submit(&payload(&arn, &format!("valid-extra-{n}"), "Role", &tag))
                .await,
        );
    }

    for id in &valid {
        let rec = env.wait(id).await;
        assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
    }
    let expected_dlq = hostile
        .iter()
        .filter(|(c, _, _)| c["expect"] == "dlq")
        .count();
    let mut dead: HashMap<String, String> = HashMap::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    while dead.len() < expected_dlq && tokio::time::Instant::now() < until {
        for (body, reason) in env.intake_dead_letters().await {
            dead.insert(body, reason);
        }
    }
    for (case, body, id) in &hostile {
        let name = case["name"].as_str().unwrap();
        match case["expect"].as_str().unwrap() {
            "dlq" => {
                let reason = dead
                    .get(body)
                    .unwrap_or_else(|| panic!("{name}: not in the DLQ"));
                assert!(!reason.is_empty(), "{name}: DLQ message without a reason");
                assert!(env.jobs.get(id).await.is_err(), "{name}: made a job");
            }
            _ => {
                let rec = env.wait(id).await;
                assert_eq!(rec.status, JobStatus::Failed, "{name}");
                let field = case["field"].as_str().unwrap();
                let err = rec.last_error.unwrap_or_default();
                assert!(err.contains(&format!("invalid {field}")), "{name}: {err}");
            }
        }
    }
    assert_eq!(dead.len(), expected_dlq, "count in = count out");
    assert!(!worker.handle.is_finished(), "the worker kept running");
    worker.stop().await;
    // No secret was made for any hostile request.
    let sm = aws_sdk_secretsmanager::Client::new(&env.sdk);
    let secrets = sm.list_secrets().send().await.unwrap();
    let hostile_secrets: Vec<_> = secrets
        .secret_list()
        .iter()
        .filter_map(|s| s.name())
        .filter(|n| n.starts_with(&env.deps.config.secret_prefix) && !n.contains("/valid-"))
        .collect();
    assert!(hostile_secrets.is_empty(), "{hostile_secrets:?}");
}
