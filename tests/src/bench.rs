//! Small helpers the benchmark binaries share: CPU time from `/proc`, percentiles, today's
//! date, and where the `certflow` binary of a given build is.

use std::path::PathBuf;

/// Clock ticks per second of `/proc` CPU times (`USER_HZ`, `sysconf(_SC_CLK_TCK)`): 100 on
/// every Linux we run on (x86-64 and arm64 kernels export 100 to user space whatever their
/// internal `HZ`).
pub const USER_HZ: f64 = 100.0;

/// utime + stime of a `/proc/.../stat` line, in ms.
pub fn stat_cpu_ms(stat: &str) -> Option<f64> {
    // Fields after the parenthesised command name: state is the 3rd field of the line,
    // utime the 14th and stime the 15th.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 * 1000.0 / USER_HZ)
}

/// CPU time (user + system) process `pid` has used so far, in ms; `None` once it is gone.
pub fn pid_cpu_ms(pid: u32) -> Option<f64> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_cpu_ms(&s))
}

/// CPU time this process has used so far (every thread), in ms.
pub fn process_cpu_ms() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| stat_cpu_ms(&s))
        .unwrap_or(0.0)
}

/// CPU time of this process's threads whose name (`comm`, at most 15 bytes) starts with
/// `prefix`, in ms. Threads that have exited no longer count: read it while they run.
pub fn threads_cpu_ms(prefix: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .is_ok_and(|c| c.trim_end().starts_with(prefix))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|s| stat_cpu_ms(&s))
        .sum()
}

/// The `p`-th percentile (0–100, nearest rank) of `values`; 0 when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Today's date, UTC, as `YYYY-MM-DD`.
pub fn today() -> String {
    engine::clock::rfc3339(now_ms())
        .get(..10)
        .unwrap_or_default()
        .to_string()
}

/// The cargo target directory this binary was built into (`target/`, the parent of its
/// `debug/` or `release/` directory), if it can tell.
pub fn target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let mut dir = exe.parent()?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.pop();
    Some(dir)
}

/// Epoch milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
