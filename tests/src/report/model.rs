//! The reference design's calls per job, counted from its definition, and the cost model:
//! certflow (SQS + DynamoDB on-demand + Fargate) against Step Functions Standard or Express
//! with Lambda and API Gateway, at public us-east-1 prices.

use std::collections::BTreeMap;

use super::data::{split_call, Export};

/// The day the prices below were read from the pricing pages.
pub const PRICES_DATE: &str = "2026-12-05";

/// Public us-east-1 prices, on-demand, no free tier counted.
pub mod price {
    /// SQS standard queue, per request (first 100 billion a month).
    pub const SQS_REQUEST: f64 = 0.40 / 1e6;
    /// DynamoDB on-demand, standard table class.
    pub const DDB_WRU: f64 = 0.625 / 1e6;
    pub const DDB_RRU: f64 = 0.125 / 1e6;
    /// Fargate, Linux x86, per hour.
    pub const FARGATE_VCPU_HOUR: f64 = 0.04048;
    pub const FARGATE_GB_HOUR: f64 = 0.004445;
    /// Step Functions Standard, per state transition ($0.025 per 1,000).
    pub const SFN_TRANSITION: f64 = 0.025 / 1000.0;
    /// Step Functions Express, per request and per GB-second of duration.
    pub const SFN_EXPRESS_REQUEST: f64 = 1.00 / 1e6;
    pub const SFN_EXPRESS_GB_S: f64 = 0.00001667;
    /// Lambda (x86), per request and per GB-second.
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
    pub const LAMBDA_GB_S: f64 = 0.0000166667;
    /// API Gateway REST API, per request (first 333 million a month).
    pub const APIGW_REST_REQUEST: f64 = 3.50 / 1e6;
}

/// The pricing pages the figures come from.
pub const PRICE_PAGES: &[(&str, &str)] = &[
    (
        "Step Functions",
        "https://aws.amazon.com/step-functions/pricing/",
    ),
    ("Lambda", "https://aws.amazon.com/lambda/pricing/"),
    ("SQS", "https://aws.amazon.com/sqs/pricing/"),
    (
        "DynamoDB on-demand",
        "https://aws.amazon.com/dynamodb/pricing/on-demand/",
    ),
    ("Fargate", "https://aws.amazon.com/fargate/pricing/"),
    ("API Gateway", "https://aws.amazon.com/api-gateway/pricing/"),
];

/// The job volumes the report prices.
pub const VOLUMES: [f64; 3] = [10_000.0, 100_000.0, 1_000_000.0];

// ------------------------------------------------------------------ reference ----

/// The reference solution (API Gateway → Step Functions → Lambdas), one export and
/// install on one server, as DESIGN.md §1 describes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reference {
    /// Status checks until the command is done (each after the fixed wait).
    pub polls: u32,
    /// The fixed Wait state, seconds.
    pub wait_s: f64,
    /// Billed duration of one Lambda invocation, ms.
    pub lambda_ms: f64,
    /// Lambda memory, MB.
    pub lambda_mb: f64,
    /// Express workflow memory billed, MB (64 MB chunks).
    pub express_mb: f64,
}

impl Default for Reference {
    fn default() -> Self {
        Reference {
            polls: 1,
            wait_s: 15.0,
            lambda_ms: 200.0,
            lambda_mb: 128.0,
            express_mb: 64.0,
        }
    }
}

/// One state of the reference state machine as it runs for one job.
pub struct State {
    pub name: &'static str,
    pub kind: &'static str,
    /// The Lambda it invokes, and the AWS calls that Lambda makes.
    pub lambda_calls: &'static [&'static str],
}

impl Reference {
    /// The states entered for one job, in order: export, store, send, then the wait
    /// loop (Wait → status check → Choice) once per poll, then the end.
    pub fn states(&self) -> Vec<State> {
        let mut s = vec![
            State {
                name: "ExportCertificate",
                kind: "Task (Lambda)",
                lambda_calls: &["Secrets Manager CreateSecret", "ACM ExportCertificate"],
            },
            State {
                name: "StoreInventory",
                kind: "Task (Lambda)",
                lambda_calls: &["ACM DescribeCertificate", "DynamoDB PutItem"],
            },
            State {
                name: "InstallCertificate",
                kind: "Task (Lambda)",
                lambda_calls: &["SSM SendCommand"],
            },
        ];
        for _ in 0..self.polls {
            s.push(State {
                name: "Wait15Seconds",
                kind: "Wait",
                lambda_calls: &[],
            });
            s.push(State {
                name: "CheckCommandStatus",
                kind: "Task (Lambda)",
                lambda_calls: &["SSM GetCommandInvocation"],
            });
            s.push(State {
                name: "IsInstallDone",
                kind: "Choice",
                lambda_calls: &[],
            });
        }
        s.push(State {
            name: "Done",
            kind: "Succeed",
            lambda_calls: &[],
        });
        s
    }

    /// State transitions billed by Step Functions Standard: one per state entered.
    pub fn transitions(&self) -> f64 {
        self.states().len() as f64
    }

    pub fn lambda_invocations(&self) -> f64 {
        self.states()
            .iter()
            .filter(|s| s.kind.contains("Lambda"))
            .count() as f64
    }

    /// The AWS calls its Lambdas make, by `"<service> <Operation>"`.
    pub fn lambda_calls(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.states() {
            for c in s.lambda_calls {
                *out.entry(c.to_string()).or_insert(0.0) += 1.0;
            }
        }
        out
    }

    /// Billable units per job by service: the API Gateway request, Step Functions state
    /// transitions, Lambda invocations, and the calls the Lambdas make.
    pub fn by_service(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        out.insert("API Gateway".to_string(), 1.0);
        out.insert("Step Functions".to_string(), self.transitions());
        out.insert("Lambda".to_string(), self.lambda_invocations());
        for (k, v) in self.lambda_calls() {
            *out.entry(split_call(&k).0).or_insert(0.0) += v;
        }
        out
    }

    /// Seconds an execution lasts: the waits and the Lambdas.
    pub fn execution_s(&self) -> f64 {
        self.polls as f64 * self.wait_s + self.lambda_invocations() * self.lambda_ms / 1000.0
    }

    fn lambda_cost(&self) -> Vec<Line> {
        let n = self.lambda_invocations();
        let gb_s = n * self.lambda_ms / 1000.0 * self.lambda_mb / 1024.0;
        vec![
            Line::new(
                "Lambda requests",
                format!("{n} invocations × $0.20 per million"),
                n * price::LAMBDA_REQUEST,
            ),
            Line::new(
                "Lambda duration",
                format!(
                    "{n} × {} ms × {} MB = {} GB-s × $0.0000166667",
                    self.lambda_ms,
                    self.lambda_mb,
                    num(gb_s, 4)
                ),
                gb_s * price::LAMBDA_GB_S,
            ),
            Line::new(
                "DynamoDB (inventory row)",
                "1 PutItem, ≤ 1 KB, no index: 1 WRU".to_string(),
                price::DDB_WRU,
            ),
            Line::new(
                "API Gateway REST",
                "1 request × $3.50 per million".to_string(),
                price::APIGW_REST_REQUEST,
            ),
        ]
    }

    /// Step Functions Standard + Lambda + API Gateway, per job.
    pub fn standard(&self) -> Cost {
        let t = self.transitions();
        let mut lines = vec![Line::new(
            "Step Functions Standard",
            format!("{t} state transitions × $0.025 per 1,000"),
            t * price::SFN_TRANSITION,
        )];
        lines.extend(self.lambda_cost());
        Cost {
            name: "Step Functions Standard + Lambda",
            per_job: lines,
            at_rest: vec![],
        }
    }

    /// Step Functions Express + Lambda + API Gateway, per job.
    pub fn express(&self) -> Cost {
        let secs = self.execution_s();
        let gb_s = secs * self.express_mb / 1024.0;
        let mut lines = vec![
            Line::new(
                "Step Functions Express requests",
                "1 execution × $1.00 per million".to_string(),
                price::SFN_EXPRESS_REQUEST,
            ),
            Line::new(
                "Step Functions Express duration",
                format!(
                    "{} s × {} MB = {} GB-s × $0.00001667",
                    num(secs, 1),
                    self.express_mb,
                    num(gb_s, 4)
                ),
                gb_s * price::SFN_EXPRESS_GB_S,
            ),
        ];
        lines.extend(self.lambda_cost());
        Cost {
            name: "Step Functions Express + Lambda",
            per_job: lines,
            at_rest: vec![],
        }
    }
}

// ------------------------------------------------------------------- certflow ----

/// How many DynamoDB units one call of each operation consumes, as assumed by the
/// report (the benchmarks count calls, not units).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Units {
    pub wru: f64,
    pub rru: f64,
}

/// The assumption behind each DynamoDB operation's units, for the report's text.
pub const DDB_UNITS: &[(&str, Units, &str)] = &[
    (
        "TransactWriteItems",
        Units { wru: 18.0, rru: 0.0 },
        "the job record (≤ 2 KB, written transactionally: 2 × 2 WRU) and its two index copies (`ByStatus` re-keyed: 2 × 2 WRU; `ByCertificateArn`: 2 WRU), and the task's history items and entries (≤ 1 KB each, transactional: 2 WRU each; an export job to one server writes 7 history items and 1 entry in its 2 commits: 4 a commit, 8 WRU)",
    ),
    (
        "UpdateItem",
        Units { wru: 6.0, rru: 0.0 },
        "a 2 KB item and its two index copies (leases; inventory rows are smaller)",
    ),
    (
        "PutItem",
        Units { wru: 6.0, rru: 0.0 },
        "as `UpdateItem`",
    ),
    (
        "DeleteItem",
        Units { wru: 6.0, rru: 0.0 },
        "as `UpdateItem`",
    ),
    (
        "BatchWriteItem",
        Units { wru: 2.0, rru: 0.0 },
        "one server entry (≤ 1 KB) and one index copy per call on one server",
    ),
    (
        "GetItem",
        Units { wru: 0.0, rru: 1.0 },
        "strongly consistent, ≤ 4 KB",
    ),
    (
        "Query",
        Units { wru: 0.0, rru: 1.0 },
        "≤ 4 KB read, strongly consistent",
    ),
    (
        "BatchGetItem",
        Units { wru: 0.0, rru: 1.0 },
        "≤ 4 KB",
    ),
    (
        "Scan",
        Units { wru: 0.0, rru: 1.0 },
        "≤ 4 KB",
    ),
];

pub fn ddb_units(op: &str) -> Units {
    DDB_UNITS
        .iter()
        .find(|(name, _, _)| *name == op)
        .map(|(_, u, _)| *u)
        .unwrap_or(Units { wru: 0.0, rru: 0.0 })
}

/// certflow's deployment as the cost model sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Certflow {
    /// vCPU and memory (GB) of one task.
    pub task_vcpu: f64,
    pub task_gb: f64,
    /// At rest, per month: the KMS key ($1) and the scaling alarms (2 × 6 metrics ×
    /// $0.10), tables, logs and image (< $0.05): README's "about $2.20".
    pub at_rest_month: f64,
    /// Bursts of work a month, each keeping a task up `burst_minutes` (scale-in waits
    /// for 15 quiet minutes).
    pub bursts_per_month: f64,
    pub burst_minutes: f64,
    /// Long polls of an idle running task per minute (3 queues, 20 s waits).
    pub idle_receives_per_min: f64,
    /// The producer's `SendMessage` to the intake queue (not made by the worker).
    pub producer_sends: f64,
}

impl Default for Certflow {
    fn default() -> Self {
        Certflow {
            task_vcpu: 0.25,
            task_gb: 0.5,
            at_rest_month: 2.20,
            bursts_per_month: 30.0,
            burst_minutes: 20.0,
            idle_receives_per_min: 9.0,
            producer_sends: 1.0,
        }
    }
}

impl Certflow {
    pub fn task_hour(&self) -> f64 {
        self.task_vcpu * price::FARGATE_VCPU_HOUR + self.task_gb * price::FARGATE_GB_HOUR
    }

    /// certflow's cost per job from the calls one export job makes (`export`), and its
    /// fixed monthly cost.
    pub fn cost(&self, export: &Export) -> Cost {
        let mut sqs = self.producer_sends;
        let mut wru = 0.0;
        let mut rru = 0.0;
        let mut has_receives = false;
        for (k, v) in &export.calls_per_job {
            let (service, op) = split_call(k);
            match service.as_str() {
                "SQS" => {
                    sqs += v;
                    has_receives |= op == "ReceiveMessage";
                }
                "DynamoDB" => {
                    let u = ddb_units(op);
                    wru += v * u.wru;
                    rru += v * u.rru;
                }
                _ => {}
            }
        }
        if !has_receives {
            sqs += export.receives_per_job;
        }
        let cpu_s = export.worker_cpu_ms_per_job / 1000.0;
        let task_s = cpu_s / self.task_vcpu;
        let per_job = vec![
            Line::new(
                "SQS requests",
                format!(
                    "{} (the worker's, receives included, + {} producer send) × $0.40 per million",
                    num(sqs, 2),
                    self.producer_sends
                ),
                sqs * price::SQS_REQUEST,
            ),
            Line::new(
                "DynamoDB writes",
                format!("{} WRU × $0.625 per million", num(wru, 1)),
                wru * price::DDB_WRU,
            ),
            Line::new(
                "DynamoDB reads",
                format!("{} RRU × $0.125 per million", num(rru, 1)),
                rru * price::DDB_RRU,
            ),
            Line::new(
                "Fargate compute",
                format!(
                    "{} ms CPU ÷ {} vCPU = {} task-ms × ${}/task-hour",
                    num(export.worker_cpu_ms_per_job, 2),
                    self.task_vcpu,
                    num(task_s * 1000.0, 2),
                    num(self.task_hour(), 7)
                ),
                task_s / 3600.0 * self.task_hour(),
            ),
        ];
        let burst_hours = self.bursts_per_month * self.burst_minutes / 60.0;
        let idle_receives = self.bursts_per_month * self.burst_minutes * self.idle_receives_per_min;
        let at_rest = vec![
            Line::new(
                "at rest (KMS key, scaling alarms, storage)",
                "README: $1.00 + $1.20 + < $0.05, no task at rest".to_string(),
                self.at_rest_month,
            ),
            Line::new(
                "task kept up after bursts",
                format!(
                    "{} bursts × {} min = {} task-hours × ${}",
                    self.bursts_per_month,
                    self.burst_minutes,
                    num(burst_hours, 1),
                    num(self.task_hour(), 7)
                ),
                burst_hours * self.task_hour(),
            ),
            Line::new(
                "idle long polls while up",
                format!(
                    "{} bursts × {} min × {} receives = {} requests × $0.40 per million",
                    self.bursts_per_month,
                    self.burst_minutes,
                    self.idle_receives_per_min,
                    idle_receives
                ),
                idle_receives * price::SQS_REQUEST,
            ),
        ];
        Cost {
            name: "certflow",
            per_job,
            at_rest,
        }
    }
}

// ----------------------------------------------------------------------- cost ----

/// One line of a cost breakdown.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub item: &'static str,
    pub arithmetic: String,
    pub dollars: f64,
}

impl Line {
    fn new(item: &'static str, arithmetic: String, dollars: f64) -> Line {
        Line {
            item,
            arithmetic,
            dollars,
        }
    }
}

/// A design's cost: what each job adds, and what a month costs with no job.
#[derive(Debug, Clone)]
pub struct Cost {
    pub name: &'static str,
    pub per_job: Vec<Line>,
    pub at_rest: Vec<Line>,
}

impl Cost {
    pub fn per_job(&self) -> f64 {
        self.per_job.iter().map(|l| l.dollars).sum()
    }

    pub fn per_million(&self) -> f64 {
        self.per_job() * 1e6
    }

    /// A month with no job (for certflow, its bursts are counted only once there is work).
    pub fn at_rest(&self) -> f64 {
        self.at_rest.first().map(|l| l.dollars).unwrap_or(0.0)
    }

    /// A month of `jobs` jobs.
    pub fn month(&self, jobs: f64) -> f64 {
        let fixed: f64 = self.at_rest.iter().map(|l| l.dollars).sum();
        fixed + jobs * self.per_job()
    }
}

/// `x` with `decimals` decimals.
pub fn num(x: f64, decimals: usize) -> String {
    format!("{x:.decimals$}")
}
