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

/// CPU time (user + system, every thread's, ended ones included) process `pid` has used so
/// far, in ms, read in nanoseconds from its CPU-time clock (`clock_getcpuclockid`) — its
/// `/proc/<pid>/stat` counts in 10 ms ticks, ±0.25 ms a job over 40 jobs. `None` once it is
/// gone.
pub fn pid_cpu_ms(pid: u32) -> Option<f64> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid place for the clock id; the call only writes it.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid place for the time; the call only writes it.
    if unsafe { libc::clock_gettime(clock, &mut t) } != 0 {
        return None;
    }
    Some(t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 / 1e6)
}

/// CPU time of the calling thread so far, in ms (`CLOCK_THREAD_CPUTIME_ID`: one system
/// call, cheap enough to read around a single AWS call). A clock that cannot be read ends
/// the bench rather than print a cost of zero.
pub fn this_thread_cpu_ms() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid place for the time; the call only writes it.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        panic!(
            "this thread's CPU clock cannot be read: {}",
            std::io::Error::last_os_error()
        );
    }
    t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 / 1e6
}

/// CPU time of this process's threads whose name (`comm`, at most 15 bytes) starts with
/// `prefix`, in ms, from the scheduler's nanoseconds. Threads that have exited no longer
/// count: read it while they run.
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

/// The benches' command-line parser for a count, or a number of seconds, that must be 1 or
/// more: with no jobs, workers, slots or requests there is nothing to measure, a lease of
/// 0 s lapses at once, and a timeout of 0 s ends a run as it starts.
pub fn at_least_one<T: std::str::FromStr + PartialOrd + From<u8>>(v: &str) -> Result<T, String> {
    match v.parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        _ => Err("must be a whole number, 1 or more".into()),
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

    /// This thread's CPU time in ms, from the scheduler.
    fn own_cpu_ms() -> f64 {
        thread_cpu_ms(std::path::Path::new("/proc/thread-self")).expect("schedstat")
    }

    /// Burns `ms` of this thread's CPU, by the thread's own count.
    fn burn(ms: f64) {
        let start = own_cpu_ms();
        let mut x = 0u64;
        while own_cpu_ms() - start < ms {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    }

    #[test]
    fn a_process_reading_counts_threads_that_have_ended_and_below_a_tick() {
        let me = std::process::id();
        let before = pid_cpu_ms(me).expect("this process's CPU clock");
        std::thread::spawn(|| burn(35.0))
            .join()
            .expect("the burning thread");
        let used = pid_cpu_ms(me).expect("this process's CPU clock") - before;
        assert!(used >= 35.0, "the ended thread's CPU is counted: {used} ms");
        assert!(
            used % 10.0 != 0.0,
            "read in ns, not in 10 ms ticks: {used} ms"
        );
    }

    #[test]
    fn a_process_that_is_gone_has_no_reading() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("a child process");
        let pid = child.id();
        child.wait().expect("the child's exit");
        assert_eq!(pid_cpu_ms(pid), None);
    }

    #[test]
    fn a_count_on_the_command_line_is_one_or_more() {
        assert_eq!(at_least_one::<u32>("1"), Ok(1));
        assert_eq!(at_least_one::<usize>("2000"), Ok(2000));
        for bad in ["0", "-1", "2.5", "two", ""] {
            assert_eq!(
                at_least_one::<u64>(bad),
                Err("must be a whole number, 1 or more".to_string()),
                "{bad:?}"
            );
        }
    }
}
