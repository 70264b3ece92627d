//! `docs/benchmarks.md` and its plots, from one run's results.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use super::data::{by_service, split_call, Export, Inputs, StormRun};
use super::model::{self, num, Certflow, Cost, Reference, DDB_UNITS, PRICES_DATE, VOLUMES};
use super::plots::{self, CERTFLOW, EXPRESS, GREY, STANDARD};
use plotters::chart::SeriesLabelPosition;

/// The plots, by file name (in `docs/img/`).
pub const CALLS_PNG: &str = "calls-per-job.png";
pub const COST_PNG: &str = "cost-per-month.png";
pub const AFTER_SUCCESS_PNG: &str = "ssm-success-to-succeeded.png";
pub const STORM_THROUGHPUT_PNG: &str = "storm-throughput.png";
pub const STORM_LATENCY_PNG: &str = "storm-latency.png";

/// Issue 15's targets.
pub const TARGET_CALLS: f64 = 16.0;
pub const TARGET_WORKER_CPU_MS: f64 = 5.0;
pub const TARGET_ENGINE_CPU_MS: f64 = 2.0;
pub const TARGET_IDLE_MS_PER_S: f64 = 1.0;
pub const TARGET_EVENT_WAKE_MS: f64 = 1000.0;

/// A run is saturated when it completes less than this share of what is offered.
pub const SATURATED_BELOW: f64 = 0.9;

/// A markdown table; columns whose every cell is a figure are right-aligned.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| {} |", headers.join(" | "));
    let numeric = |col: usize| {
        col > 0
            && rows.iter().all(|r| {
                r.get(col).is_none_or(|c| {
                    let c = c.trim_start_matches('*');
                    c.is_empty()
                        || c.starts_with(|ch: char| ch.is_ascii_digit() || "$–-<≤".contains(ch))
                })
            })
    };
    let _ = writeln!(
        s,
        "|{}",
        (0..headers.len())
            .map(|i| if numeric(i) { "---:|" } else { "---|" })
            .collect::<String>()
    );
    for r in rows {
        let _ = writeln!(s, "| {} |", r.join(" | "));
    }
    s
}

/// Dollars: cents for a dollar or more, four significant figures below.
pub fn money(x: f64) -> String {
    if x >= 1000.0 {
        let whole = format!("{:.0}", x);
        let mut out = String::new();
        for (i, c) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("${out}")
    } else if x >= 1.0 || x == 0.0 {
        format!("${x:.2}")
    } else {
        let digits = (-(x.log10().floor()) as usize + 3).min(10);
        format!("${x:.digits$}")
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**missed**"
    }
}

/// The first run that completes less than [`SATURATED_BELOW`] of its offered rate.
pub fn saturation(runs: &[StormRun]) -> Option<&StormRun> {
    sorted(runs)
        .into_iter()
        .find(|r| r.completed_per_s < SATURATED_BELOW * r.offered_per_min / 60.0)
}

/// The run that completed the most jobs per second.
pub fn busiest(runs: &[StormRun]) -> Option<&StormRun> {
    runs.iter()
        .max_by(|a, b| a.completed_per_s.total_cmp(&b.completed_per_s))
}

fn sorted(runs: &[StormRun]) -> Vec<&StormRun> {
    let mut v: Vec<&StormRun> = runs.iter().collect();
    v.sort_by(|a, b| a.offered_per_min.total_cmp(&b.offered_per_min));
    v
}

/// How many renewals one 0.25 vCPU task handles per minute, and what limits it.
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    /// jobs/s per vCPU × 0.25 × 60, at the storm's busiest run: what the CPU allows.
    pub cpu_bound_per_min: f64,
    pub jobs_per_s_per_vcpu: f64,
    /// One worker's ceiling per minute where the storm saturated (completed jobs/s ÷
    /// workers × 60), if it did.
    pub ceiling_per_min: Option<f64>,
}

impl Capacity {
    /// The lower of the two.
    pub fn per_min(&self) -> f64 {
        self.ceiling_per_min
            .map_or(self.cpu_bound_per_min, |c| c.min(self.cpu_bound_per_min))
    }

    pub fn cpu_bound(&self) -> bool {
        self.per_min() == self.cpu_bound_per_min
    }
}

pub fn capacity(storm: &super::data::Storm) -> Option<Capacity> {
    let busiest = busiest(&storm.runs)?;
    let ceiling = saturation(&storm.runs).map(|_| {
        let best = busiest.completed_per_s;
        best / f64::from(storm.workers.max(1)) * 60.0
    });
    Some(Capacity {
        cpu_bound_per_min: busiest.jobs_per_s_per_vcpu * 0.25 * 60.0,
        jobs_per_s_per_vcpu: busiest.jobs_per_s_per_vcpu,
        ceiling_per_min: ceiling,
    })
}

/// Renewals one 0.25 vCPU task handles per minute (see [`Capacity`]).
#[cfg(test)]
pub fn renewals_per_task_minute(storm: &super::data::Storm) -> Option<f64> {
    capacity(storm).map(|c| c.per_min())
}

/// The services in the calls chart, in this order, then any other.
const SERVICE_ORDER: &[&str] = &[
    "API Gateway",
    "Step Functions",
    "Lambda",
    "SQS",
    "DynamoDB",
    "ACM",
    "Secrets Manager",
    "SSM",
];

/// certflow's billable calls per job by service: the worker's (receives included) and
/// the producer's send to the intake queue.
pub fn certflow_by_service(export: &Export, cf: &Certflow) -> BTreeMap<String, f64> {
    let mut m = by_service(&export.calls_per_job);
    let has_receives = export
        .calls_per_job
        .keys()
        .any(|k| split_call(k).1 == "ReceiveMessage");
    let sqs = m.entry("SQS".to_string()).or_insert(0.0);
    *sqs += cf.producer_sends;
    if !has_receives {
        *sqs += export.receives_per_job;
    }
    m
}

fn service_rows(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> Vec<String> {
    let all: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut out: Vec<String> = SERVICE_ORDER
        .iter()
        .filter(|s| all.iter().any(|k| k.as_str() == **s))
        .map(|s| s.to_string())
        .collect();
    for k in all {
        if !out.contains(k) {
            out.push(k.clone());
        }
    }
    out
}

/// Draws every plot into `img_dir`.
pub fn plots(inputs: &Inputs, img_dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(img_dir).map_err(|e| format!("{}: {e}", img_dir.display()))?;
    let cf = Certflow::default();
    let reference = Reference::default();

    // Calls per job by service.
    let ours = certflow_by_service(&inputs.export, &cf);
    let theirs = reference.by_service();
    let services = service_rows(&ours, &theirs);
    let get = |m: &BTreeMap<String, f64>, s: &String| m.get(s).copied().unwrap_or(0.0);
    plots::grouped_bars(
        &img_dir.join(CALLS_PNG),
        "Billable calls per export job (1 server), by service",
        "calls, transitions or invocations per job",
        &services,
        &[
            (
                "certflow (measured)",
                CERTFLOW,
                services.iter().map(|s| get(&ours, s)).collect(),
            ),
            (
                "reference (counted from its definition)",
                STANDARD,
                services.iter().map(|s| get(&theirs, s)).collect(),
            ),
        ],
        SeriesLabelPosition::UpperRight,
    )?;

    // Cost per month.
    let costs = [
        cf.cost(&inputs.export),
        reference.standard(),
        reference.express(),
    ];
    let colors = [CERTFLOW, STANDARD, EXPRESS];
    let series: Vec<(&str, _, Vec<f64>)> = costs
        .iter()
        .zip(colors)
        .map(|(c, color)| (c.name, color, VOLUMES.iter().map(|v| c.month(*v)).collect()))
        .collect();
    plots::log_lines(
        &img_dir.join(COST_PNG),
        "Cost per month (us-east-1, on-demand, no free tier)",
        "export jobs a month (log)",
        "US dollars a month (log)",
        &VOLUMES,
        &series,
        |y| format!("${y:.2}"),
    )?;

    // After SSM success.
    let a = &inputs.storm.after_success_ms;
    plots::grouped_bars(
        &img_dir.join(AFTER_SUCCESS_PNG),
        "Time from SSM command success to job SUCCEEDED",
        "milliseconds",
        &["p50".to_string(), "p99".to_string()],
        &[
            (
                "woken by the status event",
                CERTFLOW,
                vec![a.events.p50, a.events.p99],
            ),
            ("polling only", GREY, vec![a.polls.p50, a.polls.p99]),
        ],
        SeriesLabelPosition::UpperLeft,
    )?;

    // Storm.
    let runs = sorted(&inputs.storm.runs);
    let offered: Vec<(f64, f64)> = runs
        .iter()
        .map(|r| (r.offered_per_min, r.offered_per_min / 60.0))
        .collect();
    let completed: Vec<(f64, f64)> = runs
        .iter()
        .map(|r| (r.offered_per_min, r.completed_per_s))
        .collect();
    let mark = saturation(&inputs.storm.runs).map(|r| {
        (
            r.offered_per_min,
            format!(
                "saturated: {} jobs/s at {}/min offered ",
                num(r.completed_per_s, 1),
                plots::si(r.offered_per_min)
            ),
        )
    });
    plots::lines(
        &img_dir.join(STORM_THROUGHPUT_PNG),
        "Renewal storm: completed jobs/s against offered load",
        "offered export jobs per minute",
        "jobs completed per second",
        &[
            ("completed", CERTFLOW, completed, false),
            ("offered (all kept up)", GREY, offered, true),
        ],
        mark.clone(),
        None,
    )?;
    let p50: Vec<(f64, f64)> = runs
        .iter()
        .map(|r| (r.offered_per_min, r.p50_ms / 1000.0))
        .collect();
    let p99: Vec<(f64, f64)> = runs
        .iter()
        .map(|r| (r.offered_per_min, r.p99_ms / 1000.0))
        .collect();
    plots::lines(
        &img_dir.join(STORM_LATENCY_PNG),
        "Renewal storm: request to SUCCEEDED",
        "offered export jobs per minute",
        "seconds",
        &[("p99", STANDARD, p99, false), ("p50", CERTFLOW, p50, false)],
        mark,
        None,
    )?;
    Ok(())
}

/// The markdown of `docs/benchmarks.md`; images are linked as `<img_rel>/<file>`.
pub fn markdown(inputs: &Inputs, img_rel: &str) -> String {
    let run = &inputs.run;
    let storm = &inputs.storm;
    let export = &inputs.export;
    let cf = Certflow::default();
    let reference = Reference::default();
    let img = |f: &str| format!("{img_rel}/{f}");
    let mut md = String::new();
    let w = &mut md;

    let _ = writeln!(w, "# Benchmarks\n");
    let _ = writeln!(
        w,
        "Earlier hand-written measurements: [`benchmarks-history.md`](benchmarks-history.md).\n"
    );
    let _ = writeln!(
        w,
        "_Generated by `cargo run --release -p certflow-tests --bin report{}` on {}: do not edit by hand; run it again._\n",
        if run.quick { " -- --quick" } else { "" },
        run.date
    );
    if inputs.sample {
        let _ = writeln!(
            w,
            "> **SAMPLE DATA.** This document was rendered from the hand-written samples in \
             `tests/src/report/fixtures/`, not from measurements. Run the command above.\n"
        );
    }
    if run.quick {
        let _ = writeln!(
            w,
            "> **Quick run** (`--quick`): small sizes, for checking the report itself; \
             the figures are noisier than a full run's.\n"
        );
    }

    // The capacity sentence, prominently.
    if let Some(c) = capacity(storm) {
        let why = match c.ceiling_per_min {
            Some(ceiling) if !c.cpu_bound() => format!(
                "limited by one worker's throughput, not its CPU: the storm saturated at {} jobs \
                 a minute per worker (its job slots waiting on AWS latency), while its CPU per job \
                 ({} jobs/s per vCPU × 0.25 × 60) would allow {}",
                thousands(ceiling),
                num(c.jobs_per_s_per_vcpu, 1),
                thousands(c.cpu_bound_per_min)
            ),
            Some(ceiling) => format!(
                "limited by CPU: {} jobs/s per vCPU × 0.25 × 60 at the storm's busiest run, \
                 below the {} a minute one worker reached where the storm saturated",
                num(c.jobs_per_s_per_vcpu, 1),
                thousands(ceiling)
            ),
            None => format!(
                "{} jobs/s per vCPU × 0.25 × 60 at the storm's busiest run, which did not \
                 saturate",
                num(c.jobs_per_s_per_vcpu, 1)
            ),
        };
        let _ = writeln!(
            w,
            "**One 0.25 vCPU task handles about {} renewals a minute** ({why}; in-memory \
             backends, AWS's typical latencies injected).\n",
            thousands(c.per_min()),
        );
    }

    // Machine and commands.
    let _ = writeln!(w, "## How these figures were made\n");
    let machine = vec![
        vec!["date".to_string(), run.date.clone()],
        vec!["cores".to_string(), run.cores.to_string()],
        vec!["CPU".to_string(), run.cpu_model.clone()],
        vec![
            "load average at start".to_string(),
            if run.load_at_start.is_empty() {
                "unknown".to_string()
            } else {
                run.load_at_start.clone()
            },
        ],
        vec![
            "emulator".to_string(),
            match &run.moto_version {
                Some(v) => format!("moto {v} on loopback, a fresh one per `export_bench` run"),
                None => "moto (version not found)".to_string(),
            },
        ],
        vec![
            "build".to_string(),
            format!(
                "release (benchmarks); the export worker: {}",
                if export.worker_build.is_empty() {
                    "unknown"
                } else {
                    &export.worker_build
                }
            ),
        ],
    ];
    w.push_str(&table(&["", ""], &machine));
    if !run.commands.is_empty() {
        let _ = writeln!(w, "\nThe benchmarks the report ran:\n\n```sh");
        for c in &run.commands {
            let _ = writeln!(w, "{c}");
        }
        let _ = writeln!(w, "```");
    }
    let _ = writeln!(
        w,
        "\n`--from DIR` renders this page again from a run's saved JSON without running anything \
         (the report prints where it saved them).\n"
    );

    // Targets.
    let _ = writeln!(w, "## Against issue 15's targets\n");
    let calls = export.calls_with_receives();
    let a = &storm.after_success_ms;
    let rows = vec![
        vec![
            format!(
                "AWS calls per export job, receives included (1 server, `export_bench {}`)",
                export.jobs
            ),
            num(calls, 2),
            format!("≤ {}", TARGET_CALLS),
            met(calls <= TARGET_CALLS).to_string(),
        ],
        vec![
            format!(
                "worker CPU per export job, all its calls included (keep-alive connections; {}; {}{}){}{}{}",
                match export.worker_runtime_threads {
                    Some(1) => "one runtime thread".to_string(),
                    Some(n) => format!("{n} runtime threads"),
                    None => "a runtime thread per CPU of this machine".to_string(),
                },
                match export.worker_log.as_deref() {
                    Some(level) => format!("logging at `{level}` as JSON lines"),
                    None => "logging warnings only".to_string(),
                },
                if export.worker_runtime_threads == Some(1)
                    && export.worker_log.as_deref() == Some("info")
                {
                    ", as the stack runs the worker"
                } else {
                    ""
                },
                match (
                    export.sdk_floor_ms_per_call,
                    export.sdk_rested_floor_ms_per_call.zip(export.sdk_floor_rest_ms),
                ) {
                    (Some(floor), Some((rested, rest_ms))) => format!(
                        "; the AWS SDK alone costs {} ms a call back-to-back and {} ms a call after its thread slept {rest_ms} ms, as a lone job's calls mostly come (caches and clock gone cold): {} to {} ms for the job's {} calls",
                        num(floor, 3),
                        num(rested, 3),
                        num(floor * export.calls_per_job_total, 2),
                        num(rested * export.calls_per_job_total, 2),
                        num(export.calls_per_job_total, 2)
                    ),
                    (Some(floor), None) => format!(
                        "; the AWS SDK alone costs {} ms a call, {} ms for the job's {} calls",
                        num(floor, 3),
                        num(floor * export.calls_per_job_total, 2),
                        num(export.calls_per_job_total, 2)
                    ),
                    (None, _) => String::new(),
                },
                match (export.direct_calls_per_job, export.direct_cpu_ms_per_job) {
                    (Some(calls), Some(cpu)) => format!(
                        "; the workflow's {} calls cost a bare client {} ms, so the engine's {} calls and all of certflow's own code take the other {} ms",
                        num(calls, 2),
                        num(cpu, 2),
                        num(export.calls_per_job_total - calls, 2),
                        num(export.worker_cpu_ms_per_job - cpu, 2)
                    ),
                    _ => String::new(),
                },
                match (export.engine_alone_calls_per_job, export.engine_alone_cpu_ms_per_job) {
                    (Some(calls), Some(cpu)) => format!(
                        "; a job whose steps make no call costs the same worker {} ms for its {} calls",
                        num(cpu, 2),
                        num(calls, 2)
                    ),
                    _ => String::new(),
                }
            ),
            format!("{} ms", num(export.worker_cpu_ms_per_job, 2)),
            format!("≤ {} ms", TARGET_WORKER_CPU_MS),
            met(export.worker_cpu_ms_per_job <= TARGET_WORKER_CPU_MS).to_string(),
        ],
        vec![
            "engine's own pure path per job (`storm`: the demo workflow, in-memory backends)"
                .to_string(),
            format!("{} ms", num(storm.engine_path_cpu_ms_per_job, 2)),
            format!("≤ {} ms", TARGET_ENGINE_CPU_MS),
            met(storm.engine_path_cpu_ms_per_job <= TARGET_ENGINE_CPU_MS).to_string(),
        ],
        vec![
            "idle worker CPU".to_string(),
            format!("{} ms per s", num(export.idle_cpu_ms_per_s, 2)),
            format!("< {} ms per s", TARGET_IDLE_MS_PER_S),
            met(export.idle_cpu_ms_per_s < TARGET_IDLE_MS_PER_S).to_string(),
        ],
        {
            // The must-show's clock starts when the event reaches certflow: the storm
            // measures that when it can (older runs: its figure from the command's
            // success, less the median of EventBridge's modelled delivery).
            let (label, after_event) = match storm.after_event_ms.get("events") {
                Some(p) => (
                    format!(
                        "command-status event's arrival on the events queue → SUCCEEDED (p99; from SSM's success, EventBridge's delivery included: {})",
                        ms(a.events.p99)
                    ),
                    p.p99,
                ),
                None => {
                    let delivery = storm
                        .latency_model
                        .get("events delivery")
                        .copied()
                        .unwrap_or(0.0);
                    (
                        format!(
                            "command-status event's arrival → SUCCEEDED (p99): SSM success → SUCCEEDED {}, less EventBridge's delivery modelled at {}",
                            ms(a.events.p99),
                            ms(delivery)
                        ),
                        (a.events.p99 - delivery).max(0.0),
                    )
                }
            };
            vec![
                label,
                ms(after_event),
                format!("≤ {} ms", thousands(TARGET_EVENT_WAKE_MS)),
                met(after_event <= TARGET_EVENT_WAKE_MS).to_string(),
            ]
        },
    ];
    w.push_str(&table(&["figure", "measured", "target", ""], &rows));
    let _ = writeln!(
        w,
        "\nWhere the worker's CPU goes, what made an idle worker busy, and the AWS SDK's own floor per call: [`benchmarks-profile.md`](benchmarks-profile.md)."
    );

    // Calls per job.
    let _ = writeln!(w, "\n## Calls per job: certflow and the reference design\n");
    let _ = writeln!(w, "![calls per job by service]({})\n", img(CALLS_PNG));
    let ours = certflow_by_service(export, &cf);
    let theirs = reference.by_service();
    let rows: Vec<Vec<String>> = service_rows(&ours, &theirs)
        .iter()
        .map(|s| {
            vec![
                s.clone(),
                ours.get(s)
                    .map(|v| num(*v, 2))
                    .unwrap_or_else(|| "–".into()),
                theirs
                    .get(s)
                    .map(|v| num(*v, 2))
                    .unwrap_or_else(|| "–".into()),
            ]
        })
        .collect();
    let mut rows = rows;
    rows.push(vec![
        "**total**".to_string(),
        format!("**{}**", num(ours.values().sum(), 2)),
        format!("**{}**", num(theirs.values().sum(), 2)),
    ]);
    w.push_str(&table(
        &["service", "certflow (measured)", "reference (counted)"],
        &rows,
    ));
    let _ = writeln!(
        w,
        "\ncertflow: the worker's calls per job as `export_bench {}` counted them through the fault \
         proxy ({} jobs one at a time, {} server), `ReceiveMessage` included, plus the producer's \
         one `SendMessage` to the intake queue (the bench sends it outside the proxy; the reference's \
         counterpart is its API Gateway request). By operation:\n",
        export.jobs, export.jobs, export.servers
    );
    let rows: Vec<Vec<String>> = export
        .calls_per_job
        .iter()
        .map(|(k, v)| {
            let (s, op) = split_call(k);
            vec![s, format!("`{op}`"), num(*v, 2)]
        })
        .collect();
    w.push_str(&table(&["service", "operation", "per job"], &rows));
    let _ = writeln!(
        w,
        "\nThe reference, counted from its definition (`../shared/DESIGN.md` §1) for one export \
         and install on one server. Assumed: API Gateway starts the execution directly (one REST \
         request, no Lambda in front); each of the four steps is a Task state invoking its own \
         Lambda; the wait loop is a 15 s Wait state, a status-check Lambda and a Choice, run \
         {} (the install is done by the first check; each extra poll adds 3 transitions, \
         1 Lambda invocation and 1 `GetCommandInvocation`); Step Functions bills one transition \
         per state entered; a first export (`CreateSecret`; a renewal would `PutSecretValue`). \
         Not counted on either side: the server's own `GetSecretValue` when it installs, and \
         CloudWatch Logs. The renewal path (a full table `Scan` per ACM event) is not counted either.\n",
        times(reference.polls)
    );
    let rows: Vec<Vec<String>> = reference
        .states()
        .iter()
        .map(|s| {
            vec![
                format!("`{}`", s.name),
                s.kind.to_string(),
                if s.lambda_calls.is_empty() {
                    "–".to_string()
                } else {
                    s.lambda_calls
                        .iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ]
        })
        .collect();
    w.push_str(&table(
        &["state", "type", "AWS calls its Lambda makes"],
        &rows,
    ));
    let _ = writeln!(
        w,
        "\n{} state transitions, {} Lambda invocations, 1 API Gateway request.\n",
        num(reference.transitions(), 0),
        num(reference.lambda_invocations(), 0)
    );

    // Cost.
    let costs = [cf.cost(export), reference.standard(), reference.express()];
    let _ = writeln!(w, "## What it costs\n");
    let _ = writeln!(w, "![cost per month]({})\n", img(COST_PNG));
    let mut rows = vec![
        std::iter::once("per million jobs (variable part)".to_string())
            .chain(costs.iter().map(|c| money(c.per_million())))
            .collect::<Vec<_>>(),
        std::iter::once("a month at rest (no job)".to_string())
            .chain(costs.iter().map(|c| money(c.at_rest())))
            .collect(),
    ];
    for v in VOLUMES {
        rows.push(
            std::iter::once(format!("a month of {} jobs", thousands(v)))
                .chain(costs.iter().map(|c| money(c.month(v))))
                .collect(),
        );
    }
    let headers: Vec<&str> = std::iter::once("")
        .chain(costs.iter().map(|c| c.name))
        .collect();
    w.push_str(&table(&headers, &rows));
    let _ = writeln!(w, "\n{}", cost_summary(&costs));
    let _ = writeln!(
        w,
        "\nPublic us-east-1 on-demand prices as read on {PRICES_DATE}, **no free tier counted** \
         (SQS's first million requests, Lambda's million requests and 400,000 GB-s, Step Functions' \
         4,000 transitions a month would make the small volumes cheaper for every design). Only \
         what differs between the designs is priced: both export the same certificate (ACM's \
         own charge), keep a secret per target ($0.40 a month each), make the same Secrets Manager \
         and KMS calls, and SSM Run Command is free. Pages: {}.\n",
        model::PRICE_PAGES
            .iter()
            .map(|(name, url)| format!("[{name}]({url})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for c in &costs {
        let _ = writeln!(w, "**{}**, per job:\n", c.name);
        let mut rows: Vec<Vec<String>> = c
            .per_job
            .iter()
            .map(|l| {
                vec![
                    l.item.to_string(),
                    l.arithmetic.clone(),
                    money(l.dollars * 1e6),
                ]
            })
            .collect();
        rows.push(vec![
            "**total**".to_string(),
            String::new(),
            format!("**{}**", money(c.per_million())),
        ]);
        w.push_str(&table(&["item", "arithmetic", "per million jobs"], &rows));
        if !c.at_rest.is_empty() {
            let _ = writeln!(w, "\nand per month:\n");
            let rows: Vec<Vec<String>> = c
                .at_rest
                .iter()
                .map(|l| vec![l.item.to_string(), l.arithmetic.clone(), money(l.dollars)])
                .collect();
            w.push_str(&table(&["item", "arithmetic", "per month"], &rows));
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(
        w,
        "Assumptions. **certflow**: one 0.25 vCPU / 0.5 GB x86 Fargate task (${}/hour) for the CPU \
         the worker measured per job (`export_bench`, {} ms) — the compute a job actually needs; \
         with no task at rest, each burst of work keeps a task up about {} minutes (scale-in waits \
         for 15 quiet minutes), counted as {} bursts a month (one a day) once there is any work. \
         DynamoDB units per call (the benchmarks count calls, not units; a transactional write \
         costs 2 WRU per item per KB):\n",
        num(cf.task_hour(), 7),
        num(export.worker_cpu_ms_per_job, 2),
        cf.burst_minutes,
        cf.bursts_per_month
    );
    let rows: Vec<Vec<String>> = DDB_UNITS
        .iter()
        .map(|(op, u, why)| {
            vec![
                format!("`{op}`"),
                if u.wru > 0.0 {
                    format!("{} WRU", num(u.wru, 1))
                } else {
                    format!("{} RRU", num(u.rru, 1))
                },
                why.to_string(),
            ]
        })
        .collect();
    w.push_str(&table(&["operation", "units per call", "why"], &rows));
    let _ = writeln!(
        w,
        "\n**Reference**: every Lambda runs {} ms billed at {} MB (Python with boto3 calls; \
         cold starts not counted); the Express execution lasts as long as it waits ({} s: the \
         Wait state{} and the Lambdas) and is billed at {} MB; API Gateway REST in front of both; \
         nothing at rest (no KMS key of its own, on-demand inventory table). Express is the \
         cheapest line but not the same service: an execution lasts at most 5 minutes (a staged \
         rollout on many servers, or a slow install, outlasts it), runs at-least-once, and keeps \
         no execution history of its own (CloudWatch Logs, priced apart).\n",
        num(reference.lambda_ms, 0),
        num(reference.lambda_mb, 0),
        num(reference.execution_s(), 1),
        if reference.polls == 1 { "" } else { "s" },
        num(reference.express_mb, 0)
    );

    // After SSM success.
    let _ = writeln!(w, "## Time from SSM success to job SUCCEEDED\n");
    let _ = writeln!(
        w,
        "![SSM success to SUCCEEDED]({})\n",
        img(AFTER_SUCCESS_PNG)
    );
    let rows = vec![
        vec![
            "woken by the command-status event".to_string(),
            ms(a.events.p50),
            ms(a.events.p99),
        ],
        vec![
            "polling only (2 s growing to 15 s)".to_string(),
            ms(a.polls.p50),
            ms(a.polls.p99),
        ],
    ];
    w.push_str(&table(&["", "p50", "p99"], &rows));
    let _ = writeln!(
        w,
        "\nFrom `storm` (in-memory backends): the time from the moment the simulated install \
         command succeeds to the job's SUCCEEDED. The reference waits a fixed 15 s before each check.\n"
    );

    // Storm.
    let _ = writeln!(w, "## Renewal storm: capacity\n");
    let _ = writeln!(
        w,
        "`storm` submits export jobs at a fixed rate to {} on the in-memory backends (the \
         storm itself used {} vCPU on average), with every AWS call delayed by a typical AWS \
         latency (`events delivery`: EventBridge's delivery of SSM's status event):\n",
        if storm.workers == 1 {
            "1 worker".to_string()
        } else {
            format!("{} workers", storm.workers)
        },
        num(storm.vcpus, 2)
    );
    let rows: Vec<Vec<String>> = storm
        .latency_model
        .iter()
        .map(|(k, v)| {
            let (s, op) = split_call(k);
            vec![s, format!("`{op}`"), format!("{} ms", num(*v, 1))]
        })
        .collect();
    w.push_str(&table(&["service", "operation", "latency"], &rows));
    let _ = writeln!(w, "\n![storm throughput]({})\n", img(STORM_THROUGHPUT_PNG));
    let _ = writeln!(w, "![storm latency]({})\n", img(STORM_LATENCY_PNG));
    // The first run is the storm itself; the others are the saturation curve's.
    let mut indexed: Vec<(usize, &StormRun)> = storm.runs.iter().enumerate().collect();
    indexed.sort_by(|a, b| a.1.offered_per_min.total_cmp(&b.1.offered_per_min));
    let rows: Vec<Vec<String>> = indexed
        .iter()
        .map(|&(i, r)| {
            vec![
                if i == 0 { "storm" } else { "curve" }.to_string(),
                thousands(r.offered_per_min),
                thousands(r.jobs as f64),
                num(r.completed_per_s, 1),
                ms(r.p50_ms),
                ms(r.p99_ms),
                format!("{} ms", num(r.cpu_ms_per_job, 2)),
                num(r.jobs_per_s_per_vcpu, 1),
            ]
        })
        .collect();
    w.push_str(&table(
        &[
            "run",
            "offered jobs/min",
            "jobs",
            "completed jobs/s",
            "p50 request → SUCCEEDED",
            "p99",
            "CPU per job",
            "jobs/s per vCPU",
        ],
        &rows,
    ));
    let _ = writeln!(w);
    match saturation(&storm.runs) {
        Some(r) => {
            let _ = writeln!(
                w,
                "It saturates at about **{} jobs/s** ({} jobs a minute): offered {} a minute, it \
                 completed {} jobs/s, less than {:.0} % of the offered rate, and its p99 grew to {}.\n",
                num(r.completed_per_s, 1),
                thousands(r.completed_per_s * 60.0),
                thousands(r.offered_per_min),
                num(r.completed_per_s, 1),
                SATURATED_BELOW * 100.0,
                ms(r.p99_ms)
            );
        }
        None => {
            let top = sorted(&storm.runs)
                .last()
                .map(|r| thousands(r.offered_per_min))
                .unwrap_or_default();
            let _ = writeln!(
                w,
                "It did not saturate up to the highest offered rate ({top} jobs a minute): every \
                 run completed at least {:.0} % of what was offered.\n",
                SATURATED_BELOW * 100.0
            );
        }
    }
    if !storm.calls_per_job.is_empty() {
        let total: f64 = storm.calls_per_job.values().sum();
        let _ = writeln!(
            w,
            "Calls per storm job (in-memory AWS, {} in all): {}.\n",
            num(total, 2),
            storm
                .calls_per_job
                .iter()
                .map(|(k, v)| {
                    let (service, op) = split_call(k);
                    format!("{service} `{op}` {}", num(*v, 2))
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    // export_bench runs.
    let _ = writeln!(w, "## Export jobs on the emulator (`export_bench`)\n");
    let mut runs = vec![export];
    if let Some(c) = &inputs.export_concurrent {
        runs.push(c);
    }
    let header: Vec<String> = std::iter::once(String::new())
        .chain(runs.iter().map(|e| {
            format!(
                "{} jobs, {} at a time, {} server{}",
                e.jobs,
                e.concurrent,
                e.servers,
                if e.servers == 1 { "" } else { "s" }
            )
        }))
        .collect();
    let field = |name: &str, f: &dyn Fn(&Export) -> String| -> Vec<String> {
        std::iter::once(name.to_string())
            .chain(runs.iter().map(|&e| f(e)))
            .collect()
    };
    let rows = vec![
        field("AWS calls per job, receives included", &|e| {
            num(e.calls_with_receives(), 2)
        }),
        field("of which `ReceiveMessage`", &|e| num(e.receives_per_job, 2)),
        field("worker CPU per job", &|e| {
            format!("{} ms", num(e.worker_cpu_ms_per_job, 2))
        }),
        field("idle worker CPU", &|e| {
            format!("{} ms per s", num(e.idle_cpu_ms_per_s, 2))
        }),
        field("client connections opened", &|e| {
            e.client_connections.to_string()
        }),
        field("wall, enqueue → SUCCEEDED, p50", &|e| ms(e.wall_ms_p50)),
        field("p99", &|e| ms(e.wall_ms_p99)),
        field("jobs/s", &|e| num(e.jobs_per_s, 2)),
        field("worker build", &|e| e.worker_build.clone()),
        field("worker runtime threads", &|e| {
            e.worker_runtime_threads
                .map_or("one per CPU".to_string(), |n| n.to_string())
        }),
        field("worker log", &|e| {
            e.worker_log
                .clone()
                .map_or("warn".to_string(), |l| format!("{l}, JSON"))
        }),
        field("CPU read from", &|e| {
            if e.worker_cpu_exact {
                "ns".to_string()
            } else {
                "10 ms ticks".to_string()
            }
        }),
    ];
    let header_refs: Vec<&str> = header.iter().map(|s| s.as_str()).collect();
    w.push_str(&table(&header_refs, &rows));
    let _ = writeln!(
        w,
        "\nThe worker's calls go through the fault proxy (counting only), which keeps its \
         connections to the worker open, so CPU per job is the engine's and the SDK's, not the \
         emulator's connection handling. Wall times are the emulator's speed on a shared \
         2-core machine, not AWS's.\n"
    );
    md
}

/// One sentence per volume comparing certflow (the first cost) with the others, and its
/// largest per-job item.
pub fn cost_summary(costs: &[Cost]) -> String {
    let Some((ours, others)) = costs.split_first() else {
        return String::new();
    };
    let mut s = String::new();
    for v in VOLUMES {
        let a = ours.month(v);
        let parts: Vec<String> = others
            .iter()
            .map(|o| {
                let b = o.month(v);
                let cmp = if b >= a {
                    format!("{}× less than", num_ratio(b / a))
                } else {
                    format!("{}× more than", num_ratio(a / b))
                };
                format!("{cmp} {} ({})", o.name, money(b))
            })
            .collect();
        let _ = write!(
            s,
            "At {} jobs a month certflow costs {}: {}. ",
            thousands(v),
            money(a),
            parts.join("; ")
        );
    }
    let total = ours.per_job();
    if let Some(top) = ours
        .per_job
        .iter()
        .max_by(|x, y| x.dollars.total_cmp(&y.dollars))
    {
        if total > 0.0 {
            let _ = write!(
                s,
                "certflow's largest item per job is {} ({:.0} % of its variable cost).",
                top.item,
                100.0 * top.dollars / total
            );
        }
    }
    s.trim_end().to_string()
}

fn num_ratio(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

fn times(n: u32) -> String {
    match n {
        1 => "once".to_string(),
        2 => "twice".to_string(),
        n => format!("{n} times"),
    }
}

/// Milliseconds: thousands separated from 100 ms up, one decimal below.
pub fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{} ms", thousands(x))
    } else {
        format!("{x:.1} ms")
    }
}

/// 12345.6 → "12,346".
pub fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x);
    let (sign, digits) = match s.strip_prefix('-') {
        Some(d) => ("-", d.to_string()),
        None => ("", s.clone()),
    };
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}
