//! `certflow inventory …`: which certificate is installed where, when it expires and how
//! its last install went.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::bail;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use engine::clock::parse_rfc3339;
use engine::{Clock, JobStore, Millis, StoreError, SystemClock};
use serde::Serialize;
use serde_json::json;
use workflows::inventory;

use crate::cli::{InventoryCommand, Output, Target};
use crate::jobs::pretty;
use crate::paging;
use crate::view;

type Item = HashMap<String, AttributeValue>;

/// One inventory row, with the table's attribute names.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Row {
    pub(crate) tag_key_value: String,
    pub(crate) certificate_arn: String,
    pub(crate) cert_name: String,
    pub(crate) target_tag_key: String,
    pub(crate) target_tag_value: String,
    pub(crate) cert_expiry_date: Option<String>,
    /// Whole days until `CertExpiryDate` (negative: expired).
    pub(crate) days_to_expiry: Option<i64>,
    pub(crate) last_status: Option<String>,
    pub(crate) last_installed_date: Option<String>,
    pub(crate) installed_instances: Option<u64>,
    /// Of those, how many were verified serving the serial after the reload.
    pub(crate) verified_instances: Option<u64>,
    pub(crate) last_exported_date: Option<String>,
    pub(crate) last_job_id: Option<String>,
    pub(crate) serial: Option<String>,
    pub(crate) fingerprint: Option<String>,
    pub(crate) secret_name: Option<String>,
    /// The two secrets of the old layout, shown while a row still names them.
    pub(crate) passphrase_secret_name: Option<String>,
    pub(crate) bundle_secret_name: Option<String>,
}

/// Milliseconds in a day, for `DaysToExpiry`.
const DAY_MS: i64 = 86_400_000;
/// How many of a certificate's jobs `inventory show` lists: enough to see the last
/// renewals, short enough to read.
const RECENT_JOBS: usize = 10;
/// Sorts rows without an expiry date after every date (`~` follows the digits in ASCII).
const NO_EXPIRY_LAST: &str = "~";

impl Row {
    /// Reads a row leniently: an operator sees whatever a row holds, even a malformed one
    /// that renewals would refuse (`InventoryRow::from_item` is the strict reader).
    fn from_item(item: &Item, now: Millis) -> Row {
        use inventory::attr;
        let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let expiry = s(attr::CERT_EXPIRY_DATE);
        let days = expiry
            .as_deref()
            .and_then(parse_rfc3339)
            .map(|t| (t - now).div_euclid(DAY_MS));
        Row {
            tag_key_value: s(inventory::PK).unwrap_or_default(),
            certificate_arn: s(attr::CERTIFICATE_ARN).unwrap_or_default(),
            cert_name: s(attr::CERT_NAME).unwrap_or_default(),
            target_tag_key: s(attr::TARGET_TAG_KEY).unwrap_or_default(),
            target_tag_value: s(attr::TARGET_TAG_VALUE).unwrap_or_default(),
            cert_expiry_date: expiry,
            days_to_expiry: days,
            last_status: s(attr::LAST_STATUS),
            last_installed_date: s(attr::LAST_INSTALLED_DATE),
            installed_instances: item
                .get(attr::INSTALLED_INSTANCES)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok()),
            verified_instances: item
                .get(attr::VERIFIED_INSTANCES)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok()),
            last_exported_date: s(attr::LAST_EXPORTED_DATE),
            last_job_id: s(attr::LAST_JOB_ID),
            serial: s(attr::SERIAL),
            fingerprint: s(attr::FINGERPRINT),
            secret_name: s(attr::SECRET_NAME),
            passphrase_secret_name: s(attr::PASSPHRASE_SECRET_NAME),
            bundle_secret_name: s(attr::BUNDLE_SECRET_NAME),
        }
    }

    fn target(&self) -> String {
        format!("{}={}", self.target_tag_key, self.target_tag_value)
    }
}

/// A DynamoDB error on the inventory table: a missing table is
/// [`StoreError::TableNotFound`] (so the message says what to do), anything else says
/// which call failed.
fn map_error<E, R>(op: &str, table: &str, e: &SdkError<E, R>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if e.code() == Some("ResourceNotFoundException") {
        StoreError::TableNotFound {
            table: table.to_string(),
        }
        .into()
    } else {
        anyhow::anyhow!("{op} on table {table}: {}", DisplayErrorContext(e))
    }
}

/// Every row of a target (a Query on the partition key), or of the whole table (a Scan).
async fn rows(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    target: Option<&Target>,
) -> anyhow::Result<Vec<Item>> {
    let mut out = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let (items, next) = match target {
            Some(t) => {
                let got = ddb
                    .query()
                    .table_name(table)
                    .key_condition_expression("#pk = :pk")
                    .expression_attribute_names("#pk", inventory::PK)
                    .expression_attribute_values(
                        ":pk",
                        AttributeValue::S(format!("{}#{}", t.key, t.value)),
                    )
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| map_error("Query", table, &e))?;
                (got.items, got.last_evaluated_key)
            }
            None => {
                let got = ddb
                    .scan()
                    .table_name(table)
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| map_error("Scan", table, &e))?;
                (got.items, got.last_evaluated_key)
            }
        };
        out.extend(items.unwrap_or_default());
        match next {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return Ok(out),
        }
    }
}

/// The rows of one certificate, through the `ByCertificateArn` index.
async fn rows_of_certificate(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    arn: &str,
) -> anyhow::Result<Vec<Item>> {
    let mut out = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let got = ddb
            .query()
            .table_name(table)
            .index_name(inventory::BY_CERTIFICATE)
            .key_condition_expression("CertificateArn = :a")
            .expression_attribute_values(":a", AttributeValue::S(arn.to_string()))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| map_error("Query (ByCertificateArn)", table, &e))?;
        out.extend(got.items.unwrap_or_default());
        match got.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return Ok(out),
        }
    }
}

/// How many servers installed the serial, and how many of them were verified serving it:
/// `12`, or `12 (12 verified)` when the deployment verifies.
fn servers_cell(r: &Row) -> String {
    match (r.installed_instances, r.verified_instances) {
        (Some(n), Some(v)) if v > 0 => format!("{n} ({v} verified serving)"),
        (Some(n), _) => n.to_string(),
        (None, _) => "-".into(),
    }
}

fn rows_table(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.target(),
                r.cert_name.clone(),
                r.cert_expiry_date.clone().unwrap_or_else(|| "-".into()),
                r.days_to_expiry
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.last_status.clone().unwrap_or_else(|| "-".into()),
                servers_cell(r),
                r.last_installed_date.clone().unwrap_or_else(|| "-".into()),
                r.certificate_arn.clone(),
            ]
        })
        .collect();
    view::table(
        &[
            "TARGET",
            "CERT NAME",
            "EXPIRES",
            "DAYS",
            "LAST STATUS",
            "SERVERS",
            "LAST INSTALLED",
            "CERTIFICATE",
        ],
        &cells,
    )
}

/// Runs `certflow inventory list` or `show`.
pub(crate) async fn run(
    sdk: &aws_config::SdkConfig,
    table: &str,
    store: &Arc<dyn JobStore>,
    output: Output,
    cmd: InventoryCommand,
) -> anyhow::Result<()> {
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let now = SystemClock.now();
    match cmd {
        InventoryCommand::List {
            target,
            expiring_within,
        } => {
            let items = rows(&ddb, table, target.as_ref()).await?;
            let mut found: Vec<Row> = items.iter().map(|i| Row::from_item(i, now)).collect();
            if let Some(within) = expiring_within {
                let until = now + within.as_millis() as Millis;
                found.retain(|r| {
                    r.cert_expiry_date
                        .as_deref()
                        .and_then(parse_rfc3339)
                        .is_some_and(|t| t <= until)
                });
            }
            found.sort_by(|a, b| {
                let key = |r: &Row| {
                    r.cert_expiry_date
                        .clone()
                        .unwrap_or_else(|| NO_EXPIRY_LAST.into())
                };
                key(a)
                    .cmp(&key(b))
                    .then_with(|| a.tag_key_value.cmp(&b.tag_key_value))
                    .then_with(|| a.cert_name.cmp(&b.cert_name))
            });
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&found)?),
                Output::Table if found.is_empty() => println!(
                    "no inventory rows{}{}",
                    target
                        .as_ref()
                        .map(|t| format!(" for {}={}", t.key, t.value))
                        .unwrap_or_default(),
                    expiring_within
                        .map(|d| format!(" expiring within {}", humantime::format_duration(d)))
                        .unwrap_or_default()
                ),
                Output::Table => print!("{}", rows_table(&found)),
            }
        }
        InventoryCommand::Import {
            from_table,
            dry_run,
        } => crate::import::run(sdk, table, &from_table, dry_run, output).await?,
        InventoryCommand::Show { certificate_arn } => {
            let items = rows_of_certificate(&ddb, table, &certificate_arn).await?;
            let found: Vec<Row> = items.iter().map(|i| Row::from_item(i, now)).collect();
            let q = paging::Query {
                statuses: engine::JobStatus::ALL.to_vec(),
                certificate_arn: Some(certificate_arn.clone()),
                since: None,
                limit: RECENT_JOBS,
            };
            let jobs = paging::list(store, &q, None).await?.jobs;
            if found.is_empty() && jobs.is_empty() {
                bail!(
                    "certificate {certificate_arn} is not in the inventory and has no jobs — certflow never exported it; export it with `certflow submit --certificate-arn {certificate_arn} --cert-name NAME --target KEY=VALUE --wait`"
                );
            }
            match output {
                Output::Json => {
                    let jobs: Vec<_> = jobs.iter().map(view::job_json).collect();
                    println!(
                        "{}",
                        pretty(&json!({
                            "CertificateArn": certificate_arn,
                            "Rows": found,
                            "RecentJobs": jobs,
                        }))?
                    );
                }
                Output::Table => print!("{}", show_text(&certificate_arn, &found, &jobs)),
            }
        }
    }
    Ok(())
}

fn show_text(arn: &str, rows: &[Row], jobs: &[engine::JobRecord]) -> String {
    let mut out = format!("Certificate     {}\n", view::printable(arn));
    if rows.is_empty() {
        out.push_str("\nNot in the inventory (no export got as far as the inventory step).\n");
    }
    for r in rows {
        out.push('\n');
        let mut line = |k: &str, v: Option<&str>| {
            out.push_str(&format!("{k:<15} {}\n", view::one_line(v.unwrap_or("-"))));
        };
        line("Target", Some(&r.target()));
        line("Cert name", Some(&r.cert_name));
        let expires = r.cert_expiry_date.as_ref().map(|e| match r.days_to_expiry {
            Some(d) if d < 0 => format!("{e} (EXPIRED {} days ago)", -d),
            Some(d) => format!("{e} (in {d} days)"),
            None => e.clone(),
        });
        line("Expires", expires.as_deref());
        line("Last status", r.last_status.as_deref());
        let installed = r.installed_instances.map(|_| servers_cell(r));
        line("Servers", installed.as_deref());
        line("Last installed", r.last_installed_date.as_deref());
        line("Last exported", r.last_exported_date.as_deref());
        line("Last job", r.last_job_id.as_deref());
        // Each server's installed and served serial is in the job that installed it.
        let per_server = r
            .last_job_id
            .as_ref()
            .map(|j| format!("certflow jobs show {} --servers all", view::printable(j)));
        line("Per server", per_server.as_deref());
        line("Serial", r.serial.as_deref());
        line("Fingerprint", r.fingerprint.as_deref());
        line("Secret", r.secret_name.as_deref());
        // Rows exported before one secret held both still name the two old secrets.
        if r.bundle_secret_name.is_some() || r.passphrase_secret_name.is_some() {
            line("Bundle secret", r.bundle_secret_name.as_deref());
            line("Passphrase", r.passphrase_secret_name.as_deref());
        }
    }
    out.push_str("\nRecent jobs\n");
    if jobs.is_empty() {
        out.push_str("(none in the jobs table)\n");
    } else {
        out.push_str(&view::jobs_table(jobs));
    }
    out
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn the_list_shows_expiry_days_status_and_servers() {
        let rows = [
            Row::from_item(&full(30 * DAY_MS), T0),
            Row::from_item(&item(&[("CertName", s("api"))]), T0),
        ];
        assert_eq!(
            rows_table(&rows),
            "\
TARGET                  CERT NAME  EXPIRES                   DAYS  LAST STATUS  SERVERS  LAST INSTALLED            CERTIFICATE
Environment=Production  web        2026-01-31T00:00:00.000Z  30    Success      2        2026-01-01T00:00:00.000Z  arn:c-1
=                       api        -                         -     -            -        -
"
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
        assert!(text.contains("\nServers         2\n"), "{text}");
        assert!(text.contains("\nLast exported   -\n"), "{text}");
        assert!(text.contains("\nRecent jobs\nJOB  STATUS"), "{text}");
        let soon = [Row::from_item(&full(12 * DAY_MS), T0)];
        assert!(show_text("arn:c-1", &soon, &[]).contains("2026-01-13T00:00:00.000Z (in 12 days)"));
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
}
