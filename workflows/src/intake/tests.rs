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
