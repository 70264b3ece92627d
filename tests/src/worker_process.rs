//! `certflow worker` processes for the end-to-end tests and benches: one way to start the
//! built binary on a test's certflow ([`WorkerCommand`], from [`Env::certflow_command`]),
//! capture its log, stop it as ECS does (SIGTERM) or kill it outright (SIGKILL), and wait
//! for it with a deadline ([`WorkerProcess`]). A worker never outlives its test: dropping
//! a [`WorkerProcess`] that still runs kills it, a failed assertion included.
//!
//! ```no_run
//! # async fn demo(env: &certflow_tests::certflow::Env, endpoint: &str) {
//! use std::time::Duration;
//! use certflow_tests::worker_process::{LogDir, WorkerCommand};
//! let logs = LogDir::new(std::env::temp_dir(), "demo");
//! let mut worker = WorkerCommand::new(env, endpoint)
//!     .id("demo-a")
//!     .args(["--poll-wait-secs", "1"])
//!     .log_level("info")
//!     .log_in(&logs)
//!     .spawn();
//! // … submit jobs, wait for them …
//! worker.stop(Duration::from_secs(30)).await; // SIGTERM; it must exit 0
//! # }
//! ```

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::certflow::Env;

/// How often [`WorkerProcess::wait_exit`] looks whether the process has exited.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// A directory for one test's worker logs, kept when the test fails (its path is printed
/// when it is made) and removed when the test passes (when it is dropped without a panic
/// unwinding).
#[derive(Debug)]
pub struct LogDir(PathBuf);

impl LogDir {
    /// A new, empty directory for `test`'s logs under `parent` (cargo's target tmp dir,
    /// `env!("CARGO_TARGET_TMPDIR")`, for an integration test).
    ///
    /// # Panics
    /// When the directory cannot be made.
    pub fn new(parent: impl AsRef<Path>, test: &str) -> LogDir {
        let dir = parent.as_ref().join(crate::unique(test));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("log directory {}: {e}", dir.display()));
        println!("[{test}] worker logs in {}", dir.display());
        LogDir(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        // A panic is a failed test: its logs stay for the post-mortem.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A `certflow worker` command, built up before [`WorkerCommand::spawn`].
#[derive(Debug)]
pub struct WorkerCommand {
    cmd: Command,
    name: String,
    log: Option<PathBuf>,
    source: String,
}

impl WorkerCommand {
    /// `certflow worker` on `env`'s resources (see [`Env::certflow_command`]), its AWS
    /// calls going to `endpoint` (the emulator, or a fault proxy in front of it). Its
    /// output is discarded unless [`WorkerCommand::log_to`] or [`WorkerCommand::log_in`]
    /// says where it goes.
    pub fn new(env: &Env, endpoint: &str) -> WorkerCommand {
        let mut cmd = env.certflow_command(endpoint);
        cmd.arg("worker");
        WorkerCommand {
            cmd,
            name: crate::unique("worker"),
            log: None,
            source: env.source.clone(),
        }
    }

    /// Its worker id on leases and history (`CERTFLOW_WORKER_ID`), also its name in
    /// messages and log file names.
    pub fn id(mut self, id: &str) -> WorkerCommand {
        self.cmd.env("CERTFLOW_WORKER_ID", id);
        self.name = id.to_string();
        self
    }

    /// Arguments after `worker`.
    pub fn args<I, S>(mut self, args: I) -> WorkerCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// An environment variable (a `CERTFLOW_*` setting, an `OTEL_*` one, …).
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> WorkerCommand {
        self.cmd.env(key, value);
        self
    }

    /// Its log filter (`CERTFLOW_LOG`: `warn`, `info`, `debug`, …).
    pub fn log_level(self, level: &str) -> WorkerCommand {
        self.env("CERTFLOW_LOG", level)
    }

    /// Accepts the test's own event source besides `aws.acm` (`CERTFLOW_EVENT_SOURCES`),
    /// as the in-process workers of [`Env::worker`] do.
    pub fn accept_test_events(self) -> WorkerCommand {
        let sources = format!("aws.acm,{}", self.source);
        self.env("CERTFLOW_EVENT_SOURCES", sources)
    }

    /// Appends its standard output and error (where its log goes) to the file at `path`.
    pub fn log_to(mut self, path: impl Into<PathBuf>) -> WorkerCommand {
        self.log = Some(path.into());
        self
    }

    /// Appends its output to `<name>.log` in `dir` (the name is its [`WorkerCommand::id`],
    /// else a unique one).
    pub fn log_in(self, dir: &LogDir) -> WorkerCommand {
        let path = dir.path().join(format!("{}.log", self.name));
        self.log_to(path)
    }

    /// Starts it.
    ///
    /// # Panics
    /// When the log file cannot be opened or the binary cannot start.
    pub fn spawn(mut self) -> WorkerProcess {
        match &self.log {
            Some(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap_or_else(|e| panic!("worker log {}: {e}", path.display()));
                let err = file
                    .try_clone()
                    .unwrap_or_else(|e| panic!("worker log {}: {e}", path.display()));
                self.cmd.stdout(file).stderr(err);
            }
            None => {
                self.cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start certflow worker {}: {e}", self.name));
        WorkerProcess {
            name: self.name,
            child,
            log: self.log,
        }
    }
}

/// A running (or exited) `certflow worker` process; killed if still running when dropped.
#[derive(Debug)]
pub struct WorkerProcess {
    name: String,
    child: Child,
    log: Option<PathBuf>,
}

impl WorkerProcess {
    /// Its worker id (or the name it was given in messages).
    pub fn id(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status if it has exited (it is reaped then), `None` while it runs.
    ///
    /// # Panics
    /// When the process cannot be waited for.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .unwrap_or_else(|e| panic!("wait for worker {}: {e}", self.name))
    }

    /// SIGTERM (what ECS sends to stop a task); nothing if it has exited already.
    ///
    /// # Panics
    /// When the signal cannot be sent.
    pub fn terminate(&mut self) {
        // Once reaped, its pid may be another process's.
        if self.try_exit().is_some() {
            return;
        }
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap_or_else(|e| panic!("run kill -TERM {pid}: {e}"));
        assert!(status.success(), "kill -TERM {pid} ({})", self.name);
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit; `None` if it still runs.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
    }

    /// Stops it gracefully: SIGTERM, then waits up to `within` for it to exit.
    ///
    /// # Panics
    /// When it does not exit within `within` (it is killed then) or exits with a failure,
    /// with the end of its log.
    pub async fn stop(&mut self, within: Duration) {
        self.terminate();
        match self.wait_exit(within).await {
            Some(status) => assert!(
                status.success(),
                "worker {} exited with {status} after SIGTERM; {}",
                self.name,
                self.log_summary()
            ),
            None => {
                self.kill();
                panic!(
                    "worker {} did not stop within {within:?} of SIGTERM; {}",
                    self.name,
                    self.log_summary()
                );
            }
        }
    }

    /// Where its log goes, if it is kept.
    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// Its whole log so far (empty when it is not kept).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Where its log is and how it ends, for a failure message.
    fn log_summary(&self) -> String {
        match &self.log {
            Some(path) => format!("its log ({}) ends:\n{}", path.display(), self.log_tail(40)),
            None => "its log was not kept".to_string(),
        }
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
