//! The fleet's state and the simulation of a command: its schedule (MaxConcurrency
//! lanes, MaxErrors), each invocation's status at a given instant, the output the install
//! document would print, and the command's aggregate as SSM derives it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};

use super::{Behaviour, CommandSummary, Kind, Received};
use crate::proxy::Action;

/// A server of the fleet.
pub(super) struct Server {
    pub(super) id: String,
    pub(super) kind: Kind,
    pub(super) tags: Vec<(String, String)>,
    pub(super) behaviour: Behaviour,
    pub(super) latency: Option<Duration>,
    pub(super) installed: Option<String>,
    pub(super) received: Vec<Received>,
    pub(super) ip: String,
    pub(super) computer_name: String,
    pub(super) registered: SystemTime,
}

impl Server {
    pub(super) fn new(id: &str, seq: u64, kind: Kind, tags: &[(&str, &str)]) -> Server {
        let ip = format!(
            "10.{}.{}.{}",
            (seq >> 16) & 0xff,
            (seq >> 8) & 0xff,
            seq & 0xff
        );
        let computer_name = match kind {
            Kind::Ec2 => format!("ip-{}.ec2.internal", ip.replace('.', "-")),
            Kind::OnPrem => format!("server-{seq}.corp.example"),
        };
        Server {
            id: id.to_string(),
            kind,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            behaviour: Behaviour::Succeed,
            latency: None,
            installed: None,
            received: Vec::new(),
            ip,
            computer_name,
            registered: SystemTime::now(),
        }
    }

    pub(super) fn has_tag(&self, key: &str, value: &str) -> bool {
        self.tags.iter().any(|(k, v)| k == key && v == value)
    }

    pub(super) fn has_tag_key(&self, key: &str) -> bool {
        self.tags.iter().any(|(k, _)| k == key)
    }

    pub(super) fn online(&self) -> bool {
        self.behaviour != Behaviour::Offline
    }
}

/// Everything the fleet holds.
#[derive(Default)]
pub(super) struct Inner {
    pub(super) servers: BTreeMap<String, Server>,
    /// In the order sent.
    pub(super) commands: Vec<Command>,
    pub(super) by_id: HashMap<String, usize>,
    pub(super) default_latency: Duration,
    /// (command, invocation) whose effect on the server is not applied yet.
    unsettled: Vec<(usize, usize)>,
}

impl Inner {
    pub(super) fn command(&self, id: &str) -> Option<&Command> {
        self.by_id.get(id).and_then(|i| self.commands.get(*i))
    }

    /// Applies the effects of the invocations that ended by `now` (the serial a success
    /// installed).
    pub(super) fn settle(&mut self, now: Instant) {
        let mut keep = Vec::new();
        for (c, i) in std::mem::take(&mut self.unsettled) {
            let Some(cmd) = self.commands.get(c) else {
                continue;
            };
            let Some(inv) = cmd.invocations.get(i) else {
                continue;
            };
            if inv.cancelled_at.is_some() {
                continue;
            }
            match inv.end {
                Some(end) if cmd.sent + end <= now => {
                    if let Some(serial) = inv.installs.clone() {
                        if let Some(s) = self.servers.get_mut(&inv.instance_id) {
                            s.installed = Some(serial);
                        }
                    }
                }
                Some(_) => keep.push((c, i)),
                None => {}
            }
        }
        self.unsettled = keep;
    }

    /// Adds a command (its invocations already scheduled); returns its position.
    pub(super) fn push(&mut self, cmd: Command) -> usize {
        let at = self.commands.len();
        for (i, inv) in cmd.invocations.iter().enumerate() {
            if inv.installs.is_some() {
                self.unsettled.push((at, i));
            }
        }
        self.by_id.insert(cmd.id.clone(), at);
        self.commands.push(cmd);
        at
    }
}

/// What an invocation ends with.
#[derive(Clone, Debug)]
pub(super) struct Final {
    pub(super) status: &'static str,
    pub(super) details: &'static str,
    pub(super) code: i64,
    pub(super) stdout: String,
    pub(super) stderr: String,
}

impl Final {
    pub(super) fn is_error(&self) -> bool {
        matches!(self.status, "Failed" | "TimedOut")
    }
}

/// One server's part of a command.
pub(super) struct Invocation {
    pub(super) instance_id: String,
    pub(super) instance_name: String,
    /// From the send; `None`: never starts (every lane is taken by a silent server).
    pub(super) start: Option<Duration>,
    /// From the send; `None`: never ends by itself.
    pub(super) end: Option<Duration>,
    /// `Pending` rather than `InProgress` while running (an offline server).
    pub(super) undelivered: bool,
    pub(super) result: Final,
    /// The serial the server has installed once this invocation has ended.
    pub(super) installs: Option<String>,
    /// From the send.
    pub(super) cancelled_at: Option<Duration>,
}

/// An invocation as seen at one instant (before and after the proxy's rewrites).
#[derive(Clone, Debug)]
pub(super) struct View {
    pub(super) status: String,
    pub(super) details: String,
    pub(super) code: i64,
    pub(super) stdout: String,
    pub(super) stderr: String,
    pub(super) start: Option<SystemTime>,
    pub(super) end: Option<SystemTime>,
}

impl View {
    pub(super) fn is_final(&self) -> bool {
        !matches!(
            self.status.as_str(),
            "Pending" | "InProgress" | "Delayed" | "Cancelling"
        )
    }
}

impl Invocation {
    /// Where it stands at `now`, for a command sent at `sent` (`requested` on the clock).
    pub(super) fn view(&self, sent: Instant, requested: SystemTime, now: Instant) -> View {
        let elapsed = now.saturating_duration_since(sent);
        let at = |d: Duration| Some(requested + d);
        let pending = |status: &str, details: &str| View {
            status: status.into(),
            details: details.into(),
            code: -1,
            stdout: String::new(),
            stderr: String::new(),
            start: None,
            end: None,
        };
        if let Some(c) = self.cancelled_at.filter(|c| *c <= elapsed) {
            let mut v = pending("Cancelled", "Canceled");
            v.start = self.start.filter(|s| *s <= c).and_then(at);
            v.end = at(c);
            return v;
        }
        match self.start {
            Some(s) if s <= elapsed => {}
            _ => return pending("Pending", "Pending"),
        }
        match self.end {
            Some(e) if e <= elapsed => View {
                status: self.result.status.into(),
                details: self.result.details.into(),
                code: self.result.code,
                stdout: self.result.stdout.clone(),
                stderr: self.result.stderr.clone(),
                start: self.start.and_then(at),
                end: at(e),
            },
            _ if self.undelivered => pending("Pending", "Pending"),
            _ => {
                let mut v = pending("InProgress", "InProgress");
                v.start = self.start.and_then(at);
                v
            }
        }
    }
}

/// A command as the fleet holds it.
pub(super) struct Command {
    pub(super) seq: u64,
    pub(super) id: String,
    pub(super) document_name: String,
    pub(super) document_version: String,
    pub(super) comment: String,
    pub(super) parameters: Map<String, Value>,
    /// As sent (empty for tag targets, as on AWS).
    pub(super) instance_ids: Vec<String>,
    /// As sent.
    pub(super) targets: Value,
    pub(super) timeout_seconds: i64,
    pub(super) max_concurrency: String,
    pub(super) max_errors: String,
    pub(super) requested: SystemTime,
    pub(super) sent: Instant,
    /// Sorted by instance id.
    pub(super) invocations: Vec<Invocation>,
    pub(super) cancelled: bool,
}

/// The aggregate of a command over its invocations' views.
pub(super) struct Aggregate {
    pub(super) status: &'static str,
    pub(super) details: &'static str,
    pub(super) target_count: usize,
    pub(super) completed: usize,
    pub(super) errors: usize,
    pub(super) delivery_timed_out: usize,
}

impl Command {
    /// Each invocation at `now`, with the proxy's rewrites applied.
    pub(super) fn views(&self, now: Instant, transforms: &[Action]) -> Vec<View> {
        self.invocations
            .iter()
            .map(|inv| {
                let mut v = inv.view(self.sent, self.requested, now);
                rewrite(&mut v, &inv.instance_id, transforms);
                v
            })
            .collect()
    }

    /// The command's status and counts as SSM derives them from its invocations.
    pub(super) fn aggregate(&self, views: &[View]) -> Aggregate {
        let n = views.len();
        let count = |f: &dyn Fn(&View) -> bool| views.iter().filter(|v| f(v)).count();
        let completed = count(&|v| v.is_final());
        let errors = count(&|v| {
            v.status == "Failed" || (v.status == "TimedOut" && v.details != "DeliveryTimedOut")
        });
        let delivery_timed_out =
            count(&|v| v.status == "TimedOut" && v.details == "DeliveryTimedOut");
        let has = |s: &str| views.iter().any(|v| v.status == s);
        let (status, details) = if n == 0 {
            if self.instance_ids.is_empty() {
                ("Success", "No Instances In Tag")
            } else {
                ("Success", "Success")
            }
        } else if completed < n {
            if self.cancelled {
                ("Cancelling", "Cancelling")
            } else if views.iter().all(|v| v.status == "Pending") {
                ("Pending", "Pending")
            } else {
                ("InProgress", "In Progress")
            }
        } else if self.cancelled {
            ("Cancelled", "Canceled")
        } else if has("Failed") {
            ("Failed", "Failed")
        } else if has("TimedOut") {
            if delivery_timed_out > 0 && errors == 0 {
                ("TimedOut", "Delivery Timed Out")
            } else {
                ("TimedOut", "Execution Timed Out")
            }
        } else if has("Cancelled") {
            ("Cancelled", "Canceled")
        } else if views.iter().all(|v| v.status == "Success") {
            ("Success", "Success")
        } else {
            ("Failed", "Incomplete")
        };
        Aggregate {
            status,
            details,
            target_count: n,
            completed,
            errors,
            delivery_timed_out,
        }
    }

    pub(super) fn summary(&self, now: Instant) -> CommandSummary {
        let views = self.views(now, &[]);
        CommandSummary {
            command_id: self.id.clone(),
            document_name: self.document_name.clone(),
            comment: self.comment.clone(),
            instance_ids: self
                .invocations
                .iter()
                .map(|i| i.instance_id.clone())
                .collect(),
            status: self.aggregate(&views).status.to_string(),
        }
    }
}

/// The first value of parameter `name`.
pub(super) fn parameter<'a>(params: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
}

/// Applies the proxy's SSM rewrites to one invocation's view.
pub(super) fn rewrite(v: &mut View, instance: &str, transforms: &[Action]) {
    let hits = |want: &Option<String>| want.as_deref().is_none_or(|w| w == instance);
    for t in transforms {
        match t {
            Action::RewriteSsm { instance, status } if hits(instance) => {
                let (st, detail, code) = crate::proxy::ssm::invocation_fields(status);
                v.status = st.to_string();
                v.details = detail.to_string();
                v.code = code;
                if !v.is_final() {
                    v.end = None;
                }
                if (st == "Failed" || st == "TimedOut") && v.stderr.is_empty() {
                    v.stderr = format!("{detail} (fault proxy)");
                }
            }
            Action::SetStdout { instance, stdout } if hits(instance) => {
                v.stdout = stdout.clone();
            }
            _ => {}
        }
    }
}

/// How many may run at once: a count, or a percentage of `n` (at least 1).
pub(super) fn concurrency(v: &str, n: usize) -> Option<usize> {
    let c = match v.strip_suffix('%') {
        Some(p) => {
            let p: usize = p.parse().ok().filter(|p| (1..=100).contains(p))?;
            (n * p).div_ceil(100)
        }
        None => v.parse().ok().filter(|c| *c >= 1)?,
    };
    Some(c.max(1))
}

/// How many errors are allowed: a count, or a percentage of `n` (rounded down).
pub(super) fn max_errors(v: &str, n: usize) -> Option<usize> {
    match v.strip_suffix('%') {
        Some(p) => {
            let p: usize = p.parse().ok().filter(|p| *p <= 100)?;
            Some(n * p / 100)
        }
        None => v.parse().ok(),
    }
}

/// What a server is given to run: its latency, outcome and the serial it would install.
pub(super) struct Plan {
    pub(super) instance_id: String,
    pub(super) instance_name: String,
    /// `None`: never finishes.
    pub(super) latency: Option<Duration>,
    pub(super) undelivered: bool,
    pub(super) result: Final,
    pub(super) installs: Option<String>,
}

/// Schedules the plans (sorted by instance id) in `lanes` lanes, stopping after more
/// than `allowed_errors` errors.
pub(super) fn schedule(plans: Vec<Plan>, lanes: usize, allowed_errors: usize) -> Vec<Invocation> {
    // When each lane is free again (None: never).
    let mut free: Vec<Option<Duration>> = vec![Some(Duration::ZERO); lanes.max(1)];
    let mut error_ends: Vec<Duration> = Vec::new();
    let mut out = Vec::with_capacity(plans.len());
    for p in plans {
        let lane = free
            .iter()
            .enumerate()
            .filter_map(|(i, f)| f.map(|f| (i, f)))
            .min_by_key(|(_, f)| *f);
        let Some((lane, start)) = lane else {
            out.push(Invocation {
                instance_id: p.instance_id,
                instance_name: p.instance_name,
                start: None,
                end: None,
                undelivered: p.undelivered,
                result: p.result,
                installs: None,
                cancelled_at: None,
            });
            continue;
        };
        let errors = error_ends.iter().filter(|e| **e <= start).count();
        if errors > allowed_errors {
            // The error threshold was passed: this one is never sent.
            out.push(Invocation {
                instance_id: p.instance_id,
                instance_name: p.instance_name,
                start: None,
                end: None,
                undelivered: true,
                result: p.result,
                installs: None,
                cancelled_at: Some(start),
            });
            continue;
        }
        // A zero latency still takes a moment: an invocation that starts when an error
        // ends (in the same lane) starts after it, one that starts with it does not.
        let end = p.latency.map(|l| start + l.max(Duration::from_micros(1)));
        free[lane] = end;
        if let Some(e) = end.filter(|_| p.result.is_error()) {
            error_ends.push(e);
        }
        out.push(Invocation {
            instance_id: p.instance_id,
            instance_name: p.instance_name,
            start: Some(start),
            end,
            undelivered: p.undelivered,
            result: p.result,
            installs: p.installs,
            cancelled_at: None,
        });
    }
    out
}

/// The outcome of the install document on a server behaving as `b`, for a command with
/// `params`; `secret` is the serial the command's secret holds (openssl's format), or why
/// it could not be read; `None` when the command names no secret (another document).
/// Returns the outcome and the serial the server has installed afterwards.
pub(super) fn outcome(
    b: &Behaviour,
    params: &Map<String, Value>,
    secret: Option<&Result<String, String>>,
    before: Option<&str>,
) -> (Final, Option<String>) {
    let ok = |stdout: String, stderr: String| Final {
        status: "Success",
        details: "Success",
        code: 0,
        stdout,
        stderr,
    };
    let failed = |stdout: String, stderr: String| Final {
        status: "Failed",
        details: "Failed",
        code: 1,
        stdout,
        stderr,
    };
    match b {
        Behaviour::Offline => {
            let f = Final {
                status: "TimedOut",
                details: "DeliveryTimedOut",
                code: -1,
                stdout: String::new(),
                stderr: String::new(),
            };
            return (f, None);
        }
        Behaviour::Fail { stderr } => {
            let mut e = stderr.clone();
            if !e.is_empty() && !e.ends_with('\n') {
                e.push('\n');
            }
            return (failed(String::new(), e), None);
        }
        Behaviour::Succeed | Behaviour::ServesOld | Behaviour::Silent => {}
    }
    let Some(secret) = secret else {
        return (ok(String::new(), String::new()), None);
    };
    let secret_id = parameter(params, "SecretId").unwrap_or_default();
    let serial = match secret {
        Ok(s) => s.clone(),
        Err(why) => {
            let e = format!("certflow-install: error: cannot read secret {secret_id}: {why}\n");
            return (failed(String::new(), e), None);
        }
    };
    let p = |n: &str| parameter(params, n).unwrap_or_default();
    let cert_name = p("CertName");
    let cert_dir = Some(p("CertDir"))
        .filter(|d| !d.is_empty())
        .unwrap_or("/etc/ssl/certs");
    let key_dir = Some(p("KeyDir"))
        .filter(|d| !d.is_empty())
        .unwrap_or("/etc/ssl/private");
    let service = p("ReloadService");
    let port = p("VerifyPort");
    let verify_name = Some(p("VerifyName"))
        .filter(|n| !n.is_empty())
        .unwrap_or(cert_name);
    let old = before.unwrap_or("none").to_string();
    if *b == Behaviour::ServesOld && !port.is_empty() {
        let svc = if service.is_empty() {
            "the service"
        } else {
            service
        };
        let stderr = format!(
            "certflow-install: verify failed: 127.0.0.1:{port} (SNI {verify_name}) serves serial {old}, \
             not the installed {serial}; previous certificate restored and {svc} reloaded\n"
        );
        return (
            failed(format!("CERTFLOW_SERVED_SERIAL={old}\n"), stderr),
            None,
        );
    }
    let mut out = String::new();
    if !service.is_empty() {
        out.push_str(&format!("certflow-install: reloaded {service}\n"));
    }
    out.push_str(&format!(
        "certflow-install: installed {cert_name}: {cert_dir}/{cert_name}-fullchain.pem, \
         {cert_dir}/{cert_name}-chain.pem, {key_dir}/{cert_name}-privkey.pem\n"
    ));
    out.push_str(&format!("CERTFLOW_INSTALLED_SERIAL={serial}\n"));
    if !port.is_empty() {
        out.push_str(&format!("CERTFLOW_SERVED_SERIAL={serial}\n"));
    }
    let installs = if *b == Behaviour::ServesOld {
        before.map(str::to_string)
    } else {
        Some(serial)
    };
    (ok(out, String::new()), installs)
}
