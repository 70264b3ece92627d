//! certflow's outcome events (`workflows::notify`) on the emulator's EventBridge, through
//! the real SDK: a rule on the default bus that matches one certificate's `Renewal Failed`
//! events delivers them to an SQS queue with the documented envelope (`docs/events.md`);
//! more than ten notices go out in calls of ten; entries EventBridge reports failed are sent
//! again, and reported when they keep failing (the failed answers come from the fault
//! proxy, the emulator never refuses an entry that is well formed).

use std::time::Duration;

use certflow_tests::proxy::{Action, FaultProxy, Rule, Trigger};
use certflow_tests::subscriber::Subscriber;
use certflow_tests::{emulator, unique};
use serde_json::{json, Value};
use workflows::notify::{self, DriftFound, Notice, Notifier, NotifyError, RenewalFailed};

fn emulator_url() -> String {
    std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (run deploy/local/test.sh)")
}

/// An EventBridge client talking to `proxy` (in front of the emulator).
fn via(sdk: &aws_config::SdkConfig, proxy: &FaultProxy) -> aws_sdk_eventbridge::Client {
    aws_sdk_eventbridge::Client::from_conf(
        aws_sdk_eventbridge::config::Builder::from(sdk)
            .endpoint_url(proxy.url())
            .build(),
    )
}

fn renewal_failed(arn: &str, job: &str) -> RenewalFailed {
    RenewalFailed {
        job_id: job.to_string(),
        certificate_arn: arn.to_string(),
        target: "Environment=Production".into(),
        cert_name: "web".into(),
        serial: Some("0a:1b:2c".into()),
        reason: "rollout stopped at canary batch (1 of 60 servers)".into(),
        consequence: notify::RENEWAL_BLOCKED.into(),
        retry: format!("certflow jobs retry {job}"),
    }
}

fn certificate() -> String {
    format!(
        "arn:aws:acm:us-east-1:123456789012:certificate/{}",
        unique("c")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_failed_event_reaches_a_subscriber_as_documented_in_calls_of_ten() {
    let sdk = emulator().await;
    let arn = certificate();
    let sub = Subscriber::certificate(&sdk, &[notify::RENEWAL_FAILED], &arn).await;
    let proxy = FaultProxy::start(&emulator_url(), 1).await;
    let notifier = Notifier::new(via(&sdk, &proxy), "default");
    assert!(notifier.is_on());

    // 12 notices: 11 renewals that failed and a drift of the same certificate, which the
    // subscriber's rule does not ask for.
    let mut notices: Vec<Notice> = (0..11)
        .map(|i| Notice::RenewalFailed(renewal_failed(&arn, &format!("job-{i:02}"))))
        .collect();
    notices.push(Notice::DriftFound(DriftFound {
        certificate_arn: arn.clone(),
        target: "Environment=Production".into(),
        cert_name: "web".into(),
        acm_serial: Some("0a:1b:2c".into()),
        exported_serial: Some("09".into()),
        lagging: 3,
        servers: vec!["i-1".into(), "i-2".into(), "i-3".into()],
        action: "export".into(),
        job_id: Some("job-x".into()),
        why: "ACM holds a newer serial than the one exported".into(),
        reconcile_job_id: "r-1".into(),
    }));
    notifier.publish(&notices).await.unwrap();
    // Two calls: 10 entries, then 2 (EventBridge refuses more than 10 in one). The SDK
    // sends a call again after an emulator 5xx, which a loaded machine sometimes answers.
    let calls = proxy.count("events", "PutEvents");
    assert!(
        (2..=4).contains(&calls),
        "12 notices in two calls (EventBridge takes 10 per call), not {calls}"
    );

    let mut got = sub.receive(11, Duration::from_secs(10)).await;
    // Nothing more arrives: the drift did not match. (The emulator delivers during the
    // PutEvents call, so a short look is enough.)
    got.extend(sub.receive(1, Duration::from_secs(2)).await);
    // Delivery is at least once (docs/events.md): a call the SDK sent again after a 5xx
    // may have been delivered the first time too, so a subscriber keys on `JobId`, as
    // this one does. Without a retry there is nothing to de-duplicate.
    let received = got.len();
    got.sort_by(|a, b| {
        a["detail"]["JobId"]
            .as_str()
            .cmp(&b["detail"]["JobId"].as_str())
    });
    got.dedup_by(|a, b| a["detail"]["JobId"] == b["detail"]["JobId"]);
    assert_eq!(got.len(), 11, "11 distinct renewals failed: {got:#?}");
    if calls == 2 {
        assert_eq!(received, 11, "no call was sent again, so no duplicate");
    }
    for (i, envelope) in got.iter().enumerate() {
        let job = format!("job-{i:02}");
        assert_eq!(envelope["source"], json!("certflow"));
        assert_eq!(envelope["detail-type"], json!("certflow Renewal Failed"));
        assert_eq!(envelope["resources"], json!([arn]));
        assert_eq!(
            envelope["detail"],
            json!({
                "JobId": job,
                "CertificateArn": arn,
                "Target": "Environment=Production",
                "CertName": "web",
                "Serial": "0a:1b:2c",
                "Reason": "rollout stopped at canary batch (1 of 60 servers)",
                "Consequence": notify::RENEWAL_BLOCKED,
                "Retry": format!("certflow jobs retry {job}"),
            })
        );
        assert!(envelope["id"].as_str().is_some_and(|id| !id.is_empty()));
    }
    sub.close().await;
}

/// A `PutEvents` answer in which every one of `n` entries failed with `code`.
fn all_failed(n: usize, code: &str) -> String {
    let entries: Vec<Value> = (0..n)
        .map(|_| json!({ "ErrorCode": code, "ErrorMessage": "Rate exceeded" }))
        .collect();
    json!({ "FailedEntryCount": n, "Entries": entries }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_eventbridge_refused_are_sent_again() {
    let sdk = emulator().await;
    let arn = certificate();
    let sub = Subscriber::certificate(&sdk, &[notify::RENEWAL_FAILED], &arn).await;
    let proxy = FaultProxy::start(&emulator_url(), 2).await;
    // The first call: EventBridge throttled both entries (nothing reaches the emulator).
    proxy.add_rule(Rule::new(
        "events",
        Some("PutEvents"),
        Trigger::Nth(1),
        Action::Respond {
            status: 200,
            body: all_failed(2, "ThrottlingException"),
        },
    ));
    let notifier = Notifier::new(via(&sdk, &proxy), "default");
    let notices = [
        Notice::RenewalFailed(renewal_failed(&arn, "job-a")),
        Notice::RenewalFailed(renewal_failed(&arn, "job-b")),
    ];
    notifier.publish(&notices).await.unwrap();
    assert_eq!(proxy.count("events", "PutEvents"), 2);
    let mut got = sub.receive(2, Duration::from_secs(10)).await;
    got.extend(sub.receive(1, Duration::from_secs(2)).await);
    let mut jobs: Vec<&str> = got
        .iter()
        .filter_map(|e| e["detail"]["JobId"].as_str())
        .collect();
    jobs.sort_unstable();
    assert_eq!(jobs, ["job-a", "job-b"], "each delivered once: {got:#?}");
    sub.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_that_keep_failing_are_reported_with_how_many_and_why() {
    let sdk = emulator().await;
    let arn = certificate();
    let proxy = FaultProxy::start(&emulator_url(), 3).await;
    proxy.add_rule(Rule::new(
        "events",
        Some("PutEvents"),
        Trigger::Always,
        Action::Respond {
            status: 200,
            body: all_failed(2, "ThrottlingException"),
        },
    ));
    let notifier = Notifier::new(via(&sdk, &proxy), "default");
    let notices = [
        Notice::RenewalFailed(renewal_failed(&arn, "job-a")),
        Notice::RenewalFailed(renewal_failed(&arn, "job-b")),
    ];
    let err = notifier.publish(&notices).await.unwrap_err();
    match &err {
        NotifyError::Failed {
            bus,
            unpublished,
            total,
            attempts,
            code,
            message,
        } => {
            assert_eq!(
                (bus.as_str(), *unpublished, *total, *attempts),
                ("default", 2, 2, 4)
            );
            assert_eq!(
                (code.as_str(), message.as_str()),
                ("ThrottlingException", "Rate exceeded")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        proxy.count("events", "PutEvents"),
        4,
        "sent once, then again three times"
    );
    // What the caller logs names no detail, only counts and EventBridge's words.
    let text = err.to_string();
    assert!(!text.contains(&arn) && !text.contains("job-a"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_no_new_send_can_fix_is_reported_at_once_and_the_rest_go_out() {
    let sdk = emulator().await;
    let arn = certificate();
    let sub = Subscriber::certificate(&sdk, &[notify::RENEWAL_FAILED], &arn).await;
    let proxy = FaultProxy::start(&emulator_url(), 5).await;
    // First call: the first entry throttled, the second refused as malformed.
    proxy.add_rule(Rule::new(
        "events",
        Some("PutEvents"),
        Trigger::Nth(1),
        Action::Respond {
            status: 200,
            body: json!({
                "FailedEntryCount": 2,
                "Entries": [
                    { "ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded" },
                    { "ErrorCode": "MalformedDetail", "ErrorMessage": "Detail is malformed." }
                ]
            })
            .to_string(),
        },
    ));
    let notifier = Notifier::new(via(&sdk, &proxy), "default");
    let notices = [
        Notice::RenewalFailed(renewal_failed(&arn, "job-a")),
        Notice::RenewalFailed(renewal_failed(&arn, "job-b")),
    ];
    let err = notifier.publish(&notices).await.unwrap_err();
    match &err {
        NotifyError::Failed {
            unpublished,
            total,
            attempts,
            code,
            ..
        } => assert_eq!(
            (*unpublished, *total, *attempts, code.as_str()),
            (1, 2, 1, "MalformedDetail")
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        proxy.count("events", "PutEvents"),
        2,
        "the throttled entry alone is sent again"
    );
    let mut got = sub.receive(1, Duration::from_secs(10)).await;
    got.extend(sub.receive(1, Duration::from_secs(2)).await);
    let jobs: Vec<&str> = got
        .iter()
        .filter_map(|e| e["detail"]["JobId"].as_str())
        .collect();
    assert_eq!(jobs, ["job-a"]);
    sub.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_that_does_not_exist_is_an_error_naming_it() {
    let sdk = emulator().await;
    let bus = unique("no-such-bus");
    let notifier = Notifier::new(aws_sdk_eventbridge::Client::new(&sdk), bus.clone());
    let err = notifier
        .publish(&[Notice::RenewalFailed(renewal_failed(&certificate(), "j"))])
        .await
        .unwrap_err();
    // The emulator refuses the call (ResourceNotFoundException); EventBridge may instead
    // refuse the entry. Either way the error names the bus and the count.
    let text = err.to_string();
    assert!(text.contains(&bus), "{text}");
    assert!(text.contains("1 of 1 event(s)"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_and_empty_publish_nothing() {
    let sdk = emulator().await;
    let proxy = FaultProxy::start(&emulator_url(), 4).await;
    let arn = certificate();
    Notifier::off()
        .publish(&[Notice::RenewalFailed(renewal_failed(&arn, "j"))])
        .await
        .unwrap();
    Notifier::new(via(&sdk, &proxy), "default")
        .publish(&[])
        .await
        .unwrap();
    assert_eq!(proxy.count("events", "PutEvents"), 0);
}
