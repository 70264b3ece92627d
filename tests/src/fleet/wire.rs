//! The SSM operations the fleet answers, on the wire: the request's JSON in, AWS's JSON
//! answer (or its error: `__type` and `message`) out. Nothing here panics on what a
//! client sends; a malformed request is answered 400 `ValidationException`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Map, Value};

use super::sim::{self, parameter, Command, Plan, View};
use super::{openssl_serial, Behaviour, Fleet, Kind, Received};
use crate::proxy::Action;

/// The operations the fleet answers (`X-Amz-Target: AmazonSSM.<Op>`).
pub const OPERATIONS: [&str; 6] = [
    "DescribeInstanceInformation",
    "SendCommand",
    "ListCommands",
    "ListCommandInvocations",
    "GetCommandInvocation",
    "CancelCommand",
];

/// Whether the fleet answers SSM operation `op`.
pub fn handles(op: &str) -> bool {
    OPERATIONS.contains(&op)
}

/// An SSM error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The error code (`__type`).
    pub code: &'static str,
    /// The message.
    pub message: String,
}

impl ApiError {
    fn new(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new("ValidationException", message)
    }

    /// The JSON body of the error.
    pub fn body(&self) -> Value {
        json!({ "__type": self.code, "message": self.message })
    }
}

type Result<T> = std::result::Result<T, ApiError>;

/// The id of the secret a `SendCommand` request names (its `SecretId` parameter), so the
/// caller can read it before [`answer`].
pub fn secret_id_of(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let params = v.get("Parameters")?.as_object()?;
    parameter(params, "SecretId")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The serial (openssl's format) of the certificate in a `GetSecretValue` answer's
/// `SecretString` JSON, as the install document reports it: the serial of its
/// `certificate` PEM (what `openssl x509 -serial` prints), else its `serial` field.
pub fn serial_of_secret(secret_string: &str) -> std::result::Result<String, String> {
    let v: Value =
        serde_json::from_str(secret_string).map_err(|e| format!("the secret is not JSON: {e}"))?;
    if let Some(serial) = v
        .get("certificate")
        .and_then(Value::as_str)
        .and_then(super::pem_serial)
    {
        return Ok(serial);
    }
    let serial = v
        .get("serial")
        .and_then(Value::as_str)
        .ok_or("the secret has neither a certificate nor a serial")?;
    openssl_serial(serial).ok_or_else(|| format!("the secret's serial {serial:?} is not a serial"))
}

/// Answers SSM operation `op` (one of [`OPERATIONS`]) with request `body`. For
/// `SendCommand`, `secret` is what reading the command's secret gave: its serial
/// (openssl's format) or why it could not be read. `transforms` are the proxy's SSM
/// rewrites that fired on this call.
pub fn answer(
    fleet: &Fleet,
    op: &str,
    body: &[u8],
    secret: Option<std::result::Result<String, String>>,
    transforms: &[Action],
) -> Result<Value> {
    fleet.count_call(op);
    let req = request(body)?;
    let now = Instant::now();
    let mut inner = fleet.lock();
    inner.settle(now);
    let inner = &mut *inner;
    match op {
        "DescribeInstanceInformation" => describe_instance_information(inner, &req),
        "SendCommand" => send_command(inner, &req, secret),
        "ListCommands" => list_commands(inner, &req, now, transforms),
        "ListCommandInvocations" => list_command_invocations(inner, &req, now, transforms),
        "GetCommandInvocation" => get_command_invocation(inner, &req, now, transforms),
        "CancelCommand" => cancel_command(inner, &req, now),
        other => Err(ApiError::invalid(format!(
            "the simulated fleet does not answer {other}"
        ))),
    }
}

// ---- request fields --------------------------------------------------------------------

fn request(body: &[u8]) -> Result<Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::new(
            "SerializationException",
            "the request body is not a JSON object",
        )),
        Err(e) => Err(ApiError::new(
            "SerializationException",
            format!("the request body is not JSON: {e}"),
        )),
    }
}

fn opt_str<'a>(m: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid(format!("{key} must be a string"))),
    }
}

fn req_str<'a>(m: &'a Map<String, Value>, key: &str) -> Result<&'a str> {
    opt_str(m, key)?.ok_or_else(|| {
        let camel = lower_first(key);
        ApiError::invalid(format!(
            "1 validation error detected: Value null at '{camel}' failed to satisfy constraint: \
             Member must not be null"
        ))
    })
}

fn opt_int(m: &Map<String, Value>, key: &str) -> Result<Option<i64>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| ApiError::invalid(format!("{key} must be an integer"))),
    }
}

fn opt_bool(m: &Map<String, Value>, key: &str) -> Result<bool> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid(format!("{key} must be a boolean"))),
    }
}

fn opt_list<'a>(m: &'a Map<String, Value>, key: &str) -> Result<Option<&'a Vec<Value>>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(ApiError::invalid(format!("{key} must be a list"))),
    }
}

fn strings(v: &[Value], what: &str) -> Result<Vec<String>> {
    v.iter()
        .map(|s| {
            s.as_str()
                .map(str::to_string)
                .ok_or_else(|| ApiError::invalid(format!("{what} must be strings")))
        })
        .collect()
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `MaxResults` within `min..=max` (AWS's constraint message otherwise), or `default`.
fn max_results(m: &Map<String, Value>, min: i64, max: i64, default: i64) -> Result<usize> {
    let n = opt_int(m, "MaxResults")?.unwrap_or(default);
    if n < min {
        return Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{n}' at 'maxResults' failed to satisfy \
             constraint: Member must have value greater than or equal to {min}"
        )));
    }
    if n > max {
        return Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{n}' at 'maxResults' failed to satisfy \
             constraint: Member must have value less than or equal to {max}"
        )));
    }
    Ok(n as usize)
}

/// The position a `NextToken` resumes from (`fleet:<kind>:<n>`).
fn next_token(m: &Map<String, Value>, kind: &str) -> Result<Option<String>> {
    let Some(t) = opt_str(m, "NextToken")? else {
        return Ok(None);
    };
    t.strip_prefix(&format!("fleet:{kind}:"))
        .map(|s| Some(s.to_string()))
        .ok_or_else(|| ApiError::new("InvalidNextToken", "The specified token isn't valid."))
}

fn token(kind: &str, at: impl std::fmt::Display) -> Value {
    Value::String(format!("fleet:{kind}:{at}"))
}

fn epoch(t: SystemTime) -> Value {
    let d = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    json!((d.as_millis() as f64) / 1000.0)
}

fn rfc3339(t: Option<SystemTime>) -> Value {
    let Some(t) = t else {
        return Value::String(String::new());
    };
    aws_smithy_types::DateTime::from(t)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .map(Value::String)
        .unwrap_or_else(|_| Value::String(String::new()))
}

fn parse_time(s: &str) -> Result<SystemTime> {
    let t = aws_smithy_types::DateTime::from_str(s, aws_smithy_types::date_time::Format::DateTime)
        .or_else(|_| {
            s.parse::<f64>()
                .map(aws_smithy_types::DateTime::from_secs_f64)
        })
        .map_err(|_| ApiError::new("InvalidFilterValue", format!("{s} is not a valid date")))?;
    SystemTime::try_from(t)
        .map_err(|_| ApiError::new("InvalidFilterValue", format!("{s} is out of range")))
}

// ---- DescribeInstanceInformation -------------------------------------------------------

fn describe_instance_information(inner: &sim::Inner, req: &Map<String, Value>) -> Result<Value> {
    let limit = max_results(req, 5, 50, 10)?;
    let after = next_token(req, "ii")?;
    let mut filters: Vec<(String, Vec<String>)> = Vec::new();
    for f in opt_list(req, "Filters")?.into_iter().flatten() {
        let f = f
            .as_object()
            .ok_or_else(|| ApiError::invalid("Filters must be objects"))?;
        let key = req_str(f, "Key")?.to_string();
        let values = strings(opt_list(f, "Values")?.map_or(&[][..], |v| v), "Values")?;
        filters.push((key, values));
    }
    // The legacy InstanceInformationFilterList (lower-case keys).
    for f in opt_list(req, "InstanceInformationFilterList")?
        .into_iter()
        .flatten()
    {
        let f = f
            .as_object()
            .ok_or_else(|| ApiError::invalid("InstanceInformationFilterList must be objects"))?;
        let key = req_str(f, "key")?.to_string();
        let values = strings(opt_list(f, "valueSet")?.map_or(&[][..], |v| v), "valueSet")?;
        filters.push((key, values));
    }
    for (key, _) in &filters {
        let known = key.starts_with("tag:")
            || matches!(
                key.as_str(),
                "tag-key" | "InstanceIds" | "PingStatus" | "ResourceType" | "PlatformTypes"
            );
        if !known {
            return Err(ApiError::new(
                "InvalidInstanceInformationFilterValue",
                format!("filter key {key} is not supported by the simulated fleet"),
            ));
        }
    }
    let matches = |s: &sim::Server| {
        filters.iter().all(|(key, values)| {
            if let Some(k) = key.strip_prefix("tag:") {
                return values.iter().any(|v| s.has_tag(k, v));
            }
            match key.as_str() {
                "tag-key" => values.iter().any(|k| s.has_tag_key(k)),
                "InstanceIds" => values.contains(&s.id),
                "PingStatus" => values.iter().any(|v| v == ping_status(s)),
                "ResourceType" => values.iter().any(|v| v == resource_type(s)),
                "PlatformTypes" => values.iter().any(|v| v == "Linux"),
                _ => false,
            }
        })
    };
    let mut list = Vec::new();
    let mut more = None;
    let range = match &after {
        Some(a) => inner.servers.range::<String, _>((
            std::ops::Bound::Excluded(a.clone()),
            std::ops::Bound::Unbounded,
        )),
        None => inner.servers.range::<String, _>(..),
    };
    for s in range.map(|(_, s)| s).filter(|s| matches(s)) {
        if list.len() == limit {
            more = list
                .last()
                .and_then(|v: &Value| v["InstanceId"].as_str())
                .map(|id| token("ii", id));
            break;
        }
        list.push(instance_information(s));
    }
    let mut out = json!({ "InstanceInformationList": list });
    if let Some(t) = more {
        out["NextToken"] = t;
    }
    Ok(out)
}

fn ping_status(s: &sim::Server) -> &'static str {
    if s.online() {
        "Online"
    } else {
        "ConnectionLost"
    }
}

fn resource_type(s: &sim::Server) -> &'static str {
    match s.kind {
        Kind::Ec2 => "EC2Instance",
        Kind::OnPrem => "ManagedInstance",
    }
}

fn instance_information(s: &sim::Server) -> Value {
    let last_ping = if s.online() {
        SystemTime::now()
    } else {
        s.registered
    };
    let mut v = json!({
        "InstanceId": s.id,
        "PingStatus": ping_status(s),
        "LastPingDateTime": epoch(last_ping),
        "AgentVersion": "3.3.1142.0",
        "IsLatestVersion": false,
        "PlatformType": "Linux",
        "PlatformName": "Amazon Linux",
        "PlatformVersion": "2023",
        "ResourceType": resource_type(s),
        "ComputerName": s.computer_name,
        "IPAddress": s.ip,
        "AssociationStatus": "Success",
        "SourceId": s.id,
        "SourceType": match s.kind {
            Kind::Ec2 => "AWS::EC2::Instance",
            Kind::OnPrem => "AWS::SSM::ManagedInstance",
        },
    });
    if s.kind == Kind::OnPrem {
        v["Name"] = Value::String(s.computer_name.clone());
        v["RegistrationDate"] = epoch(s.registered);
        v["IamRole"] = Value::String("certflow-hybrid-role".into());
        v["ActivationId"] = Value::String("4a6f1b7c-0000-4000-8000-000000000000".into());
    }
    v
}

// ---- SendCommand -----------------------------------------------------------------------

fn send_command(
    inner: &mut sim::Inner,
    req: &Map<String, Value>,
    secret: Option<std::result::Result<String, String>>,
) -> Result<Value> {
    let document_name = req_str(req, "DocumentName")?.to_string();
    let instance_ids = match opt_list(req, "InstanceIds")? {
        Some(ids) => strings(ids, "InstanceIds")?,
        None => Vec::new(),
    };
    if instance_ids.len() > 50 {
        return Err(ApiError::invalid(format!(
            "1 validation error detected: Value '[{}]' at 'instanceIds' failed to satisfy \
             constraint: Member must have length less than or equal to 50",
            instance_ids.join(", ")
        )));
    }
    let targets = opt_list(req, "Targets")?.cloned().unwrap_or_default();
    if targets.len() > 5 {
        return Err(ApiError::invalid(
            "1 validation error detected: Value at 'targets' failed to satisfy constraint: \
             Member must have length less than or equal to 5",
        ));
    }
    if instance_ids.is_empty() == targets.is_empty() {
        return Err(ApiError::invalid(
            "Exactly one of InstanceIds or Targets must be given",
        ));
    }
    // Resolve the servers.
    let mut ids: Vec<String>;
    if !instance_ids.is_empty() {
        let unknown: Vec<&String> = instance_ids
            .iter()
            .filter(|i| !inner.servers.contains_key(*i))
            .collect();
        if !unknown.is_empty() {
            return Err(ApiError::new(
                "InvalidInstanceId",
                format!(
                    "Instances [[{}]] not in a valid state for account 123456789012",
                    unknown
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        ids = instance_ids.clone();
    } else {
        let mut selected: Option<Vec<String>> = None;
        for t in &targets {
            let t = t
                .as_object()
                .ok_or_else(|| ApiError::invalid("Targets must be objects"))?;
            let key = req_str(t, "Key")?;
            let values = strings(opt_list(t, "Values")?.map_or(&[][..], |v| v), "Values")?;
            let hit: Vec<String> = inner
                .servers
                .values()
                .filter(|s| {
                    if let Some(k) = key.strip_prefix("tag:") {
                        values.iter().any(|v| s.has_tag(k, v))
                    } else if key == "tag-key" {
                        values.iter().any(|k| s.has_tag_key(k))
                    } else if key == "InstanceIds" {
                        values.contains(&s.id)
                    } else {
                        false
                    }
                })
                .map(|s| s.id.clone())
                .collect();
            let known = key.starts_with("tag:") || key == "tag-key" || key == "InstanceIds";
            if !known {
                return Err(ApiError::invalid(format!(
                    "Target key {key} is not supported by the simulated fleet"
                )));
            }
            // Several targets select the servers matching all of them.
            selected = Some(match selected {
                None => hit,
                Some(prev) => prev.into_iter().filter(|i| hit.contains(i)).collect(),
            });
        }
        ids = selected.unwrap_or_default();
    }
    ids.sort();
    ids.dedup();

    let parameters = match req.get("Parameters") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => {
            for (k, v) in p {
                let ok = v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
                if !ok {
                    return Err(ApiError::invalid(format!(
                        "Parameters.{k} must be a list of strings"
                    )));
                }
            }
            p.clone()
        }
        Some(_) => return Err(ApiError::invalid("Parameters must be a map")),
    };
    let comment = opt_str(req, "Comment")?.unwrap_or_default().to_string();
    if comment.chars().count() > 100 {
        return Err(ApiError::invalid(
            "1 validation error detected: Value at 'comment' failed to satisfy constraint: \
             Member must have length less than or equal to 100",
        ));
    }
    let timeout_seconds = opt_int(req, "TimeoutSeconds")?.unwrap_or(3600);
    if !(30..=2_592_000).contains(&timeout_seconds) {
        return Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{timeout_seconds}' at 'timeoutSeconds' failed \
             to satisfy constraint: Member must have value between 30 and 2592000"
        )));
    }
    let max_concurrency = opt_str(req, "MaxConcurrency")?.unwrap_or("50").to_string();
    let max_errors = opt_str(req, "MaxErrors")?.unwrap_or("0").to_string();
    let lanes = sim::concurrency(&max_concurrency, ids.len()).ok_or_else(|| {
        ApiError::invalid(format!(
            "1 validation error detected: Value '{max_concurrency}' at 'maxConcurrency' failed \
             to satisfy constraint: Member must satisfy regular expression pattern: \
             ^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$"
        ))
    })?;
    let allowed_errors = sim::max_errors(&max_errors, ids.len()).ok_or_else(|| {
        ApiError::invalid(format!(
            "1 validation error detected: Value '{max_errors}' at 'maxErrors' failed to \
             satisfy constraint: Member must satisfy regular expression pattern: \
             ^([1-9][0-9]*|[0]|[1-9][0-9]%|[0-9]%|100%)$"
        ))
    })?;
    let document_version = opt_str(req, "DocumentVersion")?
        .unwrap_or("$DEFAULT")
        .to_string();

    let id = uuid::Uuid::new_v4().to_string();
    let requested = SystemTime::now();
    let sent = Instant::now();
    let mut plans = Vec::with_capacity(ids.len());
    let received_params: BTreeMap<String, Vec<String>> = parameters
        .iter()
        .map(|(k, v)| {
            let vals = v
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            (k.clone(), vals)
        })
        .collect();
    let default_latency = inner.default_latency;
    for sid in &ids {
        let Some(server) = inner.servers.get_mut(sid) else {
            continue;
        };
        server.received.push(Received {
            command_id: id.clone(),
            document_name: document_name.clone(),
            comment: comment.clone(),
            parameters: received_params.clone(),
            at: requested,
        });
        let (result, installs) = sim::outcome(
            &server.behaviour,
            &parameters,
            secret.as_ref(),
            server.installed.as_deref(),
        );
        let latency = server.latency.unwrap_or(default_latency);
        plans.push(Plan {
            instance_id: sid.clone(),
            instance_name: server.computer_name.clone(),
            latency: (server.behaviour != Behaviour::Silent).then_some(latency),
            undelivered: server.behaviour == Behaviour::Offline,
            result,
            installs,
        });
    }
    let invocations = sim::schedule(plans, lanes, allowed_errors);
    let seq = inner.commands.len() as u64 + 1;
    let cmd = Command {
        seq,
        id,
        document_name,
        document_version,
        comment,
        parameters,
        instance_ids,
        targets: Value::Array(targets),
        timeout_seconds,
        max_concurrency,
        max_errors,
        requested,
        sent,
        invocations,
        cancelled: false,
    };
    let mut v = command_json(&cmd, &[]);
    // On AWS a tag-targeted command answers before the targets are resolved.
    if cmd.instance_ids.is_empty() {
        v["TargetCount"] = json!(0);
    }
    v["Status"] = json!("Pending");
    v["StatusDetails"] = json!("Pending");
    inner.push(cmd);
    Ok(json!({ "Command": v }))
}

/// A command as SSM describes it (SendCommand, ListCommands).
fn command_json(cmd: &Command, views: &[View]) -> Value {
    let agg = cmd.aggregate(views);
    let expires = cmd.requested + Duration::from_secs(cmd.timeout_seconds.max(0) as u64);
    json!({
        "CommandId": cmd.id,
        "DocumentName": cmd.document_name,
        "DocumentVersion": cmd.document_version,
        "Comment": cmd.comment,
        "ExpiresAfter": epoch(expires),
        "Parameters": cmd.parameters,
        "InstanceIds": cmd.instance_ids,
        "Targets": cmd.targets,
        "RequestedDateTime": epoch(cmd.requested),
        "Status": agg.status,
        "StatusDetails": agg.details,
        "OutputS3Region": "us-east-1",
        "OutputS3BucketName": "",
        "OutputS3KeyPrefix": "",
        "MaxConcurrency": cmd.max_concurrency,
        "MaxErrors": cmd.max_errors,
        "TargetCount": agg.target_count,
        "CompletedCount": agg.completed,
        "ErrorCount": agg.errors,
        "DeliveryTimedOutCount": agg.delivery_timed_out,
        "ServiceRole": "",
        "NotificationConfig": {
            "NotificationArn": "",
            "NotificationEvents": [],
            "NotificationType": "",
        },
        "CloudWatchOutputConfig": {
            "CloudWatchLogGroupName": "",
            "CloudWatchOutputEnabled": false,
        },
        "TimeoutSeconds": cmd.timeout_seconds,
    })
}

// ---- ListCommands ----------------------------------------------------------------------

fn unknown_command(id: &str) -> ApiError {
    ApiError::new("InvalidCommandId", format!("Command {id} does not exist"))
}

fn list_commands(
    inner: &sim::Inner,
    req: &Map<String, Value>,
    now: Instant,
    transforms: &[Action],
) -> Result<Value> {
    let limit = max_results(req, 1, 50, 50)?;
    let after: Option<u64> =
        match next_token(req, "cmd")? {
            Some(t) => Some(t.parse().map_err(|_| {
                ApiError::new("InvalidNextToken", "The specified token isn't valid.")
            })?),
            None => None,
        };
    let instance = opt_str(req, "InstanceId")?;
    let mut after_t: Option<SystemTime> = None;
    let mut before_t: Option<SystemTime> = None;
    let mut document: Option<String> = None;
    let mut status: Option<String> = None;
    for f in opt_list(req, "Filters")?.into_iter().flatten() {
        let f = f
            .as_object()
            .ok_or_else(|| ApiError::invalid("Filters must be objects"))?;
        let key = req_str(f, "key")?;
        let value = req_str(f, "value")?;
        match key {
            "InvokedAfter" => after_t = Some(parse_time(value)?),
            "InvokedBefore" => before_t = Some(parse_time(value)?),
            "DocumentName" => document = Some(value.to_string()),
            "Status" => status = Some(value.to_string()),
            "ExecutionStage" => {}
            other => {
                return Err(ApiError::new(
                    "InvalidFilterKey",
                    format!("filter key {other} is not valid"),
                ))
            }
        }
    }
    let selected: Vec<&Command> = match opt_str(req, "CommandId")? {
        Some(id) => vec![inner.command(id).ok_or_else(|| unknown_command(id))?],
        // Newest first.
        None => inner.commands.iter().rev().collect(),
    };
    let mut list = Vec::new();
    let mut more = None;
    for cmd in selected {
        if after.is_some_and(|a| cmd.seq >= a) {
            continue;
        }
        if instance.is_some_and(|i| !cmd.invocations.iter().any(|v| v.instance_id == i)) {
            continue;
        }
        if after_t.is_some_and(|t| cmd.requested < t) || before_t.is_some_and(|t| cmd.requested > t)
        {
            continue;
        }
        if document.as_deref().is_some_and(|d| d != cmd.document_name) {
            continue;
        }
        let views = cmd.views(now, transforms);
        let v = command_json(cmd, &views);
        if status.as_deref().is_some_and(|s| v["Status"] != s) {
            continue;
        }
        if list.len() == limit {
            more = Some(token("cmd", list_last_seq(&list)));
            break;
        }
        list.push((cmd.seq, v));
    }
    let mut out = json!({ "Commands": list.into_iter().map(|(_, v)| v).collect::<Vec<_>>() });
    if let Some(t) = more {
        out["NextToken"] = t;
    }
    Ok(out)
}

fn list_last_seq(list: &[(u64, Value)]) -> u64 {
    list.last().map_or(0, |(s, _)| *s)
}

// ---- invocations -----------------------------------------------------------------------

/// AWS's plugin `Output`: standard output, then the error output after a marker line,
/// cut at 2,500 characters.
fn plugin_output(v: &View) -> String {
    let mut out = v.stdout.clone();
    if !v.stderr.is_empty() {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("----------ERROR-------\n");
        out.push_str(&v.stderr);
    }
    truncate(&out, 2500)
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn plugin_name(document: &str) -> &'static str {
    if document.starts_with("AWS-") {
        "aws:runShellScript"
    } else {
        "installCertificate"
    }
}

fn invocation_json(cmd: &Command, inv: &sim::Invocation, v: &View, details: bool) -> Value {
    let mut out = json!({
        "CommandId": cmd.id,
        "InstanceId": inv.instance_id,
        "InstanceName": inv.instance_name,
        "Comment": cmd.comment,
        "DocumentName": cmd.document_name,
        "DocumentVersion": cmd.document_version,
        "RequestedDateTime": epoch(cmd.requested),
        "Status": v.status,
        "StatusDetails": v.details,
        "TraceOutput": "",
        "StandardOutputUrl": "",
        "StandardErrorUrl": "",
        "CommandPlugins": [],
        "ServiceRole": "",
        "NotificationConfig": {
            "NotificationArn": "",
            "NotificationEvents": [],
            "NotificationType": "",
        },
        "CloudWatchOutputConfig": {
            "CloudWatchLogGroupName": "",
            "CloudWatchOutputEnabled": false,
        },
    });
    if details {
        let mut plugin = json!({
            "Name": plugin_name(&cmd.document_name),
            "Status": v.status,
            "StatusDetails": v.details,
            "ResponseCode": v.code,
            "Output": plugin_output(v),
            "StandardOutputUrl": "",
            "StandardErrorUrl": "",
            "OutputS3Region": "us-east-1",
            "OutputS3BucketName": "",
            "OutputS3KeyPrefix": "",
        });
        if let Some(s) = v.start {
            plugin["ResponseStartDateTime"] = epoch(s);
        }
        if let Some(e) = v.end {
            plugin["ResponseFinishDateTime"] = epoch(e);
        }
        out["CommandPlugins"] = json!([plugin]);
    }
    out
}

fn list_command_invocations(
    inner: &sim::Inner,
    req: &Map<String, Value>,
    now: Instant,
    transforms: &[Action],
) -> Result<Value> {
    let limit = max_results(req, 1, 50, 50)?;
    let details = opt_bool(req, "Details")?;
    let instance = opt_str(req, "InstanceId")?;
    let skip: usize = match next_token(req, "inv")? {
        Some(t) => t
            .parse()
            .map_err(|_| ApiError::new("InvalidNextToken", "The specified token isn't valid."))?,
        None => 0,
    };
    let commands: Vec<&Command> = match opt_str(req, "CommandId")? {
        Some(id) => vec![inner.command(id).ok_or_else(|| unknown_command(id))?],
        None => inner.commands.iter().collect(),
    };
    let mut list = Vec::new();
    let mut position = 0usize;
    let mut more = false;
    'outer: for cmd in commands {
        for inv in &cmd.invocations {
            if instance.is_some_and(|i| i != inv.instance_id) {
                continue;
            }
            position += 1;
            if position <= skip {
                continue;
            }
            if list.len() == limit {
                more = true;
                break 'outer;
            }
            let mut v = inv.view(cmd.sent, cmd.requested, now);
            sim::rewrite(&mut v, &inv.instance_id, transforms);
            list.push(invocation_json(cmd, inv, &v, details));
        }
    }
    let mut out = json!({ "CommandInvocations": list });
    if more {
        out["NextToken"] = token("inv", skip + limit);
    }
    Ok(out)
}

fn get_command_invocation(
    inner: &sim::Inner,
    req: &Map<String, Value>,
    now: Instant,
    transforms: &[Action],
) -> Result<Value> {
    let command_id = req_str(req, "CommandId")?;
    let instance_id = req_str(req, "InstanceId")?;
    let missing = || ApiError::new("InvocationDoesNotExist", "");
    let cmd = inner.command(command_id).ok_or_else(missing)?;
    let inv = cmd
        .invocations
        .iter()
        .find(|i| i.instance_id == instance_id)
        .ok_or_else(missing)?;
    let plugin = plugin_name(&cmd.document_name);
    if let Some(p) = opt_str(req, "PluginName")? {
        if p != plugin {
            return Err(ApiError::new(
                "InvalidPluginName",
                format!("plugin {p} is not in the document"),
            ));
        }
    }
    let mut v = inv.view(cmd.sent, cmd.requested, now);
    sim::rewrite(&mut v, instance_id, transforms);
    let elapsed = match (v.start, v.end) {
        (Some(s), Some(e)) => {
            let d = e.duration_since(s).unwrap_or(Duration::ZERO);
            format!("PT{:.3}S", d.as_secs_f64())
        }
        _ => String::new(),
    };
    Ok(json!({
        "CommandId": cmd.id,
        "InstanceId": inv.instance_id,
        "Comment": cmd.comment,
        "DocumentName": cmd.document_name,
        "DocumentVersion": cmd.document_version,
        "PluginName": plugin,
        "ResponseCode": v.code,
        "ExecutionStartDateTime": rfc3339(v.start),
        "ExecutionElapsedTime": elapsed,
        "ExecutionEndDateTime": rfc3339(v.end),
        "Status": v.status,
        "StatusDetails": v.details,
        "StandardOutputContent": truncate(&v.stdout, 24_000),
        "StandardOutputUrl": "",
        "StandardErrorContent": truncate(&v.stderr, 8_000),
        "StandardErrorUrl": "",
        "CloudWatchOutputConfig": {
            "CloudWatchLogGroupName": "",
            "CloudWatchOutputEnabled": false,
        },
    }))
}

// ---- CancelCommand ---------------------------------------------------------------------

fn cancel_command(inner: &mut sim::Inner, req: &Map<String, Value>, now: Instant) -> Result<Value> {
    let command_id = req_str(req, "CommandId")?;
    let only = match opt_list(req, "InstanceIds")? {
        Some(ids) => Some(strings(ids, "InstanceIds")?),
        None => None,
    };
    let at = *inner
        .by_id
        .get(command_id)
        .ok_or_else(|| unknown_command(command_id))?;
    let Some(cmd) = inner.commands.get_mut(at) else {
        return Err(unknown_command(command_id));
    };
    let elapsed = now.saturating_duration_since(cmd.sent);
    let mut cancelled = 0;
    for inv in cmd.invocations.iter_mut() {
        if only.as_ref().is_some_and(|o| !o.contains(&inv.instance_id)) {
            continue;
        }
        if !inv.view(cmd.sent, cmd.requested, now).is_final() {
            inv.cancelled_at = Some(elapsed);
            cancelled += 1;
        }
    }
    if only.is_none() && cancelled > 0 {
        cmd.cancelled = true;
    }
    Ok(json!({}))
}
