//! SSM answer rewriting, for [`Action::RewriteSsm`] and [`Action::SetStdout`]: an
//! invocation's status (with the `StatusDetails`, `ResponseCode` and plugin fields that go
//! with it) and standard output in `GetCommandInvocation` and `ListCommandInvocations`,
//! and a command's aggregate (`Status`, `CompletedCount`, `ErrorCount`) in `ListCommands`
//! kept consistent with the invocations it covers. The emulator runs every command at
//! once and successfully; these rewrites stand for what real instances do instead.

use bytes::Bytes;
use serde_json::Value;

use super::Action;

/// `Status`, `StatusDetails` and `ResponseCode` of an invocation in `status`.
pub(crate) fn invocation_fields(status: &str) -> (&str, &str, i64) {
    match status {
        "Success" => ("Success", "Success", 0),
        "Failed" => ("Failed", "Failed", 1),
        "TimedOut" => ("TimedOut", "ExecutionTimedOut", -1),
        "InProgress" => ("InProgress", "InProgress", -1),
        "Pending" => ("Pending", "Pending", -1),
        "Delayed" => ("Delayed", "Delayed", -1),
        "Cancelled" | "Canceled" => ("Cancelled", "Canceled", -1),
        "Cancelling" => ("Cancelling", "Cancelling", -1),
        other => (other, other, -1),
    }
}

fn is_terminal_status(status: &str) -> bool {
    !matches!(status, "Pending" | "InProgress" | "Delayed" | "Cancelling")
}

fn set_invocation(inv: &mut serde_json::Map<String, Value>, status: &str) {
    let (st, detail, code) = invocation_fields(status);
    inv.insert("Status".into(), st.into());
    inv.insert("StatusDetails".into(), detail.into());
    if inv.contains_key("ResponseCode") || inv.contains_key("StandardOutputContent") {
        inv.insert("ResponseCode".into(), code.into());
    }
    if !is_terminal_status(st) && inv.contains_key("ExecutionEndDateTime") {
        inv.insert("ExecutionEndDateTime".into(), "".into());
    }
    if st == "Failed" || st == "TimedOut" {
        let err = inv
            .get("StandardErrorContent")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if err.is_empty() && inv.contains_key("StandardErrorContent") {
            inv.insert(
                "StandardErrorContent".into(),
                format!("{detail} (fault proxy)").into(),
            );
        }
    }
    if let Some(Value::Array(plugins)) = inv.get_mut("CommandPlugins") {
        for p in plugins.iter_mut().filter_map(Value::as_object_mut) {
            p.insert("Status".into(), st.into());
            p.insert("StatusDetails".into(), detail.into());
            p.insert("ResponseCode".into(), code.into());
        }
    }
}

fn instance_matches(want: &Option<String>, inv: &serde_json::Map<String, Value>) -> bool {
    match want {
        None => true,
        Some(w) => inv.get("InstanceId").and_then(Value::as_str) == Some(w.as_str()),
    }
}

fn rewrite_invocation(inv: &mut serde_json::Map<String, Value>, transforms: &[Action]) {
    for t in transforms {
        match t {
            Action::RewriteSsm { instance, status } if instance_matches(instance, inv) => {
                set_invocation(inv, status);
            }
            Action::SetStdout { instance, stdout } if instance_matches(instance, inv) => {
                inv.insert("StandardOutputContent".into(), stdout.clone().into());
                if let Some(Value::Array(plugins)) = inv.get_mut("CommandPlugins") {
                    for p in plugins.iter_mut().filter_map(Value::as_object_mut) {
                        p.insert("Output".into(), stdout.clone().into());
                    }
                }
            }
            _ => {}
        }
    }
}

/// A command's aggregate after some of its invocations were rewritten.
fn rewrite_command(cmd: &mut serde_json::Map<String, Value>, transforms: &[Action]) {
    let ids: Vec<String> = cmd
        .get("InstanceIds")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let target_count = cmd.get("TargetCount").and_then(Value::as_u64).unwrap_or(0) as usize;
    let base = cmd
        .get("Status")
        .and_then(Value::as_str)
        .unwrap_or("Success")
        .to_string();
    // One entry per invocation: the named instances, or as many anonymous ones as targets
    // (AWS names no instances for tag targets).
    let mut entries: Vec<(Option<String>, String, bool)> = if ids.is_empty() {
        (0..target_count.max(1))
            .map(|_| (None, base.clone(), false))
            .collect()
    } else {
        ids.iter()
            .map(|i| (Some(i.clone()), base.clone(), false))
            .collect()
    };
    let mut touched = false;
    for t in transforms {
        let Action::RewriteSsm { instance, status } = t else {
            continue;
        };
        let st = invocation_fields(status).0.to_string();
        match instance {
            None => {
                for e in entries.iter_mut() {
                    e.1 = st.clone();
                    e.2 = true;
                }
                touched = true;
            }
            Some(want) => {
                let hit = if ids.is_empty() {
                    entries.iter_mut().find(|e| !e.2)
                } else {
                    entries
                        .iter_mut()
                        .find(|e| e.0.as_deref() == Some(want.as_str()))
                };
                if let Some(e) = hit {
                    e.1 = st.clone();
                    e.2 = true;
                    touched = true;
                }
            }
        }
    }
    if !touched {
        return;
    }
    let has = |s: &str| entries.iter().any(|e| e.1 == s);
    let (status, detail) = if entries.iter().any(|e| !is_terminal_status(&e.1)) {
        ("InProgress", "In Progress")
    } else if has("Failed") {
        ("Failed", "Failed")
    } else if has("TimedOut") {
        ("TimedOut", "Execution Timed Out")
    } else if has("Cancelled") {
        ("Cancelled", "Canceled")
    } else {
        ("Success", "Success")
    };
    let completed = entries.iter().filter(|e| is_terminal_status(&e.1)).count();
    let errors = entries
        .iter()
        .filter(|e| e.1 == "Failed" || e.1 == "TimedOut")
        .count();
    cmd.insert("Status".into(), status.into());
    cmd.insert("StatusDetails".into(), detail.into());
    cmd.insert("CompletedCount".into(), completed.into());
    cmd.insert("ErrorCount".into(), errors.into());
    cmd.insert("TargetCount".into(), target_count.max(entries.len()).into());
}

/// Applies the SSM rewrites to an answer; anything it cannot parse passes unchanged.
pub(super) fn rewrite_ssm(operation: &str, body: &Bytes, transforms: &[Action]) -> Bytes {
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return body.clone();
    };
    match operation {
        "GetCommandInvocation" => {
            if let Some(inv) = v.as_object_mut() {
                rewrite_invocation(inv, transforms);
            }
        }
        "ListCommandInvocations" => {
            if let Some(Value::Array(invs)) = v.get_mut("CommandInvocations") {
                for inv in invs.iter_mut().filter_map(Value::as_object_mut) {
                    rewrite_invocation(inv, transforms);
                }
            }
        }
        "ListCommands" => {
            if let Some(Value::Array(cmds)) = v.get_mut("Commands") {
                for cmd in cmds.iter_mut().filter_map(Value::as_object_mut) {
                    rewrite_command(cmd, transforms);
                }
            }
        }
        _ => return body.clone(),
    }
    match serde_json::to_vec(&v) {
        Ok(b) => b.into(),
        Err(_) => body.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_that_is_not_json_passes_unchanged() {
        let body = Bytes::from_static(b"not json");
        let t = [Action::RewriteSsm {
            instance: None,
            status: "Failed".into(),
        }];
        assert_eq!(rewrite_ssm("ListCommands", &body, &t), body);
    }

    #[test]
    fn list_commands_aggregate_follows_the_invocations() {
        let body = Bytes::from(
            serde_json::json!({"Commands": [{
                "CommandId": "c", "Status": "Success", "StatusDetails": "Success",
                "InstanceIds": ["i-1", "i-2"], "TargetCount": 2,
                "CompletedCount": 2, "ErrorCount": 0,
            }]})
            .to_string(),
        );
        let failed_one = [Action::RewriteSsm {
            instance: Some("i-2".into()),
            status: "Failed".into(),
        }];
        let v: Value =
            serde_json::from_slice(&rewrite_ssm("ListCommands", &body, &failed_one)).unwrap();
        let c = &v["Commands"][0];
        assert_eq!(c["Status"], "Failed");
        assert_eq!(c["CompletedCount"], 2);
        assert_eq!(c["ErrorCount"], 1);
        let running = [Action::RewriteSsm {
            instance: Some("i-1".into()),
            status: "InProgress".into(),
        }];
        let v: Value =
            serde_json::from_slice(&rewrite_ssm("ListCommands", &body, &running)).unwrap();
        let c = &v["Commands"][0];
        assert_eq!(c["Status"], "InProgress");
        assert_eq!(c["CompletedCount"], 1);
        assert_eq!(c["ErrorCount"], 0);
        let other = [Action::RewriteSsm {
            instance: Some("i-9".into()),
            status: "Failed".into(),
        }];
        let v: Value = serde_json::from_slice(&rewrite_ssm("ListCommands", &body, &other)).unwrap();
        assert_eq!(v["Commands"][0]["Status"], "Success");
    }
}
