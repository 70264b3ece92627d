//! The report's rendering and arithmetic, from the hand-written samples in `fixtures/`.

use std::path::{Path, PathBuf};

use super::data::{split_call, Inputs, RunInfo};
use super::model::{Certflow, Reference};
use super::render::{self, money, table, thousands};
use super::run::civil_from_days;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/report/fixtures")
}

fn machine() -> RunInfo {
    RunInfo {
        date: "2026-12-05".into(),
        cores: 2,
        cpu_model: "Sample CPU".into(),
        load_at_start: "0.50 0.40 0.30".into(),
        moto_version: Some("5.2.5".into()),
        quick: false,
        commands: vec!["cargo run --release -p certflow-tests --bin storm -- --json F".into()],
    }
}

fn inputs() -> Inputs {
    Inputs::read_dir(&fixtures(), machine).expect("the sample fixtures parse")
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} != {b}");
}

#[test]
fn the_samples_parse_and_are_marked_as_samples() {
    let i = inputs();
    assert!(i.sample);
    assert_eq!(i.storm.runs.len(), 4);
    assert_eq!(i.export.jobs, 10);
    assert_eq!(i.export_concurrent.as_ref().map(|e| e.concurrent), Some(50));
    assert_eq!(
        i.run,
        machine(),
        "no run.json in fixtures/: the fallback is used"
    );
    // ReceiveMessage is in the map: the total is its sum.
    close(i.export.calls_with_receives(), 18.0);
}

#[test]
fn service_names_are_normalised() {
    assert_eq!(
        split_call("Secrets Manager CreateSecret"),
        ("Secrets Manager".to_string(), "CreateSecret")
    );
    assert_eq!(
        split_call("secretsmanager PutSecretValue"),
        ("Secrets Manager".to_string(), "PutSecretValue")
    );
    assert_eq!(
        split_call("dynamodb Query"),
        ("DynamoDB".to_string(), "Query")
    );
    assert_eq!(split_call("SQS *"), ("SQS".to_string(), "*"));
}

#[test]
fn the_reference_is_counted_from_its_states() {
    let r = Reference::default();
    // Export, StoreInventory, Install, Wait, CheckStatus, Choice, Succeed.
    close(r.transitions(), 7.0);
    close(r.lambda_invocations(), 4.0);
    let s = r.by_service();
    close(s["API Gateway"], 1.0);
    close(s["Step Functions"], 7.0);
    close(s["Lambda"], 4.0);
    close(s["ACM"], 2.0);
    close(s["Secrets Manager"], 1.0);
    close(s["DynamoDB"], 1.0);
    close(s["SSM"], 2.0);
    // A second poll: 3 more transitions, 1 more Lambda and status call, 15 s more.
    let two = Reference {
        polls: 2,
        ..Reference::default()
    };
    close(two.transitions(), 10.0);
    close(two.lambda_invocations(), 5.0);
    close(two.execution_s() - r.execution_s(), 15.2);
}

#[test]
fn reference_costs_match_a_hand_computation() {
    let r = Reference::default();
    // Standard: 7 × $0.000025 + API Gateway $0.0000035 + 4 × $0.0000002
    // + 4 × 0.2 s × 0.125 GB × $0.0000166667 + 1 WRU × $0.000000625.
    let standard = 0.000175 + 0.0000035 + 0.0000008 + 0.1 * 0.0000166667 + 0.000000625;
    close(r.standard().per_job(), standard);
    assert_eq!(money(r.standard().per_million()), "$181.59");
    // Express: $0.000001 + (15 s + 0.8 s) × 64/1024 GB × $0.00001667, and the same
    // Lambdas, API Gateway and inventory write.
    let express = 0.000001
        + 15.8 * 0.0625 * 0.00001667
        + 0.0000035
        + 0.0000008
        + 0.1 * 0.0000166667
        + 0.000000625;
    close(r.express().per_job(), express);
    assert_eq!(money(r.express().per_million()), "$24.05");
    // Nothing at rest.
    close(r.standard().month(0.0), 0.0);
    close(r.express().at_rest(), 0.0);
}

#[test]
fn certflow_cost_matches_a_hand_computation() {
    let i = inputs();
    let c = Certflow::default().cost(&i.export);
    // SQS: Send 1 + Delete 2 + Receive 2, + the producer's send = 6 requests.
    close(c.per_job[0].dollars, 6.0 * 0.40 / 1e6);
    // DynamoDB: 3 transactions × 18 + 2 updates × 6 + 1 batch write × 2 = 68 WRU; 1 query.
    close(c.per_job[1].dollars, 68.0 * 0.625 / 1e6);
    close(c.per_job[2].dollars, 0.125 / 1e6);
    // Fargate: 4.5 ms ÷ 0.25 vCPU = 18 ms of a task at $0.0123425 an hour.
    close(c.per_job[3].dollars, 0.018 / 3600.0 * 0.0123425);
    close(c.per_million(), 45.0867125);
    // A month: $2.20 at rest + 30 bursts × 20 min of a task + their idle long polls.
    close(c.at_rest(), 2.20);
    let fixed = 2.20 + 10.0 * 0.0123425 + 5400.0 * 0.40 / 1e6;
    close(c.month(0.0), fixed);
    close(c.month(1e6), fixed + 45.0867125);
    assert_eq!(money(c.month(1e6)), "$47.41");
}

#[test]
fn markdown_tables_and_numbers() {
    assert_eq!(
        table(&["a", "b"], &[vec!["1".into(), "2".into()]]),
        "| a | b |\n|---|---:|\n| 1 | 2 |\n"
    );
    assert_eq!(money(181.591), "$181.59");
    assert_eq!(money(0.0123425), "$0.01234");
    assert_eq!(money(2400.4), "$2,400");
    assert_eq!(money(0.0), "$0.00");
    assert_eq!(thousands(1_000_000.0), "1,000,000");
    assert_eq!(thousands(999.6), "1,000");
}

#[test]
fn saturation_and_capacity_from_the_storm() {
    let i = inputs();
    // 4,000/min offered = 66.7/s, 41 completed: below 90 %. 2,000/min: 33 of 33.3.
    let sat = render::saturation(&i.storm.runs).expect("the sample saturates");
    close(sat.offered_per_min, 4000.0);
    // Busiest run: 160 jobs/s per vCPU × 0.25 × 60 = 2,400, below the 41 × 60 = 2,460 a
    // minute the one worker reached where it saturated: CPU-bound.
    let c = render::capacity(&i.storm).unwrap();
    close(c.cpu_bound_per_min, 2400.0);
    close(c.ceiling_per_min.unwrap(), 2460.0);
    assert!(c.cpu_bound());
    close(render::renewals_per_task_minute(&i.storm).unwrap(), 2400.0);
    // With cheaper jobs the worker's throughput is the limit.
    let mut cheap = i.storm.clone();
    for r in &mut cheap.runs {
        r.jobs_per_s_per_vcpu = 1000.0;
    }
    close(render::renewals_per_task_minute(&cheap).unwrap(), 2460.0);
    let md = render::markdown(
        &Inputs {
            storm: cheap,
            ..inputs()
        },
        "img",
    );
    assert!(md.contains("about 2,460 renewals a minute** (limited by one worker's throughput"));
    let mut unsaturated = i.storm.runs.clone();
    unsaturated.pop();
    assert!(render::saturation(&unsaturated).is_none());
}

#[test]
fn the_page_renders_from_the_samples() {
    let i = inputs();
    let md = render::markdown(&i, "img");
    assert!(md.starts_with("# Benchmarks\n"));
    assert!(md.contains("SAMPLE DATA"), "a sample render says so");
    assert!(md.contains("[`benchmarks-history.md`](benchmarks-history.md)"));
    assert!(md.contains("**One 0.25 vCPU task handles about 2,400 renewals a minute**"));
    // Targets: 18 calls misses ≤ 16; 4.5 ms meets ≤ 5; 1.6 ms meets ≤ 2; 0.6 meets < 1.
    assert!(md.contains("| 18.00 | ≤ 16 | **missed** |"), "{md}");
    assert!(md.contains("| 4.50 ms | ≤ 5 ms | **met** |"));
    // How the worker ran and how its CPU was read: the sequential run says (one thread,
    // `info`, ns); the concurrent sample is an older run's JSON without those fields.
    assert!(
        md.contains(
            "one runtime thread; logging at `info` as JSON lines, as the stack runs the worker"
        ),
        "{md}"
    );
    // The CPU split: the SDK's floor back-to-back and rested (0.2 and 0.5 ms × 18 calls),
    // and the workflow's 11 calls as a bare client made them (2.5 ms), leaving 7 engine
    // calls and the code 2.0 ms.
    assert!(
        md.contains("the AWS SDK alone costs 0.200 ms a call back-to-back and 0.500 ms a call after its thread slept 200 ms, as a lone job's calls mostly come (caches and clock gone cold): 3.60 to 9.00 ms for the job's 18.00 calls; the workflow's 11.00 calls cost a bare client 2.50 ms, so the engine's 7.00 calls and all of certflow's own code take the other 2.00 ms; a job whose steps make no call costs the same worker 1.80 ms for its 4.00 calls"),
        "{md}"
    );
    assert!(md.contains("| worker log | info, JSON | warn |"), "{md}");
    assert!(md.contains("| CPU read from | ns | 10 ms ticks |"), "{md}");
    assert!(md.contains("| 1.60 ms | ≤ 2 ms | **met** |"));
    assert!(md.contains("| 0.60 ms per s | < 1 ms per s | **met** |"));
    // Calls by service: the producer's send is added to SQS (5 + 1).
    assert!(md.contains("| SQS | 6.00 | – |"), "{md}");
    assert!(md.contains("| Step Functions | – | 7.00 |"));
    // Costs per million and at 1 M jobs a month.
    assert!(md.contains("| per million jobs (variable part) | $45.09 | $181.59 | $24.05 |"));
    assert!(md.contains("| a month of 1,000,000 jobs | $47.41 | $181.59 | $24.05 |"));
    assert!(md.contains("![calls per job by service](img/calls-per-job.png)"));
    assert!(md.contains("It saturates at about **41.0 jobs/s**"));
    for url in [
        "aws.amazon.com/step-functions/pricing/",
        "aws.amazon.com/fargate/pricing/",
    ] {
        assert!(md.contains(url), "cites {url}");
    }
}

#[test]
fn the_plots_are_pngs_of_the_chosen_size() {
    let i = inputs();
    let dir = tempfile::tempdir().expect("a temp dir");
    render::plots(&i, dir.path()).expect("the plots draw");
    for f in [
        render::CALLS_PNG,
        render::COST_PNG,
        render::AFTER_SUCCESS_PNG,
        render::STORM_THROUGHPUT_PNG,
        render::STORM_LATENCY_PNG,
    ] {
        let bytes = std::fs::read(dir.path().join(f)).expect(f);
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{f} is a PNG");
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((w, h), super::plots::SIZE, "{f}");
    }
}

#[test]
fn dates_from_days() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(20_000), (2024, 10, 4));
    assert_eq!(civil_from_days(-1), (1969, 12, 31));
}
