//! Unit tests of `notify`.

use serde_json::json;

use super::*;

fn job_failed() -> JobFailed {
    JobFailed {
        job_id: "j-1".into(),
        workflow: "export-certificate".into(),
        certificate_arn: Some("arn:aws:acm:us-east-1:111122223333:certificate/c-1".into()),
        target: Some("Environment=Production".into()),
        cert_name: Some("web".into()),
        reason: "check: certificate is PENDING_VALIDATION".into(),
        show: "certflow jobs show j-1".into(),
        retry: "certflow jobs retry j-1".into(),
    }
}

fn renewal_failed() -> RenewalFailed {
    RenewalFailed {
        job_id: "j-2".into(),
        certificate_arn: "arn:aws:acm:us-east-1:111122223333:certificate/c-2".into(),
        target: "Environment=Production".into(),
        cert_name: "web".into(),
        serial: Some("0a:1b".into()),
        reason: "rollout stopped at canary batch".into(),
        consequence: RENEWAL_BLOCKED.into(),
        retry: "certflow jobs retry j-2".into(),
    }
}

fn drift() -> DriftFound {
    DriftFound {
        certificate_arn: "arn:aws:acm:us-east-1:111122223333:certificate/c-3".into(),
        target: "Tier=web".into(),
        cert_name: "shop".into(),
        acm_serial: Some("0c".into()),
        exported_serial: None,
        lagging: 2,
        servers: vec!["i-1".into(), "i-2".into()],
        action: "export".into(),
        job_id: Some("j-3".into()),
        why: "ACM holds serial 0c, the inventory 0b".into(),
        reconcile_job_id: "r-1".into(),
    }
}

fn expiring() -> CertificateExpiring {
    CertificateExpiring {
        certificate_arn: "arn:aws:acm:us-east-1:111122223333:certificate/c-4".into(),
        status: Some("ISSUED".into()),
        not_after: Some("2030-01-01T00:00:00Z".into()),
        days_to_expiry: Some(-3),
        targets: vec!["Tier=web".into()],
        why: "not renewed".into(),
        job_id: "r-1".into(),
    }
}

fn summary() -> ReconcileSummary {
    ReconcileSummary {
        job_id: "r-1".into(),
        rows: 10,
        in_sync: 7,
        exports: 1,
        installs: 1,
        alerts: 1,
        unfixed: 1,
        first_problems: vec!["Tier=web shop: 2 server(s) lag".into()],
    }
}

fn all() -> Vec<Notice> {
    vec![
        Notice::JobFailed(job_failed()),
        Notice::RenewalFailed(renewal_failed()),
        Notice::DriftFound(drift()),
        Notice::CertificateExpiring(expiring()),
        Notice::ReconcileSummary(summary()),
    ]
}

fn keys(v: &serde_json::Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    k.sort_unstable();
    k
}

#[test]
fn detail_types_are_the_documented_ones() {
    let types: Vec<&str> = all().iter().map(Notice::detail_type).collect();
    assert_eq!(
        types,
        [
            "certflow Job Failed",
            "certflow Renewal Failed",
            "certflow Drift Found",
            "certflow Certificate Expiring",
            "certflow Reconcile Summary"
        ]
    );
    assert_eq!(SOURCE, "certflow");
}

#[test]
fn detail_fields_are_pascal_case_and_exact() {
    let details: Vec<serde_json::Value> = all().iter().map(Notice::detail).collect();
    assert_eq!(
        keys(&details[0]),
        [
            "CertName",
            "CertificateArn",
            "JobId",
            "Reason",
            "Retry",
            "Show",
            "Target",
            "Workflow"
        ]
    );
    assert_eq!(
        keys(&details[1]),
        [
            "CertName",
            "CertificateArn",
            "Consequence",
            "JobId",
            "Reason",
            "Retry",
            "Serial",
            "Target"
        ]
    );
    assert_eq!(
        keys(&details[2]),
        [
            "AcmSerial",
            "Action",
            "CertName",
            "CertificateArn",
            "ExportedSerial",
            "JobId",
            "Lagging",
            "ReconcileJobId",
            "Servers",
            "Target",
            "Why"
        ]
    );
    assert_eq!(
        keys(&details[3]),
        [
            "CertificateArn",
            "DaysToExpiry",
            "JobId",
            "NotAfter",
            "Status",
            "Targets",
            "Why"
        ]
    );
    assert_eq!(
        keys(&details[4]),
        [
            "Alerts",
            "Exports",
            "FirstProblems",
            "InSync",
            "Installs",
            "JobId",
            "Rows",
            "Unfixed"
        ]
    );
}

#[test]
fn details_carry_values_and_nulls_and_read_back() {
    let d = Notice::DriftFound(drift()).detail();
    assert_eq!(
        d["ExportedSerial"],
        json!(null),
        "unknown is null, not absent"
    );
    assert_eq!(d["Lagging"], json!(2));
    assert_eq!(d["Servers"], json!(["i-1", "i-2"]));
    assert_eq!(
        Notice::CertificateExpiring(expiring()).detail()["DaysToExpiry"],
        json!(-3)
    );
    let r = Notice::RenewalFailed(renewal_failed()).detail();
    assert_eq!(r["Consequence"], json!(RENEWAL_BLOCKED));
    let back: RenewalFailed = serde_json::from_value(r).unwrap();
    assert_eq!(back, renewal_failed());
    let back: JobFailed = serde_json::from_value(Notice::JobFailed(job_failed()).detail()).unwrap();
    assert_eq!(back, job_failed());
}

#[test]
fn resources_name_the_certificate_when_there_is_one() {
    let r: Vec<Vec<String>> = all().iter().map(Notice::resources).collect();
    assert_eq!(r[0], ["arn:aws:acm:us-east-1:111122223333:certificate/c-1"]);
    assert_eq!(r[2].len(), 1);
    assert!(r[4].is_empty(), "a summary is about no certificate");
    let mut no_cert = job_failed();
    no_cert.certificate_arn = None;
    assert!(Notice::JobFailed(no_cert.clone()).resources().is_empty());
    no_cert.certificate_arn = Some(String::new());
    assert!(Notice::JobFailed(no_cert).resources().is_empty());
}

#[test]
fn an_entry_is_the_notice_on_the_bus() {
    let e = entry(&Notice::RenewalFailed(renewal_failed()), "default");
    assert_eq!(e.event_bus_name(), Some("default"));
    assert_eq!(e.source(), Some(SOURCE));
    assert_eq!(e.detail_type(), Some(RENEWAL_FAILED));
    let detail: serde_json::Value = serde_json::from_str(e.detail().unwrap()).unwrap();
    assert_eq!(detail, Notice::RenewalFailed(renewal_failed()).detail());
    assert_eq!(
        e.resources(),
        ["arn:aws:acm:us-east-1:111122223333:certificate/c-2"]
    );
}

fn ok(id: &str) -> PutEventsResultEntry {
    PutEventsResultEntry::builder().event_id(id).build()
}

fn bad(code: &str) -> PutEventsResultEntry {
    PutEventsResultEntry::builder()
        .error_code(code)
        .error_message(format!("{code} message"))
        .build()
}

#[test]
fn only_the_entries_reported_failed_are_sent_again() {
    let failed = failed_entries(
        vec!["a", "b", "c", "d"],
        &[
            ok("1"),
            bad("ThrottlingException"),
            ok("3"),
            bad("InternalFailure"),
        ],
    );
    assert_eq!(
        failed,
        [
            (
                "b",
                EntryError {
                    code: "ThrottlingException".into(),
                    message: "ThrottlingException message".into()
                }
            ),
            (
                "d",
                EntryError {
                    code: "InternalFailure".into(),
                    message: "InternalFailure message".into()
                }
            )
        ]
    );
    assert!(failed_entries(vec!["a", "b"], &[ok("1"), ok("2")]).is_empty());
    // A short answer, or a result without an event id: not proven taken.
    let failed = failed_entries(
        vec!["a", "b", "c"],
        &[ok("1"), PutEventsResultEntry::builder().build()],
    );
    let codes: Vec<(&str, &str)> = failed.iter().map(|(e, r)| (*e, r.code.as_str())).collect();
    assert_eq!(codes, [("b", "NoEventId"), ("c", "NoResult")]);
}

#[test]
fn the_pauses_are_few_short_and_growing() {
    let p: Vec<Duration> = pauses().collect();
    assert_eq!(p.len(), RETRIES);
    for (i, d) in p.iter().enumerate() {
        // Jitter adds up to the un-jittered delay again.
        let base = FIRST_PAUSE * 2u32.pow(i as u32);
        // (f32 arithmetic may land a hair under the exact multiple.)
        assert!(
            *d >= base.mul_f64(0.99) && *d <= base.mul_f64(2.01),
            "pause {i}: {d:?}"
        );
        assert!(*d <= MAX_PAUSE * 2);
    }
}

#[tokio::test]
async fn off_publishes_nothing_and_succeeds() {
    let n = Notifier::off();
    assert!(!n.is_on());
    n.publish(&all()).await.unwrap();
}

#[test]
fn the_errors_say_how_many_and_why() {
    let e = NotifyError::Failed {
        bus: "default".into(),
        unpublished: 2,
        total: 12,
        attempts: 4,
        code: "ThrottlingException".into(),
        message: "Rate exceeded".into(),
    };
    assert_eq!(
        e.to_string(),
        "EventBridge did not take 2 of 12 event(s) on bus default; the first, sent 4 time(s), failed with ThrottlingException: Rate exceeded"
    );
}
