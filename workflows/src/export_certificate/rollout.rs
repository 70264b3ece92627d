//! The staged rollout of an install: which servers, in what order, in which batch, and
//! when it stops. Pure: the `install` and `wait` steps do the calls.
//!
//! 1. **The plan.** The worker resolves the servers carrying the target tag
//!    (`DescribeInstanceInformation`, every page), sorts them by id, and writes one entry
//!    per server (collection [`SERVERS`], group [`PENDING`], its batch in the data). The
//!    record keeps only counts. Servers whose SSM agent is not online are entered as
//!    [`OFFLINE`] and not sent anything; the job names them when it ends.
//! 2. **The canary.** Batch 0 is the first `Canary` servers (default 1). It must succeed
//!    before any other server is sent the command.
//! 3. **The batches.** Then batches of `MaxConcurrency` servers (a count, or a percentage
//!    of the fleet; at most [`MAX_INSTANCE_IDS`], one SSM command per batch), one after
//!    the other, each waited for to the end.
//! 4. **The stop.** When more servers have failed than `MaxErrors` allows (a count, or a
//!    percentage of the fleet; default 0), no further batch is sent and the job fails,
//!    naming the first failed servers and their reasons. Servers not reached keep the
//!    certificate they have.
//! 5. **Late joiners.** After the last batch the servers are resolved again; servers that
//!    joined the tag meanwhile are added as one more batch (at most [`MAX_SWEEPS`] times),
//!    so a server added mid-rollout is installed too, not silently skipped. One that joins
//!    after that is left to the next run.

use engine::Entry;
use serde::{Deserialize, Serialize};

use crate::ssm::{of_fleet, InstanceStatus, ManagedServer, MAX_INSTANCE_IDS};

/// The entry collection of an export job's servers.
pub const SERVERS: &str = "servers";
/// Group of a server planned and not finished yet (for a finished job: not reached).
pub const PENDING: &str = "pending";
/// Group of a server that installed the certificate.
pub const OK: &str = "ok";
/// Group of a server whose install failed (any final status but `Success`).
pub const FAILED: &str = "failed";
/// Group of a server whose SSM agent was not online when the rollout was planned.
pub const OFFLINE: &str = "offline";

/// How many times the servers are resolved again after the last batch.
pub const MAX_SWEEPS: u32 = 2;

/// How many failures the record names (the rest are in the entries).
pub const FIRST_FAILURES: usize = 5;

/// Default canary: one server.
pub const DEFAULT_CANARY: u32 = 1;

/// How the rollout is staged: the deployment's settings, or a request's overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staging {
    /// Servers in the canary batch (0: no canary).
    pub canary: u32,
    /// Batch size: a count, or a percentage of the fleet.
    pub max_concurrency: String,
    /// Failures tolerated: a count, or a percentage of the fleet.
    pub max_errors: String,
}

/// Where a rollout stands: only counts and the first failures, so that the record stays
/// small whatever the fleet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Rollout {
    /// Which plan this is (when it was made, epoch ms): a plan made again by an attempt
    /// whose first plan was never committed gets another, and entries of the first one
    /// are ignored.
    #[serde(default)]
    pub plan: i64,
    /// Servers planned (online when planned, or added later), in entries.
    pub servers: u32,
    /// Servers found offline when planned (not sent anything).
    #[serde(default)]
    pub offline: u32,
    /// Servers in the canary batch.
    pub canary: u32,
    /// Servers per batch after the canary.
    pub batch_size: u32,
    /// Failed servers tolerated.
    pub max_errors: u32,
    /// Batches planned (the canary is batch 0).
    pub batches: u32,
    /// The batch being sent or waited for.
    pub batch: u32,
    /// Servers in the current batch.
    #[serde(default)]
    pub batch_servers: u32,
    /// Servers that installed the certificate.
    #[serde(default)]
    pub succeeded: u32,
    /// Servers that failed.
    #[serde(default)]
    pub failed: u32,
    /// Servers proven to serve the installed serial (when verification is on).
    #[serde(default)]
    pub verified: u32,
    /// The first failures, `<server> <status> (<reason>)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first_failures: Vec<String>,
    /// Times the servers were resolved again after the last batch.
    #[serde(default)]
    pub sweeps: u32,
    /// The job failed at the end of this rollout (stopped, timed out, or with failures
    /// within `MaxErrors`): when `wait` runs again it is an operator's retry, which
    /// resumes the rollout (see [`Rollout::resume`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ended: bool,
    /// The servers planned, while there are at most [`KNOWN_IN_RECORD`] of them: the
    /// late-joiner check compares the fleet with these instead of reading every entry back
    /// (a call saved per small rollout); larger plans are read from the entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known: Option<Known>,
}

/// Most servers whose ids a rollout keeps in the record ([`Rollout::known`]).
pub const KNOWN_IN_RECORD: usize = 10;

/// The servers of a small plan, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Known {
    /// Online when planned (or added later): sent, or to be sent, the install.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub online: Vec<String>,
    /// Offline when planned: not sent anything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offline: Vec<String>,
}

/// What the job records about one server (an entry's data).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServerResult {
    /// The batch it is in (0: the canary).
    pub batch: u32,
    /// The plan it belongs to ([`Rollout::plan`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<i64>,
    /// SSM's invocation status, once sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<InstanceStatus>,
    /// SSM's status details, or the first line of its error output when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The serial it reported installing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The serial it was found serving after the reload (verification on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_serial: Option<String>,
    /// The command it was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// Its SSM agent's `PingStatus` when planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<String>,
}

impl ServerResult {
    /// The entry of server `id`.
    pub fn entry(&self, id: &str) -> Entry {
        let group = match &self.status {
            Some(InstanceStatus::Success) => OK,
            Some(s) if s.is_final() => FAILED,
            _ if self.ping.as_deref().is_some_and(|p| p != "Online")
                && self.command_id.is_none() =>
            {
                OFFLINE
            }
            _ => PENDING,
        };
        Entry::new(
            id,
            group,
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Reads an entry's data back (a malformed one reads as an empty result).
    pub fn of(entry: &Entry) -> ServerResult {
        serde_json::from_value(entry.data.clone()).unwrap_or_default()
    }
}

/// Batch `b` as people count it: `canary`, then 1, 2, … (with a canary, batch index 1 is
/// batch 1; without one, index 0 is).
pub fn batch_label(b: u32, has_canary: bool) -> String {
    match (has_canary, b) {
        (true, 0) => "canary".to_string(),
        (true, b) => b.to_string(),
        (false, b) => (b + 1).to_string(),
    }
}

/// The plan for `servers` (sorted by id) staged as `staging`: the rollout and one entry
/// per server.
pub(crate) fn plan(
    servers: &[ManagedServer],
    staging: &Staging,
    plan_id: i64,
) -> (Rollout, Vec<Entry>) {
    let online: Vec<&ManagedServer> = servers.iter().filter(|s| s.online).collect();
    let n = online.len() as u32;
    let canary = staging.canary.min(n);
    let batch_size = of_fleet(&staging.max_concurrency, n, true).clamp(1, MAX_INSTANCE_IDS as u32);
    let max_errors = of_fleet(&staging.max_errors, n, false);
    let rest = n - canary;
    let batches = u32::from(canary > 0) + rest.div_ceil(batch_size);
    let batch_of = |p: u32| {
        if p < canary {
            0
        } else {
            u32::from(canary > 0) + (p - canary) / batch_size
        }
    };
    let mut entries = Vec::with_capacity(servers.len());
    for (p, s) in online.iter().enumerate() {
        let r = ServerResult {
            batch: batch_of(p as u32),
            plan: Some(plan_id),
            ping: Some(s.ping.clone()),
            ..ServerResult::default()
        };
        entries.push(r.entry(&s.id));
    }
    for s in servers.iter().filter(|s| !s.online) {
        let r = ServerResult {
            batch: batches,
            plan: Some(plan_id),
            ping: Some(s.ping.clone()),
            ..ServerResult::default()
        };
        entries.push(r.entry(&s.id));
    }
    let known = (servers.len() <= KNOWN_IN_RECORD).then(|| Known {
        online: online.iter().map(|s| s.id.clone()).collect(),
        offline: servers
            .iter()
            .filter(|s| !s.online)
            .map(|s| s.id.clone())
            .collect(),
    });
    let rollout = Rollout {
        plan: plan_id,
        servers: n,
        offline: servers.len() as u32 - n,
        known,
        canary,
        batch_size,
        max_errors,
        batches,
        ..Rollout::default()
    };
    (rollout, entries)
}

impl Rollout {
    /// Whether the failures so far stop the rollout: more than `MaxErrors`, or any in
    /// the canary batch (the canary must succeed, whatever `MaxErrors` tolerates later).
    pub fn stopped(&self) -> bool {
        self.failed > self.max_errors || (self.canary_failed())
    }

    /// Whether the canary batch has just failed.
    pub fn canary_failed(&self) -> bool {
        self.batch == 0 && self.canary > 0 && self.failed > 0
    }

    /// An operator's retry of a job that failed with this rollout: the failed servers
    /// are counted out again and will be sent the install in the current batch; the
    /// rollout then goes on from there. Returns how many servers are sent again.
    pub fn resume(&mut self, failed: u32) -> u32 {
        self.failed = self.failed.saturating_sub(failed);
        self.first_failures.clear();
        self.ended = false;
        self.sweeps = 0;
        failed
    }

    /// Whether `r` (an entry's data) is in batch `batch` of this plan. Entries written
    /// before plans had ids belong to every plan.
    pub fn in_batch(&self, r: &ServerResult, batch: u32) -> bool {
        r.batch == batch && r.plan.is_none_or(|p| p == self.plan)
    }

    /// Whether batch `batch` is the last one planned.
    pub fn is_last_batch(&self) -> bool {
        self.batch + 1 >= self.batches
    }

    /// What batch `b` is called in notes and errors: the canary batch, then batches
    /// numbered from 1 (as `jobs show`'s BATCH column numbers them).
    pub fn batch_name(&self, b: u32) -> String {
        if b == 0 && self.canary > 0 {
            return format!("canary batch ({} of {} servers)", self.canary, self.servers);
        }
        let after_canary = u32::from(self.canary > 0);
        format!(
            "batch {} of {}",
            batch_label(b, self.canary > 0),
            self.batches - after_canary
        )
    }

    /// Adds `joined` servers (sorted, online) as one more batch; their entries.
    pub(crate) fn add_late(&mut self, joined: &[ManagedServer]) -> Vec<Entry> {
        let batch = self.batches;
        self.batches += 1;
        self.servers += joined.len() as u32;
        if let Some(k) = &mut self.known {
            k.offline.retain(|id| !joined.iter().any(|j| &j.id == id));
            k.online.extend(joined.iter().map(|j| j.id.clone()));
            if k.online.len() + k.offline.len() > KNOWN_IN_RECORD {
                self.known = None;
            }
        }
        joined
            .iter()
            .map(|s| {
                ServerResult {
                    batch,
                    plan: Some(self.plan),
                    ping: Some(s.ping.clone()),
                    ..ServerResult::default()
                }
                .entry(&s.id)
            })
            .collect()
    }

    /// Counts the end of one server's install.
    pub fn count(&mut self, id: &str, r: &ServerResult) {
        match &r.status {
            Some(InstanceStatus::Success) => {
                self.succeeded += 1;
                if r.served_serial.is_some() {
                    self.verified += 1;
                }
            }
            // Still running (a batch cancelled at the install timeout): not an outcome.
            Some(status) if !status.is_final() => {}
            Some(status) => {
                self.failed += 1;
                if self.first_failures.len() < FIRST_FAILURES {
                    let line = match &r.detail {
                        Some(d) if d != status.as_str() => format!("{id} {status} ({d})"),
                        _ => format!("{id} {status}"),
                    };
                    self.first_failures.push(line);
                }
            }
            None => {}
        }
    }

    /// Servers never sent the command (once the current batch has finished).
    pub fn not_reached(&self) -> u32 {
        self.servers.saturating_sub(self.succeeded + self.failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(n: usize) -> Vec<ManagedServer> {
        (0..n)
            .map(|i| ManagedServer {
                id: format!("i-{i:017x}"),
                online: true,
                ping: "Online".into(),
            })
            .collect()
    }

    fn staging(canary: u32, conc: &str, errors: &str) -> Staging {
        Staging {
            canary,
            max_concurrency: conc.into(),
            max_errors: errors.into(),
        }
    }

    fn batches(entries: &[Entry]) -> Vec<u32> {
        entries.iter().map(|e| ServerResult::of(e).batch).collect()
    }

    #[test]
    fn a_canary_then_batches_of_max_concurrency() {
        let (r, e) = plan(&fleet(7), &staging(1, "3", "0"), 7);
        assert_eq!((r.servers, r.canary, r.batch_size, r.batches), (7, 1, 3, 3));
        assert_eq!(batches(&e), [0, 1, 1, 1, 2, 2, 2]);
        assert!(e.iter().all(|e| e.group == PENDING));
    }

    #[test]
    fn a_percentage_is_of_the_fleet_and_a_batch_is_at_most_one_command() {
        let (r, _) = plan(&fleet(1000), &staging(1, "10%", "0"), 7);
        assert_eq!(
            r.batch_size, 50,
            "10% of 1,000 is 100, capped at SSM's 50 ids"
        );
        assert_eq!(r.batches, 1 + 20);
        let (r, _) = plan(&fleet(60), &staging(1, "10%", "5%"), 7);
        assert_eq!((r.batch_size, r.batches, r.max_errors), (6, 11, 3));
    }

    #[test]
    fn no_canary_and_a_canary_larger_than_the_fleet() {
        let (r, e) = plan(&fleet(4), &staging(0, "2", "0"), 7);
        assert_eq!(batches(&e), [0, 0, 1, 1]);
        assert_eq!(r.batches, 2);
        let (r, e) = plan(&fleet(2), &staging(5, "2", "0"), 7);
        assert_eq!((r.canary, r.batches), (2, 1));
        assert_eq!(batches(&e), [0, 0]);
    }

    #[test]
    fn offline_servers_are_entered_but_not_planned() {
        let mut servers = fleet(3);
        servers[1].online = false;
        servers[1].ping = "ConnectionLost".into();
        let (r, e) = plan(&servers, &staging(1, "1", "0"), 7);
        assert_eq!((r.servers, r.offline, r.batches), (2, 1, 2));
        let off: Vec<&Entry> = e.iter().filter(|e| e.group == OFFLINE).collect();
        assert_eq!(off.len(), 1);
        assert_eq!(off[0].key, servers[1].id);
    }

    #[test]
    fn the_first_failure_beyond_max_errors_stops_and_is_named() {
        let (mut r, _) = plan(&fleet(5), &staging(1, "2", "0"), 7);
        let ok = ServerResult {
            status: Some(InstanceStatus::Success),
            served_serial: Some("0A".into()),
            ..ServerResult::default()
        };
        r.count("i-1", &ok);
        assert!(!r.stopped());
        let bad = ServerResult {
            status: Some(InstanceStatus::Failed),
            detail: Some("verify failed: serves 01, not 02".into()),
            ..ServerResult::default()
        };
        r.count("i-2", &bad);
        assert!(r.stopped());
        assert_eq!(r.verified, 1);
        assert_eq!(
            r.first_failures,
            ["i-2 Failed (verify failed: serves 01, not 02)"]
        );
        for i in 0..10 {
            r.count(&format!("i-x{i}"), &bad);
        }
        assert_eq!(r.first_failures.len(), FIRST_FAILURES);
    }

    #[test]
    fn a_failed_canary_stops_whatever_max_errors_tolerates() {
        let (mut r, _) = plan(&fleet(5), &staging(1, "2", "3"), 7);
        let bad = ServerResult {
            status: Some(InstanceStatus::Failed),
            ..ServerResult::default()
        };
        r.count("i-0", &bad);
        assert!(r.stopped() && r.canary_failed());
        r.batch = 1;
        assert!(!r.stopped(), "later, MaxErrors 3 tolerates it");
    }

    #[test]
    fn batches_are_named_as_people_count_them() {
        let (r, _) = plan(&fleet(7), &staging(1, "3", "0"), 7);
        assert_eq!(r.batch_name(0), "canary batch (1 of 7 servers)");
        assert_eq!(r.batch_name(1), "batch 1 of 2");
        assert_eq!(r.batch_name(2), "batch 2 of 2");
        assert_eq!(batch_label(2, true), "2");
        let (r, _) = plan(&fleet(4), &staging(0, "2", "0"), 7);
        assert_eq!(r.batch_name(0), "batch 1 of 2");
        assert_eq!(batch_label(0, false), "1");
    }

    #[test]
    fn running_servers_are_not_counted_and_a_resume_counts_the_failed_out() {
        let (mut r, _) = plan(&fleet(4), &staging(0, "4", "0"), 7);
        let running = ServerResult {
            status: Some(InstanceStatus::InProgress),
            ..ServerResult::default()
        };
        r.count("i-0", &running);
        assert_eq!((r.succeeded, r.failed), (0, 0));
        let bad = ServerResult {
            status: Some(InstanceStatus::Failed),
            ..ServerResult::default()
        };
        r.count("i-1", &bad);
        r.ended = true;
        assert_eq!(r.resume(1), 1);
        assert_eq!((r.failed, r.ended), (0, false));
        assert!(r.first_failures.is_empty());
    }

    #[test]
    fn entries_of_another_plan_are_in_no_batch() {
        let (r, e) = plan(&fleet(2), &staging(1, "1", "0"), 7);
        let mine = ServerResult::of(&e[1]);
        assert!(r.in_batch(&mine, 1));
        let older = ServerResult {
            plan: Some(6),
            ..mine.clone()
        };
        assert!(!r.in_batch(&older, 1), "a server only the first plan had");
        let before_plans = ServerResult { plan: None, ..mine };
        assert!(r.in_batch(&before_plans, 1));
    }

    #[test]
    fn late_joiners_make_one_more_batch() {
        let (mut r, _) = plan(&fleet(3), &staging(1, "2", "0"), 7);
        assert_eq!(r.batches, 2);
        let joined = vec![ManagedServer {
            id: "i-new".into(),
            online: true,
            ping: "Online".into(),
        }];
        let e = r.add_late(&joined);
        assert_eq!((r.batches, r.servers), (3, 4));
        assert_eq!(batches(&e), [2]);
        assert!(r.known.unwrap().online.contains(&"i-new".to_string()));
    }

    #[test]
    fn a_small_plan_keeps_its_servers_in_the_record_a_large_one_in_entries_only() {
        let mut servers = fleet(3);
        servers[2].online = false;
        let (mut r, _) = plan(&servers, &staging(1, "2", "0"), 7);
        let known = r.known.clone().unwrap();
        assert_eq!(known.online.len(), 2);
        assert_eq!(known.offline, [servers[2].id.clone()]);
        // The offline server comes back and joins: it is online now, and only once.
        let back = ManagedServer {
            online: true,
            ..servers[2].clone()
        };
        r.add_late(&[back]);
        let known = r.known.clone().unwrap();
        assert!(known.offline.is_empty());
        assert_eq!(known.online.len(), 3);
        // Past the limit, the record names none of them.
        let (big, _) = plan(&fleet(KNOWN_IN_RECORD + 1), &staging(1, "2", "0"), 7);
        assert_eq!(big.known, None);
        let (mut edge, _) = plan(&fleet(KNOWN_IN_RECORD), &staging(1, "2", "0"), 7);
        assert!(edge.known.is_some());
        let one_more = ManagedServer {
            id: "i-zzz".into(),
            online: true,
            ping: "Online".into(),
        };
        edge.add_late(&[one_more]);
        assert_eq!(
            edge.known, None,
            "grown past the limit: read from the entries"
        );
    }

    #[test]
    fn server_results_read_and_write_by_name() {
        let r = ServerResult {
            batch: 2,
            plan: Some(7),
            status: Some(InstanceStatus::Failed),
            detail: Some("bad".into()),
            serial: Some("0A".into()),
            served_serial: Some("01".into()),
            command_id: Some("c-1".into()),
            ping: Some("Online".into()),
        };
        let e = r.entry("i-1");
        assert_eq!(e.group, FAILED);
        assert_eq!(e.data["ServedSerial"], "01");
        assert_eq!(e.data["Status"], "Failed");
        assert_eq!(ServerResult::of(&e), r);
    }
}
