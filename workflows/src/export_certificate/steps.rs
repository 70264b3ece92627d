//! The five steps of `export-certificate`, each a plain async function: state in, outcome
//! out. Each one is safe to run twice (DESIGN §4's idempotency column).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_acm::types::{CertificateExport, CertificateStatus};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_secretsmanager::types::Tag;
use aws_sdk_ssm::types::{CommandFilter, CommandFilterKey, CommandStatus, Target};
use base64::Engine as _;
use engine::clock::rfc3339;
use engine::{Outcome, StepContext, StepError, StopReason};
use rand::RngCore;
use serde_json::json;
use sha2::Digest;

use super::request::parse_arn;
use super::{Deps, ExportState};
use crate::aws::classify;
use crate::inventory;

type StepResult = Result<Outcome<ExportState>, StepError>;

/// The line the install document prints for the engine.
const SERIAL_MARKER: &str = "CERTFLOW_INSTALLED_SERIAL=";

/// `check`: the certificate must be ISSUED and exportable; pending validation waits.
pub(super) async fn check(deps: Arc<Deps>, ctx: StepContext, mut s: ExportState) -> StepResult {
    s.request
        .validate()
        .map_err(|e| StepError::abort(e.to_string()))?;
    let arn = parse_arn(&s.request.certificate_arn).map_err(|e| StepError::abort(e.to_string()))?;
    if arn.region != deps.config.region {
        return Err(StepError::abort(format!(
            "invalid CertificateArn: the certificate is in region {}, but certflow runs in {}",
            arn.region, deps.config.region
        )));
    }
    let out = deps
        .clients
        .acm
        .describe_certificate()
        .certificate_arn(&s.request.certificate_arn)
        .send()
        .await;
    let cert = match out {
        Ok(o) => o
            .certificate
            .ok_or_else(|| StepError::retry("DescribeCertificate: empty answer"))?,
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            return Err(StepError::abort(format!(
                "certificate {} not found in account {} region {}",
                s.request.certificate_arn, arn.account, arn.region
            )))
        }
        Err(e) => return Err(classify("DescribeCertificate", &e)),
    };
    let status = cert.status().cloned();
    match status {
        Some(CertificateStatus::Issued) => {}
        Some(CertificateStatus::PendingValidation) => {
            let waited = Duration::from_millis((ctx.now() - ctx.created_at()).max(0) as u64);
            if waited >= deps.config.validation_timeout {
                return Err(StepError::abort(format!(
                    "certificate {} is still PENDING_VALIDATION after {}s: complete its DNS or email validation, then retry the job",
                    s.request.certificate_arn,
                    waited.as_secs()
                )));
            }
            let delay = Duration::from_secs(2u64.saturating_pow(s.check_polls.min(5)).min(30));
            s.check_polls += 1;
            return Ok(Outcome::poll(s, delay).with_note("certificate pending validation"));
        }
        Some(other) => {
            let reason = cert
                .failure_reason()
                .map(|r| format!(" ({})", r.as_str()))
                .unwrap_or_default();
            return Err(StepError::abort(format!(
                "certificate {} is {}{reason}: only ISSUED certificates can be exported",
                s.request.certificate_arn,
                other.as_str()
            )));
        }
        None => return Err(StepError::retry("DescribeCertificate: no status")),
    }
    let exportable = cert
        .options()
        .and_then(|o| o.export())
        .is_some_and(|e| *e == CertificateExport::Enabled);
    if !exportable {
        return Err(StepError::abort(format!(
            "certificate {} is not exportable (Options.Export is not ENABLED): request a new certificate with export enabled",
            s.request.certificate_arn
        )));
    }
    s.serial = cert.serial().map(str::to_string);
    s.not_after = cert
        .not_after()
        .and_then(|t| t.to_millis().ok())
        .map(rfc3339);
    s.key_algorithm = cert.key_algorithm().map(|k| k.as_str().to_string());
    Ok(Outcome::next("export", s))
}

/// `export`: passphrase → Secrets Manager, `ExportCertificate`, bundle → Secrets Manager.
/// Both secret versions carry a token derived from the job and step: a rerun finds the
/// version it already wrote and reuses it (same passphrase, no second version).
///
/// A first attempt (no earlier run of this step took the lease) writes straight away; a
/// later attempt first reads back what an earlier one may have stored, so that it does not
/// export the certificate a second time. Either way a version, once stored, wins: a write
/// that finds the token taken reads the stored value instead.
pub(super) async fn export(deps: Arc<Deps>, ctx: StepContext, mut s: ExportState) -> StepResult {
    let prefix = &deps.config.secret_prefix;
    let pass_name = format!("{prefix}{}/passphrase", s.request.cert_name);
    let bundle_name = format!("{prefix}{}/bundle", s.request.cert_name);
    let tags = vec![
        Tag::builder()
            .key(&s.request.target_tag_key)
            .value(&s.request.target_tag_value)
            .build(),
        Tag::builder().key("certflow:managed").value("true").build(),
    ];
    let first = ctx.attempt() <= 1;

    let pass_token = ctx.idempotency_token("passphrase");
    let pass_json = match earlier_version(&deps, &pass_name, &pass_token, first).await? {
        Some(existing) => existing,
        None => {
            let mut bytes = [0u8; 32];
            // ThreadRng is a CSPRNG (ChaCha12) seeded from the operating system.
            rand::rng().fill_bytes(&mut bytes);
            let passphrase = base64::engine::general_purpose::STANDARD.encode(bytes);
            let value = json!({ "passphrase": passphrase }).to_string();
            store_version(&deps, &pass_name, &pass_token, value, &tags, first).await?
        }
    };
    let passphrase = json_field(&pass_json, "passphrase").ok_or_else(|| {
        StepError::abort(format!("secret {pass_name} does not hold a passphrase"))
    })?;

    let bundle_token = ctx.idempotency_token("bundle");
    let bundle_json = match earlier_version(&deps, &bundle_name, &bundle_token, first).await? {
        Some(existing) => existing,
        None => {
            let out = deps
                .clients
                .acm
                .export_certificate()
                .certificate_arn(&s.request.certificate_arn)
                .passphrase(aws_sdk_acm::primitives::Blob::new(passphrase.as_bytes()))
                .send()
                .await
                .map_err(|e| classify("ExportCertificate", &e))?;
            let bundle = json!({
                "certificate": out.certificate().unwrap_or_default(),
                "certificate_chain": out.certificate_chain().unwrap_or_default(),
                "private_key": out.private_key().unwrap_or_default(),
                "serial": s.serial,
                "not_after": s.not_after,
                "certificate_arn": s.request.certificate_arn,
                "job_id": ctx.job_id().as_str(),
            })
            .to_string();
            store_version(&deps, &bundle_name, &bundle_token, bundle, &tags, first).await?
        }
    };
    let certificate_pem = json_field(&bundle_json, "certificate")
        .ok_or_else(|| StepError::abort(format!("secret {bundle_name} does not hold a bundle")))?;
    s.fingerprint = fingerprint(&certificate_pem);
    s.passphrase_secret = Some(pass_name);
    s.bundle_secret = Some(bundle_name.clone());
    Ok(Outcome::next("inventory", s).with_note(format!("bundle stored in {bundle_name}")))
}

/// What an earlier attempt stored as version `token` of secret `name`; a first attempt
/// has no earlier one to look for.
async fn earlier_version(
    deps: &Deps,
    name: &str,
    token: &str,
    first: bool,
) -> Result<Option<String>, StepError> {
    if first {
        return Ok(None);
    }
    read_version(deps, name, token).await
}

/// The string field `field` of a JSON object held in a secret.
fn json_field(json: &str, field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    value.get(field)?.as_str().map(str::to_string)
}

/// Reads the version `token` of secret `name`, if it exists.
async fn read_version(deps: &Deps, name: &str, token: &str) -> Result<Option<String>, StepError> {
    let got = deps
        .clients
        .secrets
        .get_secret_value()
        .secret_id(name)
        .version_id(token)
        .send()
        .await;
    match got {
        Ok(o) => Ok(o.secret_string().map(str::to_string)),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(classify("GetSecretValue", &e)),
    }
}

/// Stores `value` as version `token` of secret `name`, creating the secret (tagged) if
/// needed, and returns what that version holds: `value`, or what an earlier run of the
/// step stored under the same token (a version never changes).
///
/// `create_first` tries CreateSecret before PutSecretValue: one call for a secret that does
/// not exist yet (a first export), three for one that does (a renewal).
async fn store_version(
    deps: &Deps,
    name: &str,
    token: &str,
    value: String,
    tags: &[Tag],
    create_first: bool,
) -> Result<String, StepError> {
    if create_first {
        match create_secret(deps, name, token, &value, tags).await? {
            Created::Yes => return Ok(value),
            Created::Exists => {}
        }
    }
    let secrets = &deps.clients.secrets;
    let put = secrets
        .put_secret_value()
        .secret_id(name)
        .client_request_token(token)
        .secret_string(&value)
        .send()
        .await;
    match put {
        Ok(_) => {
            // The secret existed (an earlier export): make sure it carries our tags.
            secrets
                .tag_resource()
                .secret_id(name)
                .set_tags(Some(tags.to_vec()))
                .send()
                .await
                .map_err(|e| classify("TagResource", &e))?;
            Ok(value)
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            if create_first {
                return Err(StepError::retry(format!(
                    "secret {name} was deleted while being written"
                )));
            }
            match create_secret(deps, name, token, &value, tags).await? {
                Created::Yes => Ok(value),
                Created::Exists => Err(StepError::retry(format!(
                    "secret {name} was created concurrently"
                ))),
            }
        }
        // The token names a version already stored with other contents: an earlier run
        // of this step got this far. Its value is the one that counts.
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_exists_exception()) =>
        {
            read_version(deps, name, token).await?.ok_or_else(|| {
                StepError::retry(format!(
                    "secret {name}: version {token} is taken but cannot be read"
                ))
            })
        }
        Err(e) => Err(classify("PutSecretValue", &e)),
    }
}

enum Created {
    Yes,
    Exists,
}

async fn create_secret(
    deps: &Deps,
    name: &str,
    token: &str,
    value: &str,
    tags: &[Tag],
) -> Result<Created, StepError> {
    let mut create = deps
        .clients
        .secrets
        .create_secret()
        .name(name)
        .client_request_token(token)
        .secret_string(value)
        .description("Managed by certflow")
        .set_tags(Some(tags.to_vec()));
    if let Some(kms) = &deps.config.kms_key_id {
        create = create.kms_key_id(kms);
    }
    match create.send().await {
        Ok(_) => Ok(Created::Yes),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_exists_exception()) =>
        {
            Ok(Created::Exists)
        }
        Err(e) => Err(classify("CreateSecret", &e)),
    }
}

/// SHA-256 of the certificate's DER, as lowercase hex.
fn fingerprint(pem: &str) -> Option<String> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .ok()?;
    let digest = sha2::Sha256::digest(&der);
    Some(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// `inventory`: upsert the row (same result however often it runs).
pub(super) async fn inventory(deps: Arc<Deps>, ctx: StepContext, s: ExportState) -> StepResult {
    let r = &s.request;
    let mut values: Vec<(&str, AttributeValue)> = vec![
        (
            "CertificateArn",
            AttributeValue::S(r.certificate_arn.clone()),
        ),
        ("CertName", AttributeValue::S(r.cert_name.clone())),
        ("TargetTagKey", AttributeValue::S(r.target_tag_key.clone())),
        (
            "TargetTagValue",
            AttributeValue::S(r.target_tag_value.clone()),
        ),
        ("LastExportedDate", AttributeValue::S(rfc3339(ctx.now()))),
        ("LastJobId", AttributeValue::S(ctx.job_id().to_string())),
        ("LastStatus", AttributeValue::S("EXPORTED".into())),
    ];
    let optional = [
        ("PassphraseSecretName", &s.passphrase_secret),
        ("BundleSecretName", &s.bundle_secret),
        ("CertExpiryDate", &s.not_after),
        ("Serial", &s.serial),
        ("Fingerprint", &s.fingerprint),
    ];
    for (name, v) in optional {
        if let Some(v) = v {
            values.push((name, AttributeValue::S(v.clone())));
        }
    }
    update_row(&deps, &s, values).await?;
    Ok(Outcome::next("install", s))
}

async fn update_row(
    deps: &Deps,
    s: &ExportState,
    values: Vec<(&str, AttributeValue)>,
) -> Result<(), StepError> {
    let r = &s.request;
    let mut names = HashMap::new();
    let mut vals = HashMap::new();
    let mut sets = Vec::new();
    for (i, (name, value)) in values.into_iter().enumerate() {
        names.insert(format!("#a{i}"), name.to_string());
        vals.insert(format!(":v{i}"), value);
        sets.push(format!("#a{i} = :v{i}"));
    }
    deps.clients
        .dynamodb
        .update_item()
        .table_name(&deps.config.inventory_table)
        .set_key(Some(inventory::key(
            &r.target_tag_key,
            &r.target_tag_value,
            &r.certificate_arn,
            &r.cert_name,
        )))
        .update_expression(format!("SET {}", sets.join(", ")))
        .set_expression_attribute_names(Some(names))
        .set_expression_attribute_values(Some(vals))
        .send()
        .await
        .map_err(|e| classify("UpdateItem (inventory)", &e))?;
    Ok(())
}

fn comment(ctx: &StepContext) -> String {
    format!("certflow job {}", ctx.job_id())
}

/// `install`: send the install document to the tag target, secret names only. A retry
/// first looks for the command an earlier attempt may have sent, and adopts it.
pub(super) async fn install(deps: Arc<Deps>, ctx: StepContext, mut s: ExportState) -> StepResult {
    if s.command_id.is_some() {
        return Ok(Outcome::next("wait", s));
    }
    let comment = comment(&ctx);
    if ctx.attempt() > 1 {
        if let Some(found) = find_command(&deps, &ctx, &comment).await? {
            s.command_id = Some(found.clone());
            s.command_sent_at = Some(ctx.now());
            return Ok(
                Outcome::next_after("wait", s, Duration::from_secs(2)).with_note(format!(
                    "adopted command {found} sent by an earlier attempt"
                )),
            );
        }
    }
    let (Some(bundle), Some(pass)) = (&s.bundle_secret, &s.passphrase_secret) else {
        return Err(StepError::abort("install reached without exported secrets"));
    };
    let cfg = &deps.config;
    let r = &s.request;
    let mut send = deps
        .clients
        .ssm
        .send_command()
        .document_name(&cfg.document_name)
        .targets(
            Target::builder()
                .key(format!("tag:{}", r.target_tag_key))
                .values(&r.target_tag_value)
                .build(),
        )
        .parameters("CertName", vec![r.cert_name.clone()])
        .parameters("BundleSecretId", vec![bundle.clone()])
        .parameters("PassphraseSecretId", vec![pass.clone()])
        .parameters("Region", vec![cfg.region.clone()])
        .comment(&comment)
        .timeout_seconds(600)
        .max_errors("100%");
    for (name, v) in [
        ("CertDir", &cfg.cert_dir),
        ("KeyDir", &cfg.key_dir),
        ("ReloadService", &cfg.reload_service),
    ] {
        if let Some(v) = v {
            send = send.parameters(name, vec![v.clone()]);
        }
    }
    let out = send.send().await.map_err(|e| classify("SendCommand", &e))?;
    let id = out
        .command()
        .and_then(|c| c.command_id())
        .ok_or_else(|| StepError::retry("SendCommand: no command id"))?
        .to_string();
    let note = format!("sent command {id} to tag {}", r.target());
    s.command_id = Some(id);
    s.command_sent_at = Some(ctx.now());
    Ok(Outcome::next_after("wait", s, Duration::from_secs(2)).with_note(note))
}

async fn find_command(
    deps: &Deps,
    ctx: &StepContext,
    comment: &str,
) -> Result<Option<String>, StepError> {
    let since = aws_sdk_ssm::primitives::DateTime::from_millis(ctx.created_at() - 60_000);
    let filter = |k: CommandFilterKey, v: String| {
        CommandFilter::builder()
            .key(k)
            .value(v)
            .build()
            .map_err(|e| StepError::abort(format!("ListCommands filter: {e}")))
    };
    let filters = vec![
        filter(
            CommandFilterKey::DocumentName,
            deps.config.document_name.clone(),
        )?,
        filter(
            CommandFilterKey::InvokedAfter,
            since
                .fmt(aws_smithy_types::date_time::Format::DateTime)
                .map_err(|e| StepError::abort(format!("time format: {e}")))?,
        )?,
    ];
    let mut token = None;
    loop {
        let page = deps
            .clients
            .ssm
            .list_commands()
            .set_filters(Some(filters.clone()))
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| classify("ListCommands", &e))?;
        if let Some(c) = page
            .commands()
            .iter()
            .find(|c| c.comment() == Some(comment))
        {
            return Ok(c.command_id().map(str::to_string));
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(None);
        }
    }
}

fn is_final(status: &str) -> bool {
    !matches!(status, "Pending" | "InProgress" | "Delayed" | "Cancelling")
}

/// `wait`: poll the command until every server answered; zero targets, any failure, or the
/// install timeout fails the job with the servers named.
pub(super) async fn wait(deps: Arc<Deps>, ctx: StepContext, mut s: ExportState) -> StepResult {
    let Some(command_id) = s.command_id.clone() else {
        return Err(StepError::abort("wait reached without a command"));
    };
    let sent_at = s.command_sent_at.unwrap_or(ctx.now());
    let elapsed = Duration::from_millis((ctx.now() - sent_at).max(0) as u64);
    let ssm = &deps.clients.ssm;
    let listed = ssm
        .list_commands()
        .command_id(&command_id)
        .send()
        .await
        .map_err(|e| classify("ListCommands", &e))?;
    let Some(cmd) = listed.commands().first() else {
        return Err(StepError::retry(format!(
            "command {command_id} not listed yet"
        )));
    };
    let status = cmd
        .status()
        .map(CommandStatus::as_str)
        .unwrap_or("Pending")
        .to_string();
    let targets = cmd.target_count().max(0) as u32;
    s.target_count = Some(targets);
    if targets == 0 && (is_final(&status) || elapsed > Duration::from_secs(120)) {
        return Err(StepError::abort(format!(
            "no managed instance matches tag {}",
            s.request.target()
        )));
    }

    // Per-server results: GetCommandInvocation for each instance the command names (the
    // emulator names them); where it names none (tag targets on AWS), ListCommandInvocations.
    let ids: Vec<String> = cmd.instance_ids().to_vec();
    if ids.is_empty() {
        let out = ssm
            .list_command_invocations()
            .command_id(&command_id)
            .details(true)
            .send()
            .await
            .map_err(|e| classify("ListCommandInvocations", &e))?;
        for inv in out.command_invocations() {
            let Some(id) = inv.instance_id() else {
                continue;
            };
            let output: String = inv
                .command_plugins()
                .iter()
                .filter_map(|p| p.output())
                .collect::<Vec<_>>()
                .join("\n");
            let st = inv
                .status()
                .map(|x| x.as_str())
                .unwrap_or("Pending")
                .to_string();
            record(
                &mut s,
                id,
                st,
                inv.status_details().map(str::to_string),
                &output,
                "",
            );
        }
    } else {
        for id in ids {
            if s.instances.get(&id).is_some_and(|r| is_final(&r.status)) {
                continue;
            }
            let got = ssm
                .get_command_invocation()
                .command_id(&command_id)
                .instance_id(&id)
                .send()
                .await;
            match got {
                Ok(inv) => {
                    let st = inv
                        .status()
                        .map(|x| x.as_str())
                        .unwrap_or("Pending")
                        .to_string();
                    record(
                        &mut s,
                        &id,
                        st,
                        inv.status_details().map(str::to_string),
                        inv.standard_output_content().unwrap_or_default(),
                        inv.standard_error_content().unwrap_or_default(),
                    );
                }
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_invocation_does_not_exist()) =>
                {
                    record(&mut s, &id, "Pending".into(), None, "", "");
                }
                Err(e) => return Err(classify("GetCommandInvocation", &e)),
            }
        }
    }

    let failed: Vec<String> = s
        .instances
        .iter()
        .filter(|(_, r)| is_final(&r.status) && r.status != "Success")
        .map(|(id, r)| match &r.detail {
            Some(d) if d != &r.status => format!("{id} {} ({d})", r.status),
            _ => format!("{id} {}", r.status),
        })
        .collect();
    if !failed.is_empty() {
        let done = s.instances.len();
        let reason = format!(
            "install failed on {} of {} instances: {}",
            failed.len(),
            done.max(targets as usize),
            failed.join("; ")
        );
        let _ = update_row(
            &deps,
            &s,
            vec![("LastStatus", AttributeValue::S("INSTALL_FAILED".into()))],
        )
        .await;
        return Ok(Outcome::fail(s, reason));
    }
    let succeeded = s
        .instances
        .values()
        .filter(|r| r.status == "Success")
        .count();
    if targets > 0 && succeeded >= targets as usize {
        update_row(
            &deps,
            &s,
            vec![
                ("LastStatus", AttributeValue::S("INSTALLED".into())),
                ("LastInstalledDate", AttributeValue::S(rfc3339(ctx.now()))),
                (
                    "InstalledInstances",
                    AttributeValue::N(succeeded.to_string()),
                ),
            ],
        )
        .await?;
        let note = format!(
            "installed on {succeeded} instance(s): {}",
            s.instances.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        return Ok(Outcome::succeed(s).with_note(note));
    }
    if elapsed >= deps.config.install_timeout {
        let note = cancel(&deps, &command_id).await;
        let pending: Vec<String> = s
            .instances
            .iter()
            .filter(|(_, r)| !is_final(&r.status))
            .map(|(id, r)| format!("{id} {}", r.status))
            .collect();
        let reason = format!(
            "install did not finish within {}s ({}); {note}",
            deps.config.install_timeout.as_secs(),
            if pending.is_empty() {
                "no instance reported".to_string()
            } else {
                pending.join("; ")
            }
        );
        return Ok(Outcome::fail(s, reason));
    }
    let delay = Duration::from_millis((2_000.0 * 1.5f64.powi(s.wait_polls.min(10) as i32)) as u64)
        .min(Duration::from_secs(15));
    s.wait_polls += 1;
    Ok(Outcome::poll(s, delay))
}

fn record(
    s: &mut ExportState,
    id: &str,
    status: String,
    detail: Option<String>,
    stdout: &str,
    stderr: &str,
) {
    let serial = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix(SERIAL_MARKER))
        .map(|v| v.trim().to_string())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.chars().all(|c| c.is_ascii_alphanumeric() || c == ':')
        });
    let detail = match stderr.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(line) if status != "Success" => Some(line.chars().take(200).collect()),
        _ => detail,
    };
    let entry = s.instances.entry(id.to_string()).or_default();
    entry.status = status;
    entry.detail = detail;
    if serial.is_some() {
        entry.serial = serial;
    }
}

async fn cancel(deps: &Deps, command_id: &str) -> String {
    match deps
        .clients
        .ssm
        .cancel_command()
        .command_id(command_id)
        .send()
        .await
    {
        Ok(_) => format!("command {command_id} cancelled"),
        Err(e) => format!(
            "cancelling command {command_id} failed: {}",
            classify("CancelCommand", &e)
        ),
    }
}

/// On cancel or deadline: cancel the install command if one is in flight.
pub(super) async fn stop(
    deps: Arc<Deps>,
    ctx: StepContext,
    s: ExportState,
    _reason: StopReason,
) -> Option<String> {
    if ctx.step() != "wait" {
        return None;
    }
    let id = s.command_id?;
    Some(cancel(&deps, &id).await)
}
