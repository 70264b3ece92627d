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

mod listing;

use listing::{rows_table, show_text};

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

/// `DescribeCertificate` calls in flight at once when a listing reads ACM.
const ACM_AT_ONCE: usize = 16;
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

    pub(crate) fn target(&self) -> String {
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
    pub(crate) fn renewal_not_exported(&self) -> bool {
        self.acm_status.as_deref() == Some("ISSUED")
            && self
                .acm_serial
                .as_deref()
                .is_some_and(|acm| self.serial.as_deref() != Some(acm))
    }

    /// Days to expiry as the table shows them: ACM's certificate's when known, else the
    /// exported one's.
    pub(crate) fn days_left(&self) -> Option<i64> {
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
    let arns: std::collections::BTreeSet<String> =
        rows.iter().map(|r| r.certificate_arn.clone()).collect();
    // A few at a time: a hundred certificates one after the other take seconds, all at
    // once would eat into the account's ACM request rate the workers share.
    for chunk in arns.into_iter().collect::<Vec<_>>().chunks(ACM_AT_ONCE) {
        let mut calls = tokio::task::JoinSet::new();
        for arn in chunk {
            let (acm, arn) = (acm.clone(), arn.clone());
            calls.spawn(async move {
                let answer = workflows::reconcile::certificate(&acm, &arn).await;
                (arn, answer)
            });
        }
        while let Some(done) = calls.join_next().await {
            let (arn, answer) = match done {
                Ok(pair) => pair,
                // A call that panicked: the certificate is left unread, as after an error.
                Err(e) => {
                    failed.push(("(a DescribeCertificate call)".to_string(), e.to_string()));
                    continue;
                }
            };
            let answer = match answer {
                Ok(c) => Some(c),
                Err(e) => {
                    failed.push((arn.clone(), e.to_string()));
                    None
                }
            };
            answers.insert(arn, answer);
        }
    }
    failed.sort();
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

/// The rows `inventory list` shows (of one target, or all; only those expiring within
/// `expiring_within` if given), with ACM's view of each, soonest expiry first; and the
/// warning to print when ACM could not be read for some.
pub(crate) async fn listing(
    sdk: &aws_config::SdkConfig,
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    target: Option<&Target>,
    expiring_within: Option<std::time::Duration>,
    now: Millis,
) -> anyhow::Result<(Vec<Row>, Option<String>)> {
    let items = rows(ddb, table, target).await?;
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
    let warning = add_acm(sdk, &mut found, now).await;
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
    Ok((found, warning))
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
            let (found, warning) =
                listing(sdk, &ddb, table, target.as_ref(), expiring_within, now).await?;
            if let Some(warning) = warning {
                eprintln!("{warning}");
            }
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
                workflow: None,
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

#[cfg(test)]
mod tests;
