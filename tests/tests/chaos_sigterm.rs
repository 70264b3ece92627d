//! SIGTERM during in-flight work (issue 7, "Must show" 3): a `certflow worker` process
//! holding jobs in a slow step (the fault proxy holds its ACM ExportCertificate calls)
//! gets SIGTERM. It stops receiving, lets the step that can finish within its shutdown
//! budget finish, releases the leases of the others, and exits 0; another worker process
//! then finishes those jobs at once — long (60 s) before the released leases would have
//! expired.
//!
//! Run with the emulator and the binary built: `cargo build --workspace --bins`,
//! `deploy/local/emulator.sh start && source .local/emulator.env`, then
//! `cargo test -p certflow-tests --test chaos_sigterm -- --nocapture`.

mod chaos_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use certflow_tests::certflow::Env;
use certflow_tests::proxy::{Action, FaultProxy, Rule, Trigger};
use certflow_tests::unique;
use chaos_support::{
    issued_certificates, log_dir, not_succeeded, payload, store, tagged_instances, wait_all, worker,
};
use engine::{EventKind, JobId, JobStore, Millis};

const JOBS: usize = 4;
const BUDGET_SECS: u64 = 8;
const LEASE_SECS: u64 = 60;

fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as Millis
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_or_releases_in_flight_steps_and_another_worker_continues_at_once() {
    let emulator = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (the emulator)");
    let proxy = FaultProxy::start(&emulator, 3).await;
    // Both workers go through the proxy, so that it can isolate the emulator's DynamoDB
    // transactions (see `FaultProxy::isolate_dynamodb_transactions`).
    proxy.isolate_dynamodb_transactions(true);
    let env = Env::new().await;
    let tag = unique("term");
    tagged_instances(&env, 2, "Environment", &tag);
    let arn = issued_certificates(&env, 1).await.remove(0);
    env.allow(&arn, "Environment", &tag).await;
    // The first ExportCertificate is answered after 3 s: it finishes within the budget.
    // The others are held for two minutes: they outlive it.
    proxy.add_rule(Rule::new(
        "acm",
        Some("ExportCertificate"),
        Trigger::Nth(1),
        Action::Delay(Duration::from_secs(3)),
    ));
    for n in 2..=JOBS as u64 {
        proxy.add_rule(Rule::new(
            "acm",
            Some("ExportCertificate"),
            Trigger::Nth(n),
            Action::Delay(Duration::from_secs(120)),
        ));
    }
    let mut ids: Vec<JobId> = Vec::new();
    for i in 0..JOBS {
        ids.push(
            env.submit(&payload(&arn, &format!("t{i}"), "Environment", &tag))
                .await,
        );
    }

    let logs = log_dir("chaos-sigterm");
    let args = |budget: u64| {
        vec![
            "--concurrency".to_string(),
            "8".into(),
            "--lease-secs".into(),
            LEASE_SECS.to_string(),
            "--visibility-secs".into(),
            LEASE_SECS.to_string(),
            "--poll-wait-secs".into(),
            "1".into(),
            "--sweep-every-secs".into(),
            "0".into(),
            "--shutdown-budget-secs".into(),
            budget.to_string(),
        ]
    };
    let a_args = args(BUDGET_SECS);
    // Worker A, through the proxy, takes every job. Its attempt timeout is raised above
    // the held calls, so that they stand for a step still running when the budget ends
    // (with the default 10 s the SDK would abandon and retry them first).
    let mut a = worker(&env, &proxy.url(), "term-a", &logs)
        .args(&a_args)
        .env("CERTFLOW_AWS_ATTEMPT_TIMEOUT_SECS", "300")
        .env("CERTFLOW_AWS_OPERATION_TIMEOUT_SECS", "600")
        .spawn();
    let until = Instant::now() + Duration::from_secs(60);
    while proxy.count("acm", "ExportCertificate") < JOBS {
        assert!(
            Instant::now() < until,
            "worker A did not reach the export step of every job; its log ends:\n{}",
            a.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every job is leased to A, for a minute.
    let store = store(&env);
    let mut leases: BTreeMap<JobId, Millis> = BTreeMap::new();
    for id in &ids {
        let rec = store.get(id).await.unwrap().expect("job");
        assert!(
            rec.lease_owner
                .as_deref()
                .is_some_and(|o| o.starts_with("term-a")),
            "{id} is not leased to A: {rec:?}"
        );
        leases.insert(id.clone(), rec.lease_until.expect("lease"));
    }
    // Worker B is up and polling: nothing is visible to it.
    let b_args = args(5);
    let mut b = worker(&env, &proxy.url(), "term-b", &logs)
        .args(&b_args)
        .spawn();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let term_at = Instant::now();
    let term_ms = now_ms();
    a.terminate();
    let status = a
        .wait_exit(Duration::from_secs(BUDGET_SECS + 15))
        .await
        .unwrap_or_else(|| panic!("A still running; its log ends:\n{}", a.log_tail(40)));
    let exit_after = term_at.elapsed();
    println!("[sigterm] A exited {status} {exit_after:.1?} after SIGTERM (budget {BUDGET_SECS} s)");
    assert!(
        status.success(),
        "A exited {status}; its log ends:\n{}",
        a.log_tail(40)
    );
    // The budget, then at most the engine's short grace for releasing leases.
    assert!(
        exit_after <= Duration::from_secs(BUDGET_SECS + 4),
        "A took {exit_after:?} to exit with a {BUDGET_SECS} s budget"
    );
    assert!(
        exit_after >= Duration::from_secs(BUDGET_SECS - 1),
        "A exited after {exit_after:?}, before its budget was spent, with steps still in flight"
    );
    let a_log = a.log();
    let released = a_log.matches("released job at shutdown").count();
    assert_eq!(released, JOBS - 1, "A's log:\n{a_log}");

    let records = wait_all(&env, &ids, Duration::from_secs(40), "sigterm").await;
    let done_after = term_at.elapsed();
    println!("[sigterm] all {JOBS} jobs terminal {done_after:.1?} after SIGTERM");
    let failed = not_succeeded(&ids, &records);
    assert!(
        failed.is_empty(),
        "{failed:?}\nB's log ends:\n{}",
        b.log_tail(40)
    );

    // Who finished the export step of each job, and when, against A's leases.
    let mut by_a = 0;
    for id in &ids {
        let history = store.history(id).await.unwrap();
        let export = history
            .iter()
            .find(|e| e.step == "export" && e.kind == EventKind::StepCompleted)
            .expect("export completed");
        let rec = &records[id];
        let lease_until = leases[id];
        println!(
            "[sigterm] {id}: export completed by {} (attempt {}), job done {} ms after SIGTERM, {} ms before A's lease would have expired",
            export.worker,
            export.attempt,
            rec.updated_at - term_ms,
            lease_until - rec.updated_at
        );
        if export.worker == "term-a" {
            // Finished within the budget, by A.
            by_a += 1;
            assert_eq!(export.attempt, 1);
        } else {
            // Released by A, continued by B at once. A's attempt counts on the step the
            // job was stored at when A took it (a task commits once: the steps A fused
            // after it left no trace), so B's first step is its second attempt.
            assert_eq!(export.worker, "term-b");
            let first = history
                .iter()
                .find(|e| e.kind != EventKind::Created)
                .expect("a step");
            assert_eq!(
                (first.worker.as_str(), first.attempt),
                ("term-b", 2),
                "{history:?}"
            );
            assert!(
                rec.updated_at < lease_until - 20_000,
                "{id} finished at {} ms, too close to A's lease expiry at {lease_until}: was the lease released?",
                rec.updated_at
            );
        }
    }
    assert_eq!(by_a, 1, "the step that could finish within the budget");
    // Of A's calls (the first JOBS), only the one that finished within the budget reached
    // ACM: the released steps never exported. B made one for each job it took over.
    let exports: Vec<bool> = proxy
        .calls()
        .iter()
        .filter(|c| c.operation == "ExportCertificate")
        .map(|c| c.forwarded)
        .collect();
    assert_eq!(exports.len(), 2 * JOBS - 1, "{exports:?}");
    assert_eq!(exports[..JOBS].iter().filter(|f| **f).count(), 1);
    assert!(exports[JOBS..].iter().all(|f| *f), "{exports:?}");

    b.terminate();
    let status = b.wait_exit(Duration::from_secs(15)).await;
    assert!(status.is_some_and(|s| s.success()), "B: {status:?}");
}
