//! Helpers shared by the chaos tests (`chaos_faults`, `chaos_kill`, `chaos_sigterm`):
//! export requests, reading jobs straight from the emulator (never through a fault proxy),
//! waiting for many jobs, counting SSM commands, and running `certflow worker` processes.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use certflow_tests::certflow::Env;
use engine::backend::dynamodb::DynamoJobStore;
use engine::{JobId, JobRecord, JobStatus, JobStore};
use workflows::export_certificate::ExportState;

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

/// Ids of the instances tagged `key=value`.
pub fn instance_ids(key: &str, value: &str) -> Vec<String> {
    let answer = certflow_tests::aws_cli(&[
        "ec2",
        "describe-instances",
        "--filters",
        &format!("Name=tag:{key},Values={value}"),
        "--query",
        "Reservations[].Instances[].InstanceId",
    ]);
    let mut ids: Vec<String> = serde_json::from_value(answer).expect("instance ids");
    ids.sort();
    ids
}

/// Starts `n` instances tagged `key=value` and returns their ids.
pub fn tagged_instances(env: &Env, n: u32, key: &str, value: &str) -> Vec<String> {
    env.instances(n, key, value);
    let ids = instance_ids(key, value);
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

/// SSM commands of this certflow's install document, by comment (`certflow job <id>`),
/// as the emulator lists them: the side effects that actually happened.
pub async fn commands_by_comment(env: &Env) -> BTreeMap<String, Vec<String>> {
    let ssm = aws_sdk_ssm::Client::new(&env.sdk);
    let filter = aws_sdk_ssm::types::CommandFilter::builder()
        .key(aws_sdk_ssm::types::CommandFilterKey::DocumentName)
        .value(&env.deps.config.document_name)
        .build()
        .unwrap();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut token = None;
    loop {
        let page = ssm
            .list_commands()
            .filters(filter.clone())
            .set_next_token(token)
            .send()
            .await
            .expect("list commands");
        // The emulator ignores the filter (and answers every command of the account).
        let ours = |c: &&aws_sdk_ssm::types::Command| {
            c.document_name() == Some(env.deps.config.document_name.as_str())
        };
        for c in page.commands().iter().filter(ours) {
            out.entry(c.comment().unwrap_or_default().to_string())
                .or_default()
                .push(c.command_id().unwrap_or_default().to_string());
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return out;
        }
    }
}

/// Commands beyond the first, summed over jobs.
pub fn duplicate_commands(by_comment: &BTreeMap<String, Vec<String>>) -> usize {
    by_comment.values().map(|v| v.len().saturating_sub(1)).sum()
}

/// Versions of one secret (straight from the emulator).
pub async fn secret_versions(env: &Env, name: &str) -> usize {
    aws_sdk_secretsmanager::Client::new(&env.sdk)
        .list_secret_version_ids()
        .secret_id(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("versions of {name}: {e:?}"))
        .versions()
        .len()
}

// ---------------------------------------------------------------------------------------
// `certflow worker` processes.

/// A directory for worker logs under cargo's target tmp dir, kept if the test fails (its
/// path is printed) and removed by [`LogDir::done`] when it passes.
pub struct LogDir(pub PathBuf);

impl LogDir {
    /// A new, empty log directory for `test`.
    pub fn new(test: &str) -> LogDir {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(certflow_tests::unique(test));
        std::fs::create_dir_all(&dir).expect("log dir");
        println!("[{test}] worker logs in {}", dir.display());
        LogDir(dir)
    }

    /// The test passed: the logs go.
    pub fn done(self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `certflow worker` process.
pub struct WorkerProcess {
    /// Its worker id (on leases and history).
    pub id: String,
    /// The process.
    pub child: Child,
    /// Where its log goes.
    pub log: PathBuf,
}

impl WorkerProcess {
    /// Starts `certflow worker` on `env`'s resources, its AWS calls going to `endpoint`,
    /// with `args` after `worker` and `extra` environment variables; logs to `log_dir`.
    pub fn spawn(
        env: &Env,
        endpoint: &str,
        id: &str,
        args: &[&str],
        extra: &[(&str, &str)],
        log_dir: &Path,
    ) -> WorkerProcess {
        let log = log_dir.join(format!("{id}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = env.certflow_command(endpoint);
        cmd.arg("worker")
            .args(args)
            .env("CERTFLOW_EVENT_SOURCES", format!("aws.acm,{}", env.source))
            .env("CERTFLOW_WORKER_ID", id)
            .env("CERTFLOW_LOG", "info")
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start certflow worker");
        WorkerProcess {
            id: id.to_string(),
            child,
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (what ECS sends to stop a task).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {}", self.pid());
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        // Never leave a worker running after its test (a failed assertion included).
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}
