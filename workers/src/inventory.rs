//! `certflow inventory …`: which certificate is installed where, when it expires, how its
//! last install went, and how far each row has drifted: ACM's serial now (one
//! `DescribeCertificate` per certificate listed) against the serial exported, and the
//! servers carrying the target against those known to run that serial.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::bail;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use engine::clock::parse_rfc3339;
use engine::{Clock, JobStore, Millis, StoreError, SystemClock};
use serde::Serialize;
use serde_json::json;
use workflows::inventory::{self, InventoryRow};
use workflows::reconcile::Certificate;

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
    /// ACM's serial now; absent when ACM has no such certificate or could not be read.
    pub(crate) acm_serial: Option<String>,
    /// ACM's status now (`ISSUED`, …, `NOT_FOUND` when ACM has no such certificate);
    /// absent when ACM could not be read.
    pub(crate) acm_status: Option<String>,
    /// Whole days until ACM's certificate expires (its `NotAfter`).
    pub(crate) acm_days_to_expiry: Option<i64>,
    /// `TargetInstances`: servers carrying the target when certflow last looked (a
    /// reconcile, or an install's plan).
    pub(crate) servers: Option<u64>,
    /// Servers recorded as running the exported serial (`InstancesAtSerial`, when it is
    /// about `Serial`).
    pub(crate) current_servers: u64,
    /// Servers carrying the target, when certflow last looked, not known to run the
    /// exported serial; absent when it never looked.
    pub(crate) lagging_servers: Option<u64>,
    /// `TargetSeenDate`: when certflow last looked.
    pub(crate) target_seen_date: Option<String>,
    /// Whether ACM was read for this row (`?` in the table when it could not be).
    #[serde(skip)]
    pub(crate) acm: Acm,
}

/// What ACM said about a row's certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Acm {
    /// Not asked.
    #[default]
    NotRead,
    /// Asked; the call failed (a warning says why).
    Unreadable,
    /// Asked and answered (the certificate may be gone: `AcmStatus` `NOT_FOUND`).
    Read,
}

/// Milliseconds in a day, for `DaysToExpiry`.
const DAY_MS: i64 = 86_400_000;
/// How many of a certificate's jobs `inventory show` lists: enough to see the last
/// renewals, short enough to read.
const RECENT_JOBS: usize = 10;
/// Sorts rows without an expiry date after every date (`~` follows the digits in ASCII).
const NO_EXPIRY_LAST: &str = "~";
/// Marks, in the ACM SERIAL column, a row whose ACM certificate was renewed and not
/// exported; the footnote under the table says so in words.
const RENEWAL_MARK: &str = "*";

impl Row {
    /// Reads a row leniently: an operator sees whatever a row holds, even a malformed one
    /// that renewals would refuse (`InventoryRow::from_item` is the strict reader).
    fn from_item(item: &Item, now: Millis) -> Row {
        use inventory::attr;
        let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let n = |k: &str| {
            item.get(k)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok())
        };
        let expiry = s(attr::CERT_EXPIRY_DATE);
        let days = expiry
            .as_deref()
            .and_then(parse_rfc3339)
            .map(|t| (t - now).div_euclid(DAY_MS));
        // The fleet state, read as leniently as the rest; which servers count as current
        // and lagging is the library's rule (`InventoryRow::current_servers`, `lagging`).
        let mut fleet = InventoryRow::new("", "", "", "");
        fleet.serial = s(attr::SERIAL);
        fleet.instances_serial = s(attr::INSTANCES_SERIAL);
        fleet.instances_at_serial = item
            .get(attr::INSTANCES_AT_SERIAL)
            .and_then(|v| v.as_ss().ok())
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        fleet.target_instances = n(attr::TARGET_INSTANCES);
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
            installed_instances: n(attr::INSTALLED_INSTANCES),
            verified_instances: n(attr::VERIFIED_INSTANCES),
            last_exported_date: s(attr::LAST_EXPORTED_DATE),
            last_job_id: s(attr::LAST_JOB_ID),
            serial: s(attr::SERIAL),
            fingerprint: s(attr::FINGERPRINT),
            secret_name: s(attr::SECRET_NAME),
            passphrase_secret_name: s(attr::PASSPHRASE_SECRET_NAME),
            bundle_secret_name: s(attr::BUNDLE_SECRET_NAME),
            acm_serial: None,
            acm_status: None,
            acm_days_to_expiry: None,
            servers: fleet.target_instances,
            current_servers: fleet.current_servers().len() as u64,
            lagging_servers: fleet.lagging(),
            target_seen_date: s(attr::TARGET_SEEN_DATE),
            acm: Acm::NotRead,
        }
    }

    fn target(&self) -> String {
        format!("{}={}", self.target_tag_key, self.target_tag_value)
    }

    /// Adds what ACM said about the certificate: `None` when ACM could not be read.
    fn with_acm(&mut self, cert: Option<&Certificate>, now: Millis) {
        match cert {
            None => self.acm = Acm::Unreadable,
            Some(c) => {
                self.acm = Acm::Read;
                self.acm_serial = c.serial.clone();
                self.acm_status = Some(if c.found {
                    c.status.clone().unwrap_or_else(|| "UNKNOWN".into())
                } else {
                    "NOT_FOUND".into()
                });
                self.acm_days_to_expiry = c.days_to_expiry(now);
            }
        }
    }

    /// ACM issued a certificate this row's target was not sent: a renewal not exported
    /// (what `certflow reconcile` exports).
    fn renewal_not_exported(&self) -> bool {
        self.acm_status.as_deref() == Some("ISSUED")
            && self
                .acm_serial
                .as_deref()
                .is_some_and(|acm| self.serial.as_deref() != Some(acm))
    }

    /// Days to expiry as the table shows them: ACM's certificate's when known, else the
    /// exported one's.
    fn days_left(&self) -> Option<i64> {
        self.acm_days_to_expiry.or(self.days_to_expiry)
    }
}

/// ACM's view of each certificate of `rows` (one `DescribeCertificate` per certificate),
/// added to the rows. A certificate ACM could not be read for is left as `?`: the
/// listing is still worth having, so instead of failing, the returned warning names the
/// error.
async fn add_acm(sdk: &aws_config::SdkConfig, rows: &mut [Row], now: Millis) -> Option<String> {
    let acm = workflows::aws::Clients::new(sdk).acm;
    let mut answers: BTreeMap<String, Option<Certificate>> = BTreeMap::new();
    let mut failed = Vec::new();
    for r in rows.iter() {
        if answers.contains_key(&r.certificate_arn) {
            continue;
        }
        let answer = match workflows::reconcile::certificate(&acm, &r.certificate_arn).await {
            Ok(c) => Some(c),
            Err(e) => {
                failed.push((r.certificate_arn.clone(), e.to_string()));
                None
            }
        };
        answers.insert(r.certificate_arn.clone(), answer);
    }
    for r in rows.iter_mut() {
        let answer = answers.get(&r.certificate_arn).cloned().flatten();
        r.with_acm(answer.as_ref(), now);
    }
    acm_warning(&failed)
}

/// One line that says which certificates ACM could not be read for, and why (the first
/// error).
fn acm_warning(failed: &[(String, String)]) -> Option<String> {
    let (arn, error) = failed.first()?;
    let others = match failed.len() {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    Some(view::one_line(&format!(
        "warning: ACM could not be read for {arn}{others}, shown as ? under ACM SERIAL: {error}"
    )))
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

/// Fails with [`StoreError::TableNotFound`] when the inventory table does not exist, so
/// that a command reading it through the workflows' code (whose errors name the call,
/// not what to do) says what to do instead. One read of at most one item.
pub(crate) async fn check_table(ddb: &aws_sdk_dynamodb::Client, table: &str) -> anyhow::Result<()> {
    ddb.scan()
        .table_name(table)
        .limit(1)
        .send()
        .await
        .map_err(|e| map_error("Scan", table, &e))?;
    Ok(())
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

/// The ACM SERIAL cell: ACM's serial, marked when it was not exported; `?` when ACM
/// could not be read, its status when the certificate is gone or not issued.
fn acm_cell(r: &Row) -> String {
    match (r.acm, r.acm_status.as_deref()) {
        (Acm::Unreadable, _) => "?".into(),
        (Acm::NotRead, _) => "-".into(),
        (Acm::Read, Some("NOT_FOUND")) => "(not in ACM)".into(),
        (Acm::Read, status) => {
            let mut cell = view::serial_cell(r.acm_serial.as_deref());
            if r.renewal_not_exported() {
                cell.push_str(RENEWAL_MARK);
            }
            match status {
                Some("ISSUED") | None => cell,
                Some(other) => format!("{cell} {other}"),
            }
        }
    }
}

/// Servers behind, or `-` when certflow never looked at the target.
fn lagging_cell(r: &Row) -> String {
    r.lagging_servers
        .map_or_else(|| "-".into(), |n| n.to_string())
}

fn rows_table(rows: &[Row]) -> String {
    let dash = || "-".to_string();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.target(),
                r.cert_name.clone(),
                r.days_left().map_or_else(dash, |d| d.to_string()),
                acm_cell(r),
                view::serial_cell(r.serial.as_deref()),
                r.servers.map_or_else(dash, |n| n.to_string()),
                r.current_servers.to_string(),
                lagging_cell(r),
                r.last_status.clone().unwrap_or_else(dash),
                r.last_installed_date.clone().unwrap_or_else(dash),
                r.certificate_arn.clone(),
            ]
        })
        .collect();
    let mut out = view::table(
        &[
            "TARGET",
            "CERT NAME",
            "DAYS",
            "ACM SERIAL",
            "EXPORTED",
            "SERVERS",
            "CURRENT",
            "LAGGING",
            "LAST STATUS",
            "LAST INSTALLED",
            "CERTIFICATE",
        ],
        &cells,
    );
    out.push_str(&footnotes(rows));
    out
}

/// The lines under the table that explain its marks, only those that appear.
fn footnotes(rows: &[Row]) -> String {
    let mut out = String::new();
    let renewed = rows.iter().filter(|r| r.renewal_not_exported()).count();
    if renewed > 0 {
        out.push_str(&format!(
            "{RENEWAL_MARK} renewal not exported ({renewed} row(s)): ACM's certificate is not the one exported to the target; `certflow reconcile` exports and installs it (`--dry-run` shows the plan)\n"
        ));
    }
    let behind: u64 = rows.iter().filter_map(|r| r.lagging_servers).sum();
    if behind > 0 {
        out.push_str(&format!(
            "LAGGING: {behind} server(s) carried the target when certflow last looked (SERVERS) and are not known to run the EXPORTED serial; `certflow reconcile` installs it on them\n"
        ));
    }
    if rows.iter().any(|r| r.lagging_servers.is_none()) {
        out.push_str(
            "-: certflow has not looked at the target's servers yet (a reconcile or an install does)\n",
        );
    }
    out
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
            if let Some(warning) = add_acm(sdk, &mut found, now).await {
                eprintln!("{warning}");
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
            let mut found: Vec<Row> = items.iter().map(|i| Row::from_item(i, now)).collect();
            if let Some(warning) = add_acm(sdk, &mut found, now).await {
                eprintln!("{warning}");
            }
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

/// The row's fleet state in words, for `inventory show`.
fn fleet_text(r: &Row) -> String {
    match (r.servers, r.lagging_servers) {
        (Some(n), Some(lagging)) => format!(
            "{n} when certflow last looked ({}); {} run the exported serial, {lagging} lagging",
            r.target_seen_date.as_deref().unwrap_or("date not recorded"),
            r.current_servers
        ),
        _ => format!(
            "not looked at yet; {} recorded running the exported serial",
            r.current_servers
        ),
    }
}

/// ACM's serial and status, and whether the target was sent it, for `inventory show`.
fn acm_text(r: &Row) -> Option<String> {
    match r.acm {
        Acm::NotRead => None,
        Acm::Unreadable => Some("? (ACM could not be read: see the warning)".into()),
        Acm::Read => Some(match r.acm_status.as_deref() {
            Some("NOT_FOUND") => "ACM has no such certificate".into(),
            status => {
                let mut text = format!(
                    "{} ({})",
                    r.acm_serial.as_deref().unwrap_or("-"),
                    status.unwrap_or("UNKNOWN")
                );
                if r.renewal_not_exported() {
                    text.push_str(
                        " — renewal not exported: `certflow reconcile` exports and installs it",
                    );
                }
                text
            }
        }),
    }
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
        line("Installed on", installed.as_deref());
        line("Target servers", Some(&fleet_text(r)));
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
        let acm = acm_text(r);
        line("ACM serial", acm.as_deref());
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
}
