//! Process chaos (issue 7, "Must show" 2): three `certflow worker` processes — the real
//! binary — share 200 export jobs while one of them, picked at random, is killed with
//! SIGKILL every ~2 s and started again at once. Every job must reach SUCCEEDED; the test
//! prints the SSM commands sent twice for one batch of a job (a retry after a crash must
//! adopt the command the dead worker sent, found by its comment) and the total time.
//!
//! The workers reach the emulator through the fault proxy, with no faults but with its
//! DynamoDB transaction isolation on: several workers on one jobs table otherwise make the
//! emulator lose acknowledged writes (see `FaultProxy::isolate_dynamodb_transactions`).
//! Each worker handles 4 tasks at once: the emulator, not the workers, bounds throughput
//! (about 2 jobs/s on 2 cores, whatever the concurrency), so more concurrency only puts
//! more jobs in flight at each kill, each then waiting out a 6 s lease (at 16 the run took
//! four times as long).
//!
//! Run with the emulator and the binary built: `cargo build --workspace --bins`,
//! `deploy/local/emulator.sh start && source .local/emulator.env`, then
//! `cargo test -p certflow-tests --test chaos_kill -- --nocapture`. Knobs:
//! `CHAOS_KILL_JOBS` (default 200), `CHAOS_KILL_CONCURRENCY` (per worker, default 4),
//! `CHAOS_KILL_PERIOD_MS` (mean time between kills, default 2000; 0: no kills, for
//! comparison), `CHAOS_SEED` (the kill schedule).

mod chaos_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use certflow_tests::certflow::Env;
use certflow_tests::proxy::FaultProxy;
use certflow_tests::unique;
use certflow_tests::worker_process::WorkerProcess;
use chaos_support::{
    commands_by_comment, duplicate_commands, issued_certificates, log_dir, not_succeeded, payload,
    servers, state, store, tagged_instances, terminal_count, wait_all, worker,
};
use engine::{EventKind, JobId, JobStore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const WORKERS: usize = 3;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_jobs_survive_a_sigkill_every_two_seconds() {
    let jobs_wanted = env_number("CHAOS_KILL_JOBS", 200) as usize;
    let seed = env_number("CHAOS_SEED", 2_002);
    let emulator = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (the emulator)");
    let proxy = FaultProxy::start(&emulator, seed).await;
    proxy.isolate_dynamodb_transactions(true);
    let endpoint = proxy.url();
    let env = Env::new().await;
    let groups: Vec<(String, usize)> = [2u32, 2]
        .iter()
        .map(|&n| {
            let value = unique("kill");
            let ids = tagged_instances(&env, n, "Environment", &value);
            (value, ids.len())
        })
        .collect();
    let arns = issued_certificates(&env, 4).await;
    for arn in &arns {
        for (value, _) in &groups {
            env.allow(arn, "Environment", value).await;
        }
    }
    let logs = log_dir("chaos-kill");
    let concurrency = env_number("CHAOS_KILL_CONCURRENCY", 4).to_string();
    let args = [
        "--concurrency",
        &concurrency,
        "--lease-secs",
        "6",
        "--visibility-secs",
        "6",
        "--poll-wait-secs",
        "1",
        "--sweep-every-secs",
        "5",
        "--sweep-grace-secs",
        "10",
        "--shutdown-budget-secs",
        "5",
    ];
    let spawn = |slot: usize, generation: usize| {
        worker(&env, &endpoint, &format!("kill-{slot}-{generation}"), &logs)
            .args(args)
            .spawn()
    };
    let started = Instant::now();
    let mut slots: Vec<WorkerProcess> = (0..WORKERS).map(|s| spawn(s, 0)).collect();
    let mut generations = [0usize; WORKERS];
    let mut ids: Vec<JobId> = Vec::new();
    for i in 0..jobs_wanted {
        let (value, _) = &groups[i % groups.len()];
        let arn = &arns[i % arns.len()];
        ids.push(
            env.submit(&payload(arn, &format!("k{i:03}"), "Environment", value))
                .await,
        );
    }

    // Progress, counted apart so that a slow count does not slow the chaos down.
    let store = store(&env);
    let done = Arc::new(AtomicUsize::new(0));
    let counter = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            loop {
                done.store(terminal_count(&store).await, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    // The chaos: every 1.5–2.5 s one worker, chosen at random, is killed outright and
    // started again at once. No worker may exit on its own meanwhile.
    let mut rng = StdRng::seed_from_u64(seed);
    let timeout = Duration::from_secs(540);
    let period = env_number("CHAOS_KILL_PERIOD_MS", 2_000);
    let mut kills = 0;
    let mut next_kill = tokio::time::Instant::now();
    loop {
        next_kill +=
            Duration::from_millis(rng.random_range(period * 3 / 4..=period * 5 / 4).max(500));
        tokio::time::sleep_until(next_kill).await;
        for w in slots.iter_mut() {
            if let Some(status) = w.try_exit() {
                panic!(
                    "worker {} exited by itself ({status}); its log ends:\n{}",
                    w.id(),
                    w.log_tail(40)
                );
            }
        }
        let done = done.load(Ordering::SeqCst);
        if done >= ids.len() || started.elapsed() >= timeout {
            break;
        }
        if period == 0 {
            continue;
        }
        let victim = rng.random_range(0..WORKERS);
        slots[victim].kill();
        kills += 1;
        generations[victim] += 1;
        slots[victim] = spawn(victim, generations[victim]);
        if kills % 10 == 0 {
            println!(
                "[kill] {kills} kills, {done}/{} jobs terminal after {:.0?}",
                ids.len(),
                started.elapsed()
            );
        }
    }
    counter.abort();
    let records = wait_all(&env, &ids, Duration::from_secs(10), "kill").await;
    let took = started.elapsed();

    // Stop the survivors the way ECS does; they exit 0.
    for w in slots.iter_mut() {
        w.terminate();
    }
    for w in slots.iter_mut() {
        let status = w.wait_exit(Duration::from_secs(15)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "worker {} after SIGTERM: {status:?}; its log ends:\n{}",
            w.id(),
            w.log_tail(40)
        );
    }

    // Duplicate SSM sends: commands per job comment, as the emulator holds them and as
    // the proxy forwarded them.
    let by_comment = commands_by_comment(&env).await;
    let duplicates = duplicate_commands(&by_comment);
    let mut sent: BTreeMap<String, usize> = BTreeMap::new();
    for c in proxy
        .calls()
        .iter()
        .filter(|c| c.operation == "SendCommand" && c.forwarded)
    {
        let comment = serde_json::from_str::<serde_json::Value>(&c.body)
            .ok()
            .and_then(|v| v["Comment"].as_str().map(str::to_string))
            .unwrap_or_default();
        *sent.entry(comment).or_default() += 1;
    }
    let sent_twice: usize = sent.values().map(|n| n.saturating_sub(1)).sum();
    let mut adopted = 0;
    let mut later_attempts = 0;
    for id in &ids {
        let Ok(history) = store.history(id).await else {
            continue;
        };
        adopted += history
            .iter()
            .filter(|e| {
                e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("sent by an earlier attempt"))
            })
            .count();
        later_attempts += history
            .iter()
            .filter(|e| e.kind != EventKind::Created && e.attempt > 1)
            .count();
    }
    println!(
        "[kill] {} jobs, {WORKERS} worker processes, {kills} SIGKILLs: all terminal after {took:.1?}",
        ids.len()
    );
    // (The proxy may miss a call whose client was killed while it was being forwarded:
    // the emulator's list is the reference.)
    println!(
        "[kill] duplicate SSM sends: {duplicates} (seen by the proxy: {sent_twice}; {} SendCommand calls forwarded for {} jobs; install commands adopted after a crash: {adopted}; steps completed on a later attempt: {later_attempts})",
        sent.values().sum::<usize>(),
        ids.len()
    );
    let intake_dead = env.intake_dead_letters().await;
    println!(
        "[kill] intake requests dead-lettered (received too often): {}",
        intake_dead.len()
    );
    // A request wakes the job it created until the job moves to the task queue, so it
    // comes back after each kill of its worker; the intake queue allows 10 receives (as
    // bootstrap and the stack set it), and kills must not push a request whose job ran
    // to the intake DLQ, which is for requests no worker can take.
    assert!(
        intake_dead.is_empty(),
        "requests dead-lettered although their jobs ran: {intake_dead:?}"
    );
    let failed = not_succeeded(&ids, &records);
    assert!(
        failed.is_empty(),
        "{} of {} jobs did not succeed (worker logs in {}):\n{}",
        failed.len(),
        ids.len(),
        logs.path().display(),
        failed.join("\n"),
    );
    assert!(
        period == 0 || kills >= 3,
        "the chaos did not get going ({kills} kills)"
    );
    for (i, id) in ids.iter().enumerate() {
        let s = state(&records[id]);
        let n = groups[i % groups.len()].1;
        let rollout = s.rollout.clone().expect("rollout");
        assert_eq!(
            (
                rollout.servers as usize,
                rollout.succeeded as usize,
                rollout.failed
            ),
            (n, n, 0),
            "{id}: {rollout:?}"
        );
        // Each server installed it by the command of its batch that the fleet holds.
        let results = servers(&env, id).await;
        assert_eq!(results.len(), n, "{id}: {results:?}");
        for (server, r) in &results {
            assert_eq!(
                r.status,
                Some(workflows::export_certificate::InstanceStatus::Success),
                "{id}: {server} {r:?}"
            );
            let comment = format!("certflow job {id} batch {}", r.batch);
            let commands = by_comment.get(&comment).cloned().unwrap_or_default();
            assert!(
                r.command_id.as_ref().is_some_and(|c| commands.contains(c)),
                "{id}: {server}'s command {:?} not among {commands:?}",
                r.command_id
            );
        }
    }
    // No fault is injected here, so only a crash can interrupt a SendCommand, and the
    // next attempt adopts the command the crashed one sent: no batch may have two.
    assert_eq!(
        duplicates,
        0,
        "batches with more than one SSM command: {:?}",
        by_comment
            .iter()
            .filter(|(_, v)| v.len() > 1)
            .collect::<Vec<_>>()
    );
}
