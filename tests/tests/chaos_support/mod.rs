//! Helpers shared by the chaos tests (`chaos_faults`, `chaos_kill`, `chaos_sigterm`) and
//! `aws_calls`:
//! export requests, reading jobs straight from the emulator (never through a fault proxy),
//! waiting for many jobs, counting SSM commands, and `certflow worker` processes as the
//! chaos tests run them (through the library's `worker_process` harness).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use certflow_tests::certflow::Env;
use certflow_tests::worker_process::{LogDir, WorkerCommand};
use engine::backend::dynamodb::DynamoJobStore;
use engine::{JobId, JobRecord, JobStatus, JobStore};
use workflows::export_certificate::rollout::SERVERS;
use workflows::export_certificate::{ExportState, ServerResult};

/// The reference payload.
pub fn payload(arn: &str, name: &str, key: &str, value: &str) -> String {
    format!(
        r#"{{"CertificateArn": "{arn}", "CertName": "{name}", "TargetTagKey": "{key}", "TargetTagValue": "{value}"}}"#
    )
}

/// The jobs table, read straight from the emulator: the test's own reads are never
/// faulted and never counted by a proxy.
pub fn store(env: &Env) -> DynamoJobStore {
    DynamoJobStore::new(aws_sdk_dynamodb::Client::new(&env.sdk), &env.table)
}

/// A job's record, straight from the emulator.
pub async fn record(env: &Env, id: &JobId) -> Option<JobRecord> {
    store(env).get(id).await.expect("read job")
}

/// Each server's install result for job `id` (its entries beside the record), straight
/// from the emulator.
pub async fn servers(env: &Env, id: &JobId) -> BTreeMap<String, ServerResult> {
    let store = store(env);
    let mut out = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .entries(id, SERVERS, &engine::Groups::All, after.as_deref(), 100)
            .await
            .expect("read the job's server entries");
        for e in &page.entries {
            out.insert(e.key.clone(), ServerResult::of(e));
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
}

/// The export state of a job.
pub fn state(rec: &JobRecord) -> ExportState {
    serde_json::from_value(rec.data.clone()).expect("export state")
}

/// Requests `n` exportable certificates and waits until the emulator has issued them.
pub async fn issued_certificates(env: &Env, n: usize) -> Vec<String> {
    let mut arns = Vec::new();
    for _ in 0..n {
        arns.push(env.certificate(true).await);
    }
    let acm = aws_sdk_acm::Client::new(&env.sdk);
    let until = Instant::now() + Duration::from_secs(60);
    for arn in &arns {
        loop {
            let got = acm
                .describe_certificate()
                .certificate_arn(arn)
                .send()
                .await
                .expect("describe certificate");
            let status = got.certificate().and_then(|c| c.status()).cloned();
            if status == Some(aws_sdk_acm::types::CertificateStatus::Issued) {
                break;
            }
            assert!(Instant::now() < until, "{arn} not issued: {status:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    arns
}

/// Registers `n` servers tagged `key=value` in the simulated fleet and returns their ids.
pub fn tagged_instances(env: &Env, n: u32, key: &str, value: &str) -> Vec<String> {
    let ids = env.instances(n, key, value);
    assert_eq!(ids.len(), n as usize, "instances tagged {key}={value}");
    ids
}

/// How many jobs of the table are in a terminal status (through the status index).
pub async fn terminal_count(store: &DynamoJobStore) -> usize {
    let mut n = 0;
    for status in [
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ] {
        let mut cursor = None;
        loop {
            let Ok(page) = store.list_by_status(status, 100, cursor).await else {
                break;
            };
            n += page.jobs.len();
            cursor = page.cursor;
            if cursor.is_none() {
                break;
            }
        }
    }
    n
}

/// Waits until every job in `ids` is terminal or `timeout` passes, printing progress
/// every ten seconds; returns every job's latest record (terminal or not).
pub async fn wait_all(
    env: &Env,
    ids: &[JobId],
    timeout: Duration,
    label: &str,
) -> BTreeMap<JobId, JobRecord> {
    let store = store(env);
    let started = Instant::now();
    let mut last_print = Instant::now();
    loop {
        let done = terminal_count(&store).await;
        if done >= ids.len() || started.elapsed() >= timeout {
            // Confirm job by job (the index is read without the workers' isolation).
            let mut out = BTreeMap::new();
            for id in ids {
                if let Some(rec) = store.get(id).await.expect("read job") {
                    out.insert(id.clone(), rec);
                }
            }
            let all = out.len() == ids.len() && out.values().all(|r| r.status.is_terminal());
            if all || started.elapsed() >= timeout {
                return out;
            }
        }
        if last_print.elapsed() >= Duration::from_secs(10) {
            println!(
                "[{label}] {done}/{} jobs terminal after {:.0?}",
                ids.len(),
                started.elapsed()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One line per job that did not succeed: what it is doing and why.
pub fn not_succeeded(ids: &[JobId], records: &BTreeMap<JobId, JobRecord>) -> Vec<String> {
    ids.iter()
        .filter_map(|id| match records.get(id) {
            None => Some(format!("{id}: no job record")),
            Some(r) if r.status == JobStatus::Succeeded => None,
            Some(r) => Some(format!(
                "{id}: {} at {} (attempt {}, lease {:?} until {:?}, last error {:?})",
                r.status, r.step, r.attempt, r.lease_owner, r.lease_until, r.last_error
            )),
        })
        .collect()
}

/// SSM commands of this certflow's install document, by comment (one per batch of a
/// job: `certflow job <id> batch <n>`), as the simulated fleet holds them: the side
/// effects that actually happened.
pub async fn commands_by_comment(env: &Env) -> BTreeMap<String, Vec<String>> {
    // Straight from the simulated fleet: the test's proxy may be injecting faults.
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in env
        .fleet()
        .commands_of_document(&env.deps.config.document_name)
    {
        out.entry(c.comment).or_default().push(c.command_id);
    }
    out
}

/// Commands beyond the first, summed over jobs.
pub fn duplicate_commands(by_comment: &BTreeMap<String, Vec<String>>) -> usize {
    by_comment.values().map(|v| v.len().saturating_sub(1)).sum()
}

/// Versions of one secret (straight from the emulator).
pub async fn secret_versions(env: &Env, name: &str) -> usize {
    env.secret_version_ids(name).await.len()
}

/// `certflow worker` as the chaos tests run it: worker id `id`, on `env`'s resources and
/// its test event source, its AWS calls going to `endpoint`, logging at info level to
/// `<id>.log` in `logs`. Add its arguments and settings, then spawn it.
pub fn worker(env: &Env, endpoint: &str, id: &str, logs: &LogDir) -> WorkerCommand {
    WorkerCommand::new(env, endpoint)
        .id(id)
        .accept_test_events()
        .log_level("info")
        .log_in(logs)
}

/// A directory for `test`'s worker logs under cargo's target tmp dir, kept if it fails.
pub fn log_dir(test: &str) -> LogDir {
    LogDir::new(env!("CARGO_TARGET_TMPDIR"), test)
}
