//! Unit tests of `inventory`.

use engine::clock::rfc3339;

use super::*;
use crate::testing::{job, T0};

fn item(pairs: &[(&str, AttributeValue)]) -> Item {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// A row as the export's inventory step writes it, expiring `expires_in_ms` after T0.
fn full(expires_in_ms: i64) -> Item {
    item(&[
        (inventory::PK, s("Environment#Production")),
        ("CertificateArn", s("arn:c-1")),
        ("CertName", s("web")),
        ("TargetTagKey", s("Environment")),
        ("TargetTagValue", s("Production")),
        ("CertExpiryDate", s(&rfc3339(T0 + expires_in_ms))),
        ("LastStatus", s("Success")),
        ("LastInstalledDate", s("2026-01-01T00:00:00.000Z")),
        ("InstalledInstances", AttributeValue::N("2".into())),
        ("LastJobId", s("j-1")),
        ("Serial", s("0a:1b")),
        ("BundleSecretName", s("certflow/web/bundle")),
    ])
}

#[test]
fn a_row_reads_the_tables_attributes_and_counts_whole_days_to_expiry() {
    let row = Row::from_item(&full(30 * DAY_MS + 3_600_000), T0);
    assert_eq!(row.tag_key_value, "Environment#Production");
    assert_eq!(row.target(), "Environment=Production");
    assert_eq!(
        row.cert_expiry_date.as_deref(),
        Some("2026-01-31T01:00:00.000Z")
    );
    assert_eq!(row.days_to_expiry, Some(30));
    assert_eq!(row.installed_instances, Some(2));
    assert_eq!(row.last_exported_date, None);
    assert_eq!(row.passphrase_secret_name, None);
    // Expired, even by a moment, is a negative day count.
    assert_eq!(Row::from_item(&full(-1), T0).days_to_expiry, Some(-1));
    assert_eq!(Row::from_item(&full(-DAY_MS), T0).days_to_expiry, Some(-1));
    assert_eq!(
        Row::from_item(&full(-DAY_MS - 1), T0).days_to_expiry,
        Some(-2)
    );
}

#[test]
fn attributes_of_the_wrong_type_or_missing_are_empty() {
    let odd = item(&[
        ("CertName", AttributeValue::N("7".into())),
        ("CertExpiryDate", s("next spring")),
        ("InstalledInstances", s("two")),
    ]);
    let row = Row::from_item(&odd, T0);
    assert_eq!(row.cert_name, "");
    assert_eq!(row.cert_expiry_date.as_deref(), Some("next spring"));
    assert_eq!(row.days_to_expiry, None);
    assert_eq!(row.installed_instances, None);
    assert_eq!(row.target(), "=");
}

/// [`full`] with its fleet state: 3 servers carried the target at the last look, 2 of
/// them run its serial.
fn with_fleet(mut it: Item) -> Item {
    it.extend(item(&[
        ("InstancesSerial", s("0a:1b")),
        (
            "InstancesAtSerial",
            AttributeValue::Ss(vec!["i-1".into(), "i-2".into()]),
        ),
        ("TargetInstances", AttributeValue::N("3".into())),
        ("TargetSeenDate", s("2026-01-01T06:00:00.000Z")),
    ]));
    it
}

fn issued(serial: &str, days: i64) -> Certificate {
    Certificate {
        found: true,
        status: Some("ISSUED".into()),
        serial: Some(serial.into()),
        not_after: Some(T0 + days * DAY_MS),
        renewal_status: None,
        renewal_eligibility: None,
    }
}

#[test]
fn the_fleet_state_is_read_by_the_librarys_rules() {
    let row = Row::from_item(&with_fleet(full(30 * DAY_MS)), T0);
    assert_eq!(
        (row.servers, row.current_servers, row.lagging_servers),
        (Some(3), 2, Some(1))
    );
    assert_eq!(
        row.target_seen_date.as_deref(),
        Some("2026-01-01T06:00:00.000Z")
    );
    // The recorded servers are about another serial (a new export): none is current.
    let mut newer = with_fleet(full(30 * DAY_MS));
    newer.insert("Serial".into(), s("0c:0d"));
    let row = Row::from_item(&newer, T0);
    assert_eq!((row.current_servers, row.lagging_servers), (0, Some(3)));
    // Never looked at: nothing lags that anyone knows of.
    let row = Row::from_item(&full(30 * DAY_MS), T0);
    assert_eq!((row.servers, row.lagging_servers), (None, None));
    // Of the wrong type: read as absent, as every other attribute.
    let odd = item(&[
        ("InstancesAtSerial", s("i-1")),
        ("TargetInstances", s("three")),
        ("TargetSeenDate", AttributeValue::N("1".into())),
    ]);
    let row = Row::from_item(&odd, T0);
    assert_eq!(
        (row.servers, row.current_servers, row.target_seen_date),
        (None, 0, None)
    );
}

#[test]
fn the_list_shows_drift_expiry_status_and_servers() {
    let mut renewed = Row::from_item(&with_fleet(full(30 * DAY_MS)), T0);
    // ACM renewed: a later expiry, a serial the target was not sent.
    renewed.with_acm(Some(&issued("0e:0f", 395)), T0);
    let mut same = Row::from_item(&with_fleet(full(30 * DAY_MS)), T0);
    same.cert_name = "api".into();
    same.with_acm(Some(&issued("0a:1b", 30)), T0);
    let mut unread = Row::from_item(&item(&[("CertName", s("old"))]), T0);
    unread.with_acm(None, T0);
    let mut gone = Row::from_item(&full(-DAY_MS), T0);
    gone.cert_name = "gone".into();
    gone.with_acm(Some(&Certificate::default()), T0);
    let rows = [renewed, same, unread, gone];
    assert_eq!(
        rows_table(&rows),
        "\
TARGET                  CERT NAME  DAYS  ACM SERIAL    EXPORTED  SERVERS  CURRENT  LAGGING  LAST STATUS  LAST INSTALLED            CERTIFICATE
Environment=Production  web        395   0e:0f*        0a:1b     3        2        1        Success      2026-01-01T00:00:00.000Z  arn:c-1
Environment=Production  api        30    0a:1b         0a:1b     3        2        1        Success      2026-01-01T00:00:00.000Z  arn:c-1
=                       old        -     ?             -         -        0        -        -            -
Environment=Production  gone       -1    (not in ACM)  0a:1b     -        0        -        Success      2026-01-01T00:00:00.000Z  arn:c-1
* renewal not exported (1 row(s)): ACM's certificate is not the one exported to the target; `certflow reconcile` exports and installs it (`--dry-run` shows the plan)
LAGGING: 2 server(s) carried the target when certflow last looked (SERVERS) and are not known to run the EXPORTED serial; `certflow reconcile` installs it on them
-: certflow has not looked at the target's servers yet (a reconcile or an install does)
"
    );
    // Only the marks that appear are explained.
    let one = rows_table(&rows[1..2]);
    assert!(
        !one.contains("renewal not exported") && !one.contains("\n-: "),
        "{one}"
    );
}

#[test]
fn the_list_as_json_keeps_its_fields_and_adds_the_drift() {
    let mut row = Row::from_item(&with_fleet(full(30 * DAY_MS)), T0);
    row.with_acm(Some(&issued("0e:0f", 395)), T0);
    let v = serde_json::to_value([&row]).unwrap();
    let r = &v[0];
    for (field, want) in [
        ("TagKeyValue", json!("Environment#Production")),
        ("CertificateArn", json!("arn:c-1")),
        ("CertExpiryDate", json!("2026-01-31T00:00:00.000Z")),
        ("DaysToExpiry", json!(30)),
        ("InstalledInstances", json!(2)),
        ("Serial", json!("0a:1b")),
        ("AcmSerial", json!("0e:0f")),
        ("AcmStatus", json!("ISSUED")),
        ("AcmDaysToExpiry", json!(395)),
        ("Servers", json!(3)),
        ("CurrentServers", json!(2)),
        ("LaggingServers", json!(1)),
        ("TargetSeenDate", json!("2026-01-01T06:00:00.000Z")),
    ] {
        assert_eq!(r[field], want, "{field} in {r}");
    }
    assert_eq!(r.get("Acm"), None, "internal");
}

#[test]
fn certificates_acm_could_not_read_make_one_warning_line() {
    assert_eq!(acm_warning(&[]), None);
    assert_eq!(
        acm_warning(&[
            ("arn:c-1".into(), "DescribeCertificate: AccessDeniedException: no\nway".into()),
            ("arn:c-2".into(), "DescribeCertificate: timed out".into()),
        ])
        .as_deref(),
        Some("warning: ACM could not be read for arn:c-1 (and 1 more), shown as ? under ACM SERIAL: DescribeCertificate: AccessDeniedException: no way")
    );
}

#[test]
fn show_says_when_a_certificate_expired_and_lists_its_recent_jobs() {
    let rows = [Row::from_item(&full(-3 * DAY_MS), T0)];
    let text = show_text(
        "arn:c-1",
        &rows,
        &[job("j-1", engine::JobStatus::Succeeded)],
    );
    assert!(
        text.starts_with("Certificate     arn:c-1\n\nTarget          Environment=Production\n"),
        "{text}"
    );
    assert!(
        text.contains("\nExpires         2025-12-29T00:00:00.000Z (EXPIRED 3 days ago)\n"),
        "{text}"
    );
    assert!(text.contains("\nInstalled on    2\n"), "{text}");
    assert!(
        text.contains(
            "\nTarget servers  not looked at yet; 0 recorded running the exported serial\n"
        ),
        "{text}"
    );
    assert!(text.contains("\nLast exported   -\n"), "{text}");
    assert!(text.contains("\nRecent jobs\nJOB  STATUS"), "{text}");
    let soon = [Row::from_item(&full(12 * DAY_MS), T0)];
    assert!(show_text("arn:c-1", &soon, &[]).contains("2026-01-13T00:00:00.000Z (in 12 days)"));
}

#[test]
fn show_says_how_far_the_row_drifted() {
    let mut row = Row::from_item(&with_fleet(full(30 * DAY_MS)), T0);
    row.with_acm(Some(&issued("0e:0f", 395)), T0);
    let text = show_text("arn:c-1", &[row], &[]);
    assert!(
        text.contains("\nTarget servers  3 when certflow last looked (2026-01-01T06:00:00.000Z); 2 run the exported serial, 1 lagging\n"),
        "{text}"
    );
    assert!(
        text.contains("\nACM serial      0e:0f (ISSUED) — renewal not exported: `certflow reconcile` exports and installs it\n"),
        "{text}"
    );
    let mut unread = Row::from_item(&full(30 * DAY_MS), T0);
    unread.with_acm(None, T0);
    assert!(show_text("arn:c-1", &[unread], &[])
        .contains("\nACM serial      ? (ACM could not be read: see the warning)\n"));
}

#[test]
fn show_of_a_certificate_never_exported_says_so() {
    assert_eq!(
        show_text("arn:c-9", &[], &[]),
        "\
Certificate     arn:c-9

Not in the inventory (no export got as far as the inventory step).

Recent jobs
(none in the jobs table)
"
    );
}
