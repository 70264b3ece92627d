//! The Systems Manager (Run Command) adapter: send the install command, find one an earlier
//! attempt sent, read the command's and each server's status, cancel it. SSM's status
//! names are kept as [`InstanceStatus`], which is also how a job's `Data` records them.

use std::fmt;

use std::sync::Mutex;

use aws_sdk_ssm::types::{
    CommandFilter, CommandFilterKey, DocumentHashType, InstanceInformationStringFilter,
};
use engine::{Millis, StepError};
use serde::{Deserialize, Serialize};

use crate::aws::classify;

/// Where the install stands on one server: SSM's invocation status, by SSM's own name
/// (`Success`, `Failed`, `TimedOut`, …). The same names serve for a command's overall
/// status, whose values are a subset of these.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstanceStatus {
    /// Not started on the server yet (also: not reported yet).
    #[default]
    Pending,
    /// Running on the server.
    InProgress,
    /// Waiting for the command's concurrency limit.
    Delayed,
    /// Installed.
    Success,
    /// Cancelled before it finished.
    Cancelled,
    /// Did not finish within the command's timeout.
    TimedOut,
    /// Ran and failed.
    Failed,
    /// Being cancelled.
    Cancelling,
    /// A status this version does not know, kept verbatim (final, and not a success).
    #[serde(untagged)]
    Other(String),
}

impl InstanceStatus {
    /// SSM's name for the status, e.g. `"TimedOut"`.
    pub fn as_str(&self) -> &str {
        match self {
            InstanceStatus::Pending => "Pending",
            InstanceStatus::InProgress => "InProgress",
            InstanceStatus::Delayed => "Delayed",
            InstanceStatus::Success => "Success",
            InstanceStatus::Cancelled => "Cancelled",
            InstanceStatus::TimedOut => "TimedOut",
            InstanceStatus::Failed => "Failed",
            InstanceStatus::Cancelling => "Cancelling",
            InstanceStatus::Other(s) => s,
        }
    }

    /// Whether the server is done with the command (however it went): anything but
    /// pending, in progress, delayed or being cancelled.
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            InstanceStatus::Pending
                | InstanceStatus::InProgress
                | InstanceStatus::Delayed
                | InstanceStatus::Cancelling
        )
    }
}

impl From<&str> for InstanceStatus {
    fn from(s: &str) -> Self {
        match s {
            "Pending" => InstanceStatus::Pending,
            "InProgress" => InstanceStatus::InProgress,
            "Delayed" => InstanceStatus::Delayed,
            "Success" => InstanceStatus::Success,
            "Cancelled" => InstanceStatus::Cancelled,
            "TimedOut" => InstanceStatus::TimedOut,
            "Failed" => InstanceStatus::Failed,
            "Cancelling" => InstanceStatus::Cancelling,
            other => InstanceStatus::Other(other.to_string()),
        }
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares with SSM's name, so that `status == "Success"` reads as it did when the
/// status was a string.
impl PartialEq<str> for InstanceStatus {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for InstanceStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Most instance ids SSM takes on one `SendCommand`: a batch of a rollout is at most this
/// many servers, so that it is one command.
pub(crate) const MAX_INSTANCE_IDS: usize = 50;

/// The install command to send: a document run on a list of servers.
pub(crate) struct Command<'a> {
    /// The document.
    pub(crate) document: &'a str,
    /// The servers (at most [`MAX_INSTANCE_IDS`]).
    pub(crate) instance_ids: &'a [String],
    /// The document's parameters (one value each).
    pub(crate) parameters: Vec<(&'static str, String)>,
    /// The command's comment: how a later attempt recognises it.
    pub(crate) comment: &'a str,
    /// How long SSM lets it run on a server.
    pub(crate) timeout_seconds: i32,
    /// SSM's `MaxErrors`.
    pub(crate) max_errors: String,
    /// The SHA-256 hash of the document version described just before: SSM refuses the
    /// command if the document's content has changed since.
    pub(crate) document_hash: &'a str,
}

/// A managed server as `DescribeInstanceInformation` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ManagedServer {
    /// `i-…` (EC2) or `mi-…` (on-premises).
    pub(crate) id: String,
    /// Its SSM agent answered its last ping (`PingStatus` `Online`).
    pub(crate) online: bool,
    /// `PingStatus` as SSM names it.
    pub(crate) ping: String,
}

/// Page size of `DescribeInstanceInformation` (its maximum).
const DESCRIBE_PAGE: i32 = 50;

/// Every managed server carrying tag `key` = `value`, sorted by id: the rollout's order.
pub(crate) async fn servers(
    ssm: &aws_sdk_ssm::Client,
    key: &str,
    value: &str,
) -> Result<Vec<ManagedServer>, StepError> {
    describe_servers(ssm, vec![string_filter(&format!("tag:{key}"), [value])?]).await
}

/// Those of `ids` that are managed servers carrying tag `key` = `value` (`None`: any
/// tag), sorted by id. `ids` may be any number: they are asked for 50 at a time (SSM's
/// limit on a filter's values).
pub(crate) async fn servers_among(
    ssm: &aws_sdk_ssm::Client,
    tag: Option<(&str, &str)>,
    ids: &[String],
) -> Result<Vec<ManagedServer>, StepError> {
    let mut all = Vec::new();
    for chunk in ids.chunks(DESCRIBE_PAGE as usize) {
        let mut filters = vec![string_filter(
            "InstanceIds",
            chunk.iter().map(String::as_str),
        )?];
        if let Some((key, value)) = tag {
            filters.push(string_filter(&format!("tag:{key}"), [value])?);
        }
        all.extend(describe_servers(ssm, filters).await?);
    }
    all.sort_by(|a, b| a.id.cmp(&b.id));
    all.dedup_by(|a, b| a.id == b.id);
    Ok(all)
}

fn string_filter<'a>(
    key: &str,
    values: impl IntoIterator<Item = &'a str>,
) -> Result<InstanceInformationStringFilter, StepError> {
    InstanceInformationStringFilter::builder()
        .key(key)
        .set_values(Some(values.into_iter().map(str::to_string).collect()))
        .build()
        .map_err(|e| StepError::abort(format!("DescribeInstanceInformation filter: {e}")))
}

/// `DescribeInstanceInformation` with `filters`, every page, sorted by id.
async fn describe_servers(
    ssm: &aws_sdk_ssm::Client,
    filters: Vec<InstanceInformationStringFilter>,
) -> Result<Vec<ManagedServer>, StepError> {
    let mut all = Vec::new();
    let mut token = None;
    loop {
        let page = ssm
            .describe_instance_information()
            .set_filters(Some(filters.clone()))
            .max_results(DESCRIBE_PAGE)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| classify("DescribeInstanceInformation", &e))?;
        for info in page.instance_information_list() {
            let Some(id) = info.instance_id() else {
                continue;
            };
            let ping = info.ping_status().map_or("", |p| p.as_str()).to_string();
            all.push(ManagedServer {
                id: id.to_string(),
                online: ping == "Online",
                ping,
            });
        }
        token = page
            .next_token()
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    all.sort_by(|a, b| a.id.cmp(&b.id));
    all.dedup_by(|a, b| a.id == b.id);
    Ok(all)
}

/// The install document's hash, described once per worker and document and kept until a
/// send fails (the document may have been updated: the next attempt describes it again).
#[derive(Debug, Default)]
pub(crate) struct DocumentHashes {
    /// (document name, what is pinned).
    cached: Mutex<Option<(String, Pinned)>>,
}

/// The install document's version a command is pinned to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pinned {
    /// Its SHA-256 hash.
    pub(crate) hash: String,
    /// Whether it declares [`JOB_PARAMETER`] (documents from before wake-ups do not, and
    /// SSM refuses a parameter a document does not declare).
    pub(crate) names_job: bool,
}

/// The install document's parameter that names the job a command is for: SSM's command
/// status events carry the command's parameters, so the event can wake that job.
pub const JOB_PARAMETER: &str = "CertflowJob";

impl DocumentHashes {
    /// The SHA-256 hash of `document`'s default version, and whether it names the job
    /// (DescribeDocument, unless cached).
    pub(crate) async fn get(
        &self,
        ssm: &aws_sdk_ssm::Client,
        document: &str,
    ) -> Result<Pinned, StepError> {
        if let Some((name, pinned)) = self.lock().as_ref() {
            if name == document {
                return Ok(pinned.clone());
            }
        }
        let out = ssm
            .describe_document()
            .name(document)
            .send()
            .await
            .map_err(|e| classify("DescribeDocument", &e))?;
        let d = out
            .document()
            .ok_or_else(|| StepError::retry("DescribeDocument: empty answer"))?;
        // SHA-1 hashes are deprecated for pinning; only SHA-256 is accepted.
        if d.hash_type()
            .is_some_and(|t| *t != DocumentHashType::Sha256)
        {
            return Err(StepError::abort(format!(
                "document {document} has no SHA-256 hash to pin the install command to"
            )));
        }
        let hash = d
            .hash()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| StepError::retry(format!("DescribeDocument {document}: no hash")))?
            .to_string();
        let pinned = Pinned {
            hash,
            names_job: d
                .parameters()
                .iter()
                .any(|p| p.name() == Some(JOB_PARAMETER)),
        };
        *self.lock() = Some((document.to_string(), pinned.clone()));
        Ok(pinned)
    }

    /// Forgets the cached hash (after a send failed).
    pub(crate) fn forget(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(String, Pinned)>> {
        // The cache holds no invariant a panicking holder could break.
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether `v` is a `MaxErrors` SSM accepts: a count, or a percentage 0–100.
pub fn valid_max_errors(v: &str) -> bool {
    count_or_percent(v, 0)
}

/// Whether `v` is a `MaxConcurrency` SSM accepts: a count from 1, or a percentage 1–100.
pub fn valid_max_concurrency(v: &str) -> bool {
    count_or_percent(v, 1)
}

/// What a valid `MaxConcurrency` or `MaxErrors` value comes to for `fleet` servers: a
/// count as it is, a percentage of the fleet rounded down, or up when `round_up`.
pub(crate) fn of_fleet(v: &str, fleet: u32, round_up: bool) -> u32 {
    match v.strip_suffix('%') {
        Some(p) => {
            let p = u64::from(p.parse::<u32>().unwrap_or(0).min(100));
            let share = u64::from(fleet) * p;
            let n = if round_up {
                share.div_ceil(100)
            } else {
                share / 100
            };
            n as u32
        }
        None => v.parse().unwrap_or(0),
    }
}

fn count_or_percent(v: &str, min: u64) -> bool {
    let (digits, percent) = match v.strip_suffix('%') {
        Some(d) => (d, true),
        None => (v, false),
    };
    let plain = !digits.is_empty()
        && digits.len() <= 7
        && digits.chars().all(|c| c.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    plain
        && digits
            .parse::<u64>()
            .is_ok_and(|n| n >= min && (!percent || n <= 100))
}

/// What ListCommands says about one command.
pub(crate) struct CommandInfo {
    /// Its overall status (SSM's command statuses are named like the invocation ones).
    pub(crate) status: InstanceStatus,
    /// How many servers it targets.
    pub(crate) target_count: u32,
}

/// How the command went on one server.
pub(crate) struct Invocation {
    /// Its status.
    pub(crate) status: InstanceStatus,
    /// SSM's status details.
    pub(crate) detail: Option<String>,
    /// Standard output (all plugins' output, from ListCommandInvocations).
    pub(crate) stdout: String,
    /// Standard error (what AWS puts after its error separator in the plugins' output).
    pub(crate) stderr: String,
}

/// Sends `cmd`; returns the command id.
pub(crate) async fn send(ssm: &aws_sdk_ssm::Client, cmd: Command<'_>) -> Result<String, StepError> {
    let mut send = ssm
        .send_command()
        .document_name(cmd.document)
        .set_instance_ids(Some(cmd.instance_ids.to_vec()))
        .comment(cmd.comment)
        .document_hash(cmd.document_hash)
        .document_hash_type(DocumentHashType::Sha256)
        .timeout_seconds(cmd.timeout_seconds)
        .max_errors(cmd.max_errors)
        // The batch is the unit of concurrency: every server of it at once.
        .max_concurrency("100%");
    for (name, value) in cmd.parameters {
        send = send.parameters(name, vec![value]);
    }
    let out = send.send().await.map_err(|e| classify("SendCommand", &e))?;
    Ok(out
        .command()
        .and_then(|c| c.command_id())
        .ok_or_else(|| StepError::retry("SendCommand: no command id"))?
        .to_string())
}

/// The id of a command of `document` sent since `since` (epoch ms) with `comment`, if any.
pub(crate) async fn find(
    ssm: &aws_sdk_ssm::Client,
    document: &str,
    since: Millis,
    comment: &str,
) -> Result<Option<String>, StepError> {
    let since = aws_sdk_ssm::primitives::DateTime::from_millis(since);
    let filter = |k: CommandFilterKey, v: String| {
        CommandFilter::builder()
            .key(k)
            .value(v)
            .build()
            .map_err(|e| StepError::abort(format!("ListCommands filter: {e}")))
    };
    let filters = vec![
        filter(CommandFilterKey::DocumentName, document.to_string())?,
        filter(
            CommandFilterKey::InvokedAfter,
            since
                .fmt(aws_smithy_types::date_time::Format::DateTime)
                .map_err(|e| StepError::abort(format!("time format: {e}")))?,
        )?,
    ];
    let mut token = None;
    loop {
        let page = ssm
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

/// The command `command_id`, if ListCommands lists it yet.
pub(crate) async fn describe(
    ssm: &aws_sdk_ssm::Client,
    command_id: &str,
) -> Result<Option<CommandInfo>, StepError> {
    let listed = ssm
        .list_commands()
        .command_id(command_id)
        .send()
        .await
        .map_err(|e| classify("ListCommands", &e))?;
    Ok(listed.commands().first().map(|cmd| CommandInfo {
        status: cmd
            .status()
            .map_or(InstanceStatus::Pending, |s| s.as_str().into()),
        target_count: cmd.target_count().max(0) as u32,
    }))
}

/// Page size of `ListCommandInvocations` (its maximum).
const INVOCATIONS_PAGE: i32 = 50;

/// The line AWS puts between a plugin's standard output and its standard error in the
/// `Output` of `ListCommandInvocations`.
const ERROR_SEPARATOR: &str = "----------ERROR-------";

/// Splits a plugin's `Output` into standard output and standard error.
fn split_output(output: &str) -> (&str, &str) {
    match output.split_once(ERROR_SEPARATOR) {
        Some((out, err)) => (out, err),
        None => (output, ""),
    }
}

/// How the command went on each server that has an invocation, every page of
/// `ListCommandInvocations` read (with the plugins' output).
pub(crate) async fn invocations(
    ssm: &aws_sdk_ssm::Client,
    command_id: &str,
) -> Result<Vec<(String, Invocation)>, StepError> {
    let mut all = Vec::new();
    let mut token = None;
    loop {
        let out = ssm
            .list_command_invocations()
            .command_id(command_id)
            .details(true)
            .max_results(INVOCATIONS_PAGE)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| classify("ListCommandInvocations", &e))?;
        for inv in out.command_invocations() {
            let Some(id) = inv.instance_id() else {
                continue;
            };
            let mut stdout = Vec::new();
            let mut stderr = Vec::new();
            for p in inv.command_plugins() {
                let (o, e) = split_output(p.output().unwrap_or_default());
                stdout.push(o);
                stderr.push(e);
            }
            let invocation = Invocation {
                status: inv
                    .status()
                    .map_or(InstanceStatus::Pending, |x| x.as_str().into()),
                detail: inv.status_details().map(str::to_string),
                stdout: stdout.join("\n"),
                stderr: stderr.join("\n"),
            };
            all.push((id.to_string(), invocation));
        }
        token = out
            .next_token()
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if token.is_none() {
            return Ok(all);
        }
    }
}

/// Cancels the command; says how that went (a note for the job's history, never an error).
pub(crate) async fn cancel(ssm: &aws_sdk_ssm::Client, command_id: &str) -> String {
    match ssm.cancel_command().command_id(command_id).send().await {
        Ok(_) => format!("command {command_id} cancelled"),
        Err(e) => format!(
            "cancelling command {command_id} failed: {}",
            classify("CancelCommand", &e)
        ),
    }
}

#[cfg(test)]
mod tests;
