//! Small helpers the benchmark binaries share: CPU time from `/proc`, percentiles, today's
//! date, and where the `certflow` binary of a given build is.

use std::collections::BTreeMap;
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
/// `prefix`, in ms, to the nanosecond ([`thread_cpu_ms`]). Threads that have exited no
/// longer count: read it while they run.
pub fn threads_cpu_ms(prefix: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .is_ok_and(|c| c.trim_end().starts_with(prefix))
        })
        .filter_map(|e| thread_cpu_ms(&e.path()))
        .sum()
}

/// CPU time of the thread whose `/proc/<pid>/task/<tid>` directory is `task`, in ms: the
/// scheduler's own count in nanoseconds (the first field of `schedstat`), else the 10 ms
/// ticks of its `stat` on a kernel without scheduler statistics.
fn thread_cpu_ms(task: &std::path::Path) -> Option<f64> {
    std::fs::read_to_string(task.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(|ns| ns as f64 / 1e6)
        .or_else(|| {
            std::fs::read_to_string(task.join("stat"))
                .ok()
                .and_then(|s| stat_cpu_ms(&s))
        })
}

/// A reading of another process's CPU time, to measure what it used between two readings
/// more finely than its `/proc/<pid>/stat`, which counts in 10 ms ticks (±0.25 ms a job
/// over 40 jobs).
#[derive(Debug, Clone)]
pub struct CpuReading {
    /// Each live thread's CPU time in ms, from the scheduler's nanoseconds.
    threads: BTreeMap<u32, f64>,
    /// The whole process's, dead threads included, in 10 ms ticks.
    ticks_ms: f64,
}

/// CPU time a process used between two [`CpuReading`]s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUsed {
    /// In ms.
    pub ms: f64,
    /// Summed from each thread's nanoseconds (every thread of the first reading was still
    /// alive at the second), rather than from the process's 10 ms ticks.
    pub exact: bool,
}

impl CpuReading {
    /// Process `pid`'s CPU time now; `None` once it is gone.
    pub fn of(pid: u32) -> Option<CpuReading> {
        let ticks_ms = pid_cpu_ms(pid)?;
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let tid = e.file_name().to_str()?.parse().ok()?;
                Some((tid, thread_cpu_ms(&e.path())?))
            })
            .collect();
        Some(CpuReading { threads, ticks_ms })
    }

    /// What the process used from `earlier` to this reading. A thread that ended between
    /// the two took its time with it, so then only the ticks can say: one of the first
    /// reading that is gone, or one that came and went (the ticks then count more than a
    /// tick beyond the threads' sum).
    pub fn since(&self, earlier: &CpuReading) -> CpuUsed {
        let ticks = self.ticks_ms - earlier.ticks_ms;
        let all_alive = earlier
            .threads
            .keys()
            .all(|tid| self.threads.contains_key(tid));
        let threads: f64 = self
            .threads
            .iter()
            .map(|(tid, ms)| ms - earlier.threads.get(tid).copied().unwrap_or(0.0))
            .sum();
        if all_alive && !self.threads.is_empty() && ticks - threads <= 1000.0 / USER_HZ {
            CpuUsed {
                ms: threads,
                exact: true,
            }
        } else {
            CpuUsed {
                ms: ticks,
                exact: false,
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Held by a test that reads this process's threads: the other test's thread must not
    /// start or end meanwhile (cargo runs tests on threads of one process).
    static THREADS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// This thread's CPU time in ms, from the scheduler.
    fn own_cpu_ms() -> f64 {
        thread_cpu_ms(std::path::Path::new("/proc/thread-self")).expect("schedstat")
    }

    #[test]
    fn a_reading_counts_cpu_to_below_a_tick() {
        let _one_at_a_time = THREADS.lock();
        let me = std::process::id();
        // Other tests of this binary may end a thread of theirs meanwhile, which makes a
        // reading fall back to ticks: a few tries give one where none did.
        for _ in 0..10 {
            let before = CpuReading::of(me).expect("a reading of this process");
            // Burn 3.5 ticks' worth of this thread's CPU, by the thread's own count.
            let start = own_cpu_ms();
            let mut x = 0u64;
            while own_cpu_ms() - start < 35.0 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let used = CpuReading::of(me).expect("a reading").since(&before);
            if used.exact {
                assert!(used.ms >= 35.0, "the burnt CPU is counted: {used:?}");
                return;
            }
        }
        panic!("no reading was exact although this test's thread lived throughout");
    }

    #[test]
    fn a_thread_that_came_and_went_between_readings_falls_back_to_ticks() {
        let _one_at_a_time = THREADS.lock();
        let before = CpuReading::of(std::process::id()).expect("a reading");
        // Two ticks' worth of CPU on a thread that is gone by the second reading.
        std::thread::spawn(|| {
            let start = own_cpu_ms();
            let mut x = 0u64;
            while own_cpu_ms() - start < 25.0 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        })
        .join()
        .expect("the burning thread");
        let used = CpuReading::of(std::process::id())
            .expect("a reading")
            .since(&before);
        assert!(!used.exact, "its time left with it: {used:?}");
        assert!(used.ms >= 10.0, "the ticks still count it: {used:?}");
    }

    #[test]
    fn a_thread_that_ended_between_readings_falls_back_to_ticks() {
        let _one_at_a_time = THREADS.lock();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || rx.recv());
        let before = CpuReading::of(std::process::id()).expect("a reading");
        drop(tx);
        let _ = worker.join();
        let used = CpuReading::of(std::process::id())
            .expect("a reading")
            .since(&before);
        assert!(!used.exact, "its time left with it: {used:?}");
        assert_eq!(used.ms % 10.0, 0.0, "ticks of 10 ms: {used:?}");
    }
}
