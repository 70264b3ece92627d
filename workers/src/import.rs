//! `certflow inventory import --from-table`: copies the rows of the reference solution's
//! inventory table (`CertTagMapping`) into certflow's, so that certflow takes those
//! certificates over (the next renewal, or reconcile, exports each row anew, into a secret
//! of certflow's own). Rows already in certflow's inventory are left as they are; rows
//! that would not pass as an export request are refused, each with its reason. Then, per
//! certificate, whether its `certflow:targets` tag lets certflow install it on those
//! targets, with the command that would.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use serde::Serialize;
use serde_json::json;
use workflows::export_certificate::trust;
use workflows::inventory::{self, reference, InventoryRow};

use crate::cli::Output;
use crate::jobs::pretty;
use crate::view;

/// What became of one row of the reference's table.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Outcome {
    /// The reference row's `TagKeyValue`.
    pub(crate) tag_key_value: String,
    /// The reference row's sort key (`CertificateArn#CertName`).
    pub(crate) certificate_arn_cert_name: String,
    /// `imported`, `present` (already in certflow's inventory), `would import` (dry
    /// run) or `refused`.
    pub(crate) result: &'static str,
    /// Why a row was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
}

/// Runs the import (or, with `dry_run`, says what it would do).
pub(crate) async fn run(
    sdk: &aws_config::SdkConfig,
    inventory_table: &str,
    from_table: &str,
    dry_run: bool,
    output: Output,
) -> anyhow::Result<()> {
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let mut outcomes = Vec::new();
    let mut targets: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    let mut start = None;
    loop {
        // A one-time copy of a whole table: a Scan is what it takes.
        let page = ddb
            .scan()
            .table_name(from_table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| {
                if e.code() == Some("ResourceNotFoundException") {
                    anyhow::anyhow!(
                        "table {from_table} not found — name the reference solution's inventory table (CertTagMapping in its stack)"
                    )
                } else {
                    anyhow::anyhow!("reading {from_table}: {}", DisplayErrorContext(&e))
                }
            })?;
        for item in page.items() {
            let s = |k: &str| {
                item.get(k)
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default()
            };
            let mut outcome = Outcome {
                tag_key_value: s(inventory::PK),
                certificate_arn_cert_name: s(reference::SORT_KEY),
                result: "refused",
                reason: None,
            };
            match reference::from_reference(item) {
                Err(why) => outcome.reason = Some(why),
                Ok(row) => {
                    outcome.result = if dry_run {
                        "would import"
                    } else {
                        put(&ddb, inventory_table, &row).await?
                    };
                    targets
                        .entry(row.certificate_arn.clone())
                        .or_default()
                        .insert((row.target_tag_key.clone(), row.target_tag_value.clone()));
                }
            }
            outcomes.push(outcome);
        }
        match page.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => break,
        }
    }
    let missing = not_allowed(sdk, &targets).await;
    match output {
        Output::Json => println!(
            "{}",
            pretty(&json!({
                "FromTable": from_table,
                "DryRun": dry_run,
                "Rows": outcomes,
                "TargetsNotAllowed": missing.iter().map(|(arn, t)| json!({
                    "CertificateArn": arn,
                    "Targets": t,
                    "Allow": allow_command(arn, t),
                })).collect::<Vec<_>>(),
            }))?
        ),
        Output::Table => print!("{}", text(from_table, dry_run, &outcomes, &missing)),
    }
    if outcomes.iter().any(|o| o.result == "refused") {
        anyhow::bail!(
            "{} row(s) of {from_table} were refused (reasons above); the others were {}",
            outcomes.iter().filter(|o| o.result == "refused").count(),
            if dry_run {
                "not written (dry run)"
            } else {
                "imported"
            }
        );
    }
    Ok(())
}

/// Writes `row` unless certflow's inventory has it already.
async fn put(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    row: &InventoryRow,
) -> anyhow::Result<&'static str> {
    let done = ddb
        .put_item()
        .table_name(table)
        .set_item(Some(row.to_item()))
        .condition_expression("attribute_not_exists(#pk)")
        .expression_attribute_names("#pk", inventory::PK)
        .send()
        .await;
    match done {
        Ok(_) => Ok("imported"),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            Ok("present")
        }
        Err(e) => Err(anyhow::anyhow!(
            "writing {table}: {}",
            DisplayErrorContext(&e)
        ))
        .context("importing into certflow's inventory"),
    }
}

/// Per certificate, the targets its `certflow:targets` tag does not list (every target
/// when the tag is missing or cannot be read).
async fn not_allowed(
    sdk: &aws_config::SdkConfig,
    targets: &BTreeMap<String, BTreeSet<(String, String)>>,
) -> Vec<(String, Vec<String>)> {
    let acm = workflows::aws::Clients::new(sdk).acm;
    let mut out = Vec::new();
    for (arn, wanted) in targets {
        let allowed = match acm
            .list_tags_for_certificate()
            .certificate_arn(arn)
            .send()
            .await
        {
            Ok(tags) => tags
                .tags()
                .iter()
                .find(|t| t.key() == trust::TARGETS_TAG)
                .and_then(|t| t.value().map(str::to_string)),
            Err(_) => None,
        };
        let missing: Vec<String> = wanted
            .iter()
            .filter(|(k, v)| trust::authorise(arn, allowed.as_deref(), k, v).is_err())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !missing.is_empty() {
            out.push((arn.clone(), missing));
        }
    }
    out
}

/// The command that allows `targets` on certificate `arn` (it replaces the tag's value:
/// the caller lists every target).
fn allow_command(arn: &str, targets: &[String]) -> String {
    format!(
        "aws acm add-tags-to-certificate --certificate-arn {arn} --tags Key={},Value=\"{}\"",
        trust::TARGETS_TAG,
        targets.join(" ")
    )
}

fn text(
    from: &str,
    dry_run: bool,
    outcomes: &[Outcome],
    missing: &[(String, Vec<String>)],
) -> String {
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            vec![
                o.tag_key_value.clone(),
                o.certificate_arn_cert_name.clone(),
                o.result.to_string(),
                o.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut out = format!(
        "{} {} row(s) of {}\n",
        if dry_run { "Would import" } else { "Imported" },
        outcomes
            .iter()
            .filter(|o| matches!(o.result, "imported" | "would import"))
            .count(),
        view::printable(from)
    );
    out.push_str(&view::table(
        &[
            "TAG KEY VALUE",
            "CERTIFICATE ARN # CERT NAME",
            "RESULT",
            "REASON",
        ],
        &rows,
    ));
    if !missing.is_empty() {
        out.push_str(
            "\ncertflow installs a certificate only on the targets its certflow:targets tag lists.\nNot listed yet (allow them, keeping any target already listed):\n",
        );
        for (arn, targets) in missing {
            out.push_str(&view::one_line(&allow_command(arn, targets)));
            out.push('\n');
        }
    }
    out
}
