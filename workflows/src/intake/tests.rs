//! Which queue takes which message, and the sender recorded on each job.

use super::*;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../tests/fixtures/acm-events/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

fn delivery(body: &str, sender: Option<&str>) -> Delivery {
    Delivery {
        message_id: "m-1".into(),
        receipt: "r-1".into(),
        body: body.into(),
        receive_count: 1,
        attributes: Vec::new(),
        sender_id: sender.map(str::to_string),
    }
}

const REQUEST: &str = r#"{"CertificateArn":"arn:aws:acm:us-east-1:123456789012:certificate/8106d6b2-f204-4354-8893-d49e311b3900","CertName":"web","TargetTagKey":"Environment","TargetTagValue":"Production"}"#;

#[test]
fn a_renewal_envelope_on_the_request_queue_is_refused_with_the_reason() {
    for name in [
        "certificate-available-renewal.json",
        "certificate-available-renewal-bool.json",
        "certificate-approaching-expiration.json",
    ] {
        let err = parse(&IntakeConfig::requests(), &delivery(&fixture(name), None))
            .err()
            .unwrap_or_else(|| panic!("{name}: made a job"));
        assert!(err.contains(EVENT_ON_REQUEST_QUEUE), "{name}: {err}");
        assert!(err.contains("\"aws.acm\""), "{name}: {err}");
    }
}

#[test]
fn the_same_envelope_on_the_events_queue_becomes_a_renewal() {
    for name in [
        "certificate-available-renewal.json",
        "certificate-available-renewal-bool.json",
    ] {
        let events = IntakeConfig::events(vec![acm_event::ACM_SOURCE.into()]);
        let job = parse(&events, &delivery(&fixture(name), None))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(job.workflow, renew_certificate::NAME, "{name}");
    }
}

#[test]
fn an_export_request_on_the_events_queue_is_refused_with_the_reason() {
    let events = IntakeConfig::events(vec![acm_event::ACM_SOURCE.into()]);
    let err = parse(&events, &delivery(REQUEST, None))
        .err()
        .unwrap_or_else(|| panic!("made a job"));
    assert_eq!(err, REQUEST_ON_EVENTS_QUEUE);
    // On its own queue it is a job.
    let job = parse(&IntakeConfig::requests(), &delivery(REQUEST, None))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(job.workflow, export_certificate::NAME);
}

#[test]
fn the_events_queue_still_checks_the_source() {
    let events = IntakeConfig::events(vec!["custom.only".into()]);
    let err = parse(
        &events,
        &delivery(&fixture("certificate-available-renewal.json"), None),
    )
    .err()
    .unwrap_or_else(|| panic!("made a job"));
    assert!(err.contains("is not accepted"), "{err}");
}

#[test]
fn the_sender_id_is_a_label_of_the_job_from_either_queue() {
    let job = parse(
        &IntakeConfig::requests(),
        &delivery(REQUEST, Some("AROAEXAMPLE:producer")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        job.labels.get(schema::SENDER_ID_LABEL).map(String::as_str),
        Some("AROAEXAMPLE:producer")
    );
    let events = IntakeConfig::events(vec![acm_event::ACM_SOURCE.into()]);
    let job = parse(
        &events,
        &delivery(
            &fixture("certificate-available-renewal.json"),
            Some("AIDAEVENTBRIDGE"),
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        job.labels.get(schema::SENDER_ID_LABEL).map(String::as_str),
        Some("AIDAEVENTBRIDGE")
    );
    // A queue that does not say who sent it adds no label.
    let job = parse(&IntakeConfig::requests(), &delivery(REQUEST, None))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!job.labels.contains_key(schema::SENDER_ID_LABEL));
}

fn envelope(detail_type: &str, source: &str, detail: serde_json::Value) -> String {
    serde_json::json!({
        "version": "0", "id": "ev-1", "detail-type": detail_type, "source": source,
        "account": "123456789012", "time": "2026-12-05T10:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/certflow-reconcile"],
        "detail": detail
    })
    .to_string()
}

#[test]
fn the_schedule_starts_one_reconcile_per_event() {
    // EventBridge's own source needs no configuring.
    let events = IntakeConfig::events(vec![acm_event::ACM_SOURCE.into()]);
    let body = envelope(SCHEDULED_EVENT, "aws.events", serde_json::json!({}));
    let job = parse(&events, &delivery(&body, None)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(job.workflow, reconcile::NAME);
    let again = parse(&events, &delivery(&body, None)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(job.id, again.id, "the same event twice is one run");
    // Not on the request queue, where anyone may write.
    assert!(parse(&IntakeConfig::requests(), &delivery(&body, None)).is_err());
}

#[test]
fn an_ec2_running_event_starts_a_new_server_job_and_nothing_else_does() {
    let events = IntakeConfig::events(vec!["aws.ec2".into()]);
    let running = envelope(
        EC2_STATE_CHANGE,
        "aws.ec2",
        serde_json::json!({"instance-id": "i-0123456789abcdef0", "state": "running"}),
    );
    let job = parse(&events, &delivery(&running, None)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(job.workflow, new_server::NAME);
    assert_eq!(job.labels["InstanceId"], "i-0123456789abcdef0");
    let stopped = envelope(
        EC2_STATE_CHANGE,
        "aws.ec2",
        serde_json::json!({"instance-id": "i-0123456789abcdef0", "state": "stopped"}),
    );
    let err = parse(&events, &delivery(&stopped, None))
        .err()
        .unwrap_or_default();
    assert!(err.contains("\"running\" only"), "{err}");
    for bad in ["", "i-", "i-xyz", "sg-0123", "i-0123; rm -rf /"] {
        let body = envelope(
            EC2_STATE_CHANGE,
            "aws.ec2",
            serde_json::json!({"instance-id": bad, "state": "running"}),
        );
        let err = parse(&events, &delivery(&body, None))
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("no valid detail.instance-id"),
            "{bad:?}: {err}"
        );
    }
    // EC2's own source needs no configuring; another needs to be listed.
    let acm_only = IntakeConfig::events(vec![acm_event::ACM_SOURCE.into()]);
    assert!(parse(&acm_only, &delivery(&running, None)).is_ok());
    let forged = running.replace("\"aws.ec2\"", "\"custom.ec2\"");
    let err = parse(&acm_only, &delivery(&forged, None))
        .err()
        .unwrap_or_default();
    assert!(err.contains("is not accepted"), "{err}");
    // And it is EC2's source for EC2's events only.
    let schedule_as_ec2 = envelope(SCHEDULED_EVENT, "aws.ec2", serde_json::json!({}));
    let err = parse(&acm_only, &delivery(&schedule_as_ec2, None))
        .err()
        .unwrap_or_default();
    assert!(err.contains("is not accepted"), "{err}");
}

fn command_event(source: &str, job: serde_json::Value) -> String {
    serde_json::json!({
        "version": "0", "id": "ev-2", "detail-type": COMMAND_STATUS_CHANGE, "source": source,
        "account": "123456789012", "time": "2026-12-05T10:00:00Z", "region": "us-east-1",
        "resources": [],
        "detail": {
            "command-id": "0b1c2d3e-aaaa-bbbb-cccc-0123456789ab",
            "document-name": "Install-ACMCertificate",
            "expire-after": "2026-12-05T12:00:00.000Z",
            "parameters": {"CertName": ["web"], "CertflowJob": job},
            "requested-date-time": "2026-12-05T09:59:00.000Z",
            "status": "Success"
        }
    })
    .to_string()
}

#[test]
fn an_install_command_s_status_event_wakes_its_job_s_wait() {
    let events = IntakeConfig::events(vec![acm_event::ACM_SOURCE.into()]);
    let job = "9f1c2e4a-0b3d-5e6f-8a9b-0c1d2e3f4a5b";
    let body = command_event(SSM_SOURCE, serde_json::json!([job]));
    match read(&events, &delivery(&body, None)) {
        Ok(Intent::Wake(s)) => {
            assert_eq!(s.job.as_str(), job);
            assert_eq!(s.step, "wait");
            assert_eq!(
                s.reason,
                "SSM command 0b1c2d3e-aaaa-bbbb-cccc-0123456789ab is Success"
            );
        }
        other => panic!("{other:?}"),
    }
    // Without the parameter (another document, or one from before wake-ups): refused,
    // with the reason.
    for bad in [
        serde_json::json!(null),
        serde_json::json!(["x; rm -rf /"]),
        serde_json::json!([]),
    ] {
        let err = read(&events, &delivery(&command_event(SSM_SOURCE, bad), None))
            .err()
            .unwrap_or_default();
        assert!(err.contains("no CertflowJob parameter"), "{err}");
    }
    // Another source is refused; on the request queue it is refused as any envelope is.
    let err = read(
        &events,
        &delivery(&command_event("custom.ssm", serde_json::json!([job])), None),
    )
    .err()
    .unwrap_or_default();
    assert!(err.contains("is not accepted"), "{err}");
    assert!(read(&IntakeConfig::requests(), &delivery(&body, None)).is_err());
}
