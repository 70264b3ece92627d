//! What the benchmarks write with `--json`, and what the report records of the machine
//! they ran on. Field names are the binaries' JSON keys; unknown keys are ignored.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// `storm --json F`: the renewal storm on the in-memory backends, AWS latencies injected.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Storm {
    #[serde(default)]
    pub date: String,
    /// Injected latency in ms by `"<service> <Operation or *>"`.
    #[serde(default)]
    pub latency_model: BTreeMap<String, f64>,
    #[serde(default)]
    pub workers: u32,
    #[serde(default)]
    pub vcpus: f64,
    pub runs: Vec<StormRun>,
    #[serde(default)]
    pub calls_per_job: BTreeMap<String, f64>,
    pub engine_path_cpu_ms_per_job: f64,
    pub after_success_ms: AfterSuccess,
    /// From the command status event's arrival on the events queue to SUCCEEDED (absent in
    /// older runs).
    #[serde(default)]
    pub after_event_ms: BTreeMap<String, Percentiles>,
}

/// One offered rate of the storm.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StormRun {
    pub offered_per_min: f64,
    pub jobs: u64,
    pub completed_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cpu_ms_per_job: f64,
    pub jobs_per_s_per_vcpu: f64,
}

/// Time from the SSM command's success to the job's SUCCEEDED, woken by the status
/// event or found by the poll.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AfterSuccess {
    pub events: Percentiles,
    pub polls: Percentiles,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
}

/// `export_bench N --json F`: export jobs through a `certflow worker` on the emulator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Export {
    #[serde(default)]
    pub date: String,
    pub jobs: u64,
    pub servers: u64,
    #[serde(default = "one")]
    pub concurrent: u64,
    /// The worker's AWS calls per job by `"<service> <Operation>"`.
    pub calls_per_job: BTreeMap<String, f64>,
    pub calls_per_job_total: f64,
    pub receives_per_job: f64,
    pub worker_cpu_ms_per_job: f64,
    #[serde(default)]
    pub worker_build: String,
    /// The worker's `--runtime-threads` (absent: one per CPU, as in older runs).
    #[serde(default)]
    pub worker_runtime_threads: Option<u64>,
    /// The worker's log filter, its log written as JSON lines (absent: `warn`, as older
    /// runs did).
    #[serde(default)]
    pub worker_log: Option<String>,
    /// The CPU figures were read from the worker's CPU-time clock in ns, not in 10 ms ticks
    /// (absent: ticks, as older runs read them).
    #[serde(default)]
    pub worker_cpu_exact: bool,
    pub idle_cpu_ms_per_s: f64,
    /// The AWS SDK's own CPU per call, measured by the bench alone (absent in older runs).
    #[serde(default)]
    pub sdk_floor_ms_per_call: Option<f64>,
    /// The same call's CPU when its thread slept [`Self::sdk_floor_rest_ms`] before it
    /// (absent in older runs).
    #[serde(default)]
    pub sdk_rested_floor_ms_per_call: Option<f64>,
    /// How long that rest was, in ms.
    #[serde(default)]
    pub sdk_floor_rest_ms: Option<u64>,
    /// The workflow's own calls per job, as the bench made them itself (absent in older
    /// runs).
    #[serde(default)]
    pub direct_calls_per_job: Option<f64>,
    /// What those calls cost the bench's bare client in CPU, per job (absent in older runs).
    #[serde(default)]
    pub direct_cpu_ms_per_job: Option<f64>,
    /// The worker's CPU per `demo` job, whose steps make no call: the engine alone on the
    /// real backends (absent in older runs).
    #[serde(default)]
    pub engine_alone_cpu_ms_per_job: Option<f64>,
    /// The calls of such a job (jobs table, task queue).
    #[serde(default)]
    pub engine_alone_calls_per_job: Option<f64>,
    #[serde(default)]
    pub client_connections: u64,
    pub wall_ms_p50: f64,
    pub wall_ms_p99: f64,
    pub jobs_per_s: f64,
}

fn one() -> u64 {
    1
}

impl Export {
    /// Every AWS call of a job, `ReceiveMessage` included (added from `receives_per_job`
    /// when the map leaves it out).
    pub fn calls_with_receives(&self) -> f64 {
        let sum: f64 = self.calls_per_job.values().sum();
        let has_receives = self
            .calls_per_job
            .keys()
            .any(|k| split_call(k).1 == "ReceiveMessage");
        if has_receives {
            sum
        } else {
            sum + self.receives_per_job
        }
    }
}

/// The machine and the commands of a run, saved beside the results as `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    /// The day the report ran (UTC, `YYYY-MM-DD`).
    pub date: String,
    pub cores: usize,
    pub cpu_model: String,
    /// `/proc/loadavg`'s first three figures when the run started.
    #[serde(default)]
    pub load_at_start: String,
    /// moto's version in the project's `.venv`, if found.
    #[serde(default)]
    pub moto_version: Option<String>,
    #[serde(default)]
    pub quick: bool,
    /// The benchmark commands, as run.
    #[serde(default)]
    pub commands: Vec<String>,
}

/// Everything a report is rendered from.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub run: RunInfo,
    pub storm: Storm,
    /// The one-at-a-time export run (one server): calls and CPU per job.
    pub export: Export,
    /// The concurrent export run, if there was one.
    pub export_concurrent: Option<Export>,
    /// Rendered from hand-written samples: the document says so at its top.
    pub sample: bool,
}

/// File names inside a results directory.
pub const STORM_FILE: &str = "storm.json";
pub const EXPORT_FILE: &str = "export.json";
pub const EXPORT_CONCURRENT_FILE: &str = "export-concurrent.json";
pub const RUN_FILE: &str = "run.json";

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))
}

impl Inputs {
    /// Reads a results directory: `storm.json`, `export.json`, and, when present,
    /// `export-concurrent.json` and `run.json` (without it, `fallback` describes the
    /// machine).
    pub fn read_dir(dir: &Path, fallback: impl FnOnce() -> RunInfo) -> Result<Inputs, String> {
        let storm: Storm = read_json(&dir.join(STORM_FILE))?;
        let export: Export = read_json(&dir.join(EXPORT_FILE))?;
        let concurrent = dir.join(EXPORT_CONCURRENT_FILE);
        let export_concurrent = if concurrent.exists() {
            Some(read_json(&concurrent)?)
        } else {
            None
        };
        let run_file = dir.join(RUN_FILE);
        let run = if run_file.exists() {
            read_json(&run_file)?
        } else {
            fallback()
        };
        let sample = std::fs::read_to_string(dir.join(STORM_FILE))
            .map(|t| t.contains("\"_sample\""))
            .unwrap_or(false);
        Ok(Inputs {
            run,
            storm,
            export,
            export_concurrent,
            sample,
        })
    }
}

/// `"Secrets Manager CreateSecret"` → (`"Secrets Manager"`, `"CreateSecret"`): the
/// operation is the last word, the service what comes before it, named the way AWS
/// names it (`secretsmanager`, `SecretsManager` → `Secrets Manager`).
pub fn split_call(key: &str) -> (String, &str) {
    let key = key.trim();
    let (service, op) = match key.rsplit_once(' ') {
        Some((s, o)) => (s.trim(), o),
        None => (key, ""),
    };
    (service_name(service), op)
}

pub fn service_name(raw: &str) -> String {
    let flat: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    match flat.as_str() {
        "dynamodb" => "DynamoDB",
        "sqs" => "SQS",
        "acm" => "ACM",
        "secretsmanager" => "Secrets Manager",
        "ssm" => "SSM",
        "kms" => "KMS",
        "eventbridge" | "events" => "EventBridge",
        "sts" => "STS",
        _ => return raw.to_string(),
    }
    .to_string()
}

/// Calls per job summed by service.
pub fn by_service(calls: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (k, v) in calls {
        *out.entry(split_call(k).0).or_insert(0.0) += v;
    }
    out
}
