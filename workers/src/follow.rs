//! Following a job until it ends: each history event as a line when it happens and, on a
//! terminal, a status line rewritten in place (step, attempt, status, elapsed time).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use engine::{Clock, JobId, JobRecord, JobStatus, JobStore, SystemClock};

use crate::view;

/// How often the record is read.
const POLL: Duration = Duration::from_millis(500);
/// Spinner frames of the status line.
const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// Where progress goes: the command's output, or stderr when stdout carries JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sink {
    /// With the command's output (a table).
    Stdout,
    /// On stderr, beside JSON on stdout.
    Stderr,
}

impl Sink {
    fn is_terminal(self) -> bool {
        match self {
            Sink::Stdout => std::io::stdout().is_terminal(),
            Sink::Stderr => std::io::stderr().is_terminal(),
        }
    }

    fn write(self, text: &str) {
        // A closed pipe is not worth failing the command for: the job carries on anyway.
        let _ = match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes()).and_then(|()| out.flush())
            }
            Sink::Stderr => {
                let mut out = std::io::stderr().lock();
                out.write_all(text.as_bytes()).and_then(|()| out.flush())
            }
        };
    }
}

/// The progress display: plain lines, plus a live status line on a terminal.
struct Progress {
    sink: Sink,
    live: bool,
    status_shown: bool,
    frame: usize,
}

impl Progress {
    fn new(sink: Sink) -> Self {
        Progress {
            sink,
            live: sink.is_terminal(),
            status_shown: false,
            frame: 0,
        }
    }

    /// A permanent line (clears the status line first).
    fn line(&mut self, text: &str) {
        self.clear();
        // The text holds a job's step, errors and notes: never a control character of its
        // own, so every one in it came from a request or a server.
        self.sink.write(&format!("{}\n", view::one_line(text)));
    }

    /// Rewrites the status line (terminal only).
    fn status(&mut self, text: &str) {
        if !self.live {
            return;
        }
        self.frame = (self.frame + 1) % SPINNER.len();
        self.sink.write(&format!(
            "\r\x1b[2K{} {}",
            SPINNER[self.frame],
            view::one_line(text)
        ));
        self.status_shown = true;
    }

    fn clear(&mut self) {
        if self.status_shown {
            self.sink.write("\r\x1b[2K");
            self.status_shown = false;
        }
    }
}

/// What the status line says about a job that is not finished.
fn status_text(rec: &JobRecord, now: i64) -> String {
    let elapsed = view::duration((now - rec.created_at).max(0) as u64);
    let attempt = if rec.attempt > 0 {
        format!(" (attempt {})", rec.attempt)
    } else {
        String::new()
    };
    let mut s = format!(
        "{} at {}{attempt} · {elapsed} since created",
        rec.status, rec.step
    );
    if rec.status == JobStatus::Waiting && rec.next_wake_at > now {
        s.push_str(&format!(
            " · next try in {}",
            view::duration((rec.next_wake_at - now) as u64)
        ));
    }
    if rec.cancel_requested {
        s.push_str(" · cancel requested");
    }
    s
}

/// Follows job `id` until it is finished and returns its record. While the job does not
/// exist yet (a request still on the intake queue), `waiting_for` says what it waits for.
/// Gives up after `timeout` with an error that says how to keep following.
pub(crate) async fn follow(
    store: &Arc<dyn JobStore>,
    id: &JobId,
    timeout: Duration,
    sink: Sink,
    waiting_for: &str,
) -> anyhow::Result<JobRecord> {
    let clock = SystemClock;
    let give_up = tokio::time::Instant::now() + timeout;
    let mut progress = Progress::new(sink);
    let mut seen = 0usize;
    let mut announced: Option<(String, u32)> = None;
    let mut said_waiting = false;
    loop {
        match store.get(id).await? {
            None => {
                if !said_waiting {
                    progress.line(&format!("waiting for {waiting_for}…"));
                    said_waiting = true;
                }
                progress.status(&format!("job {id} not created yet"));
            }
            Some(rec) => {
                let history = store.history(id).await?;
                for e in history.iter().skip(seen) {
                    progress.line(&view::event_line(e));
                }
                seen = seen.max(history.len());
                if rec.status.is_terminal() {
                    progress.clear();
                    return Ok(rec);
                }
                let now = clock.now();
                // A step that has started and not yet ended: a live lease on its attempt.
                let current = (rec.step.clone(), rec.attempt);
                if rec.lease_live(now) && rec.attempt > 0 && announced.as_ref() != Some(&current) {
                    progress.line(&format!(
                        "{:<24}  {:<10} try {:<2} started on {}",
                        "",
                        rec.step,
                        rec.attempt,
                        rec.lease_owner.as_deref().unwrap_or("a worker")
                    ));
                    announced = Some(current);
                }
                progress.status(&status_text(&rec, now));
            }
        }
        if tokio::time::Instant::now() >= give_up {
            progress.clear();
            bail!(
                "job {id} is not finished after {}; it carries on — follow it again with `certflow jobs watch {id}`",
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Ok for a job that SUCCEEDED; otherwise an error that says why and what to do.
pub(crate) fn require_success(rec: &JobRecord) -> anyhow::Result<()> {
    let id = &rec.job_id;
    match rec.status {
        JobStatus::Succeeded => Ok(()),
        JobStatus::Failed => bail!(
            "job {id} FAILED at step {} (attempt {}): {}\n  fix the cause, then resume it at {}: certflow jobs retry {id} --wait",
            rec.step,
            rec.attempt,
            rec.last_error.as_deref().unwrap_or("(no error recorded)"),
            rec.step
        ),
        JobStatus::Cancelled => bail!(
            "job {id} was CANCELLED at step {}{}",
            rec.step,
            rec.last_error
                .as_deref()
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        ),
        other => bail!("job {id} is {other}, not finished"),
    }
}

#[cfg(test)]
mod tests {
    use engine::JobStatus::{Cancelled, Failed, Pending, Running, Succeeded, Waiting};

    use super::*;
    use crate::testing::{job, T0};

    #[test]
    fn the_status_line_says_where_the_job_is_and_for_how_long() {
        let rec = JobRecord {
            step: "export".into(),
            attempt: 2,
            ..job("j-1", Running)
        };
        assert_eq!(
            status_text(&rec, T0 + 75_000),
            "RUNNING at export (attempt 2) · 1m15s since created"
        );
        let fresh = JobRecord {
            attempt: 0,
            ..job("j-1", Pending)
        };
        assert_eq!(
            status_text(&fresh, T0),
            "PENDING at check · 0ms since created"
        );
    }

    #[test]
    fn a_waiting_job_says_when_it_tries_again_and_a_cancel_shows() {
        let rec = JobRecord {
            next_wake_at: T0 + 30_000,
            cancel_requested: true,
            ..job("j-1", Waiting)
        };
        assert_eq!(
            status_text(&rec, T0 + 10_000),
            "WAITING at check (attempt 1) · 10.0s since created · next try in 20.0s · cancel requested"
        );
        // Past its wake time it is due: no countdown.
        assert_eq!(
            status_text(&rec, T0 + 40_000),
            "WAITING at check (attempt 1) · 40.0s since created · cancel requested"
        );
    }

    #[test]
    fn only_success_is_success_and_the_error_says_what_to_do() {
        assert!(require_success(&job("j-1", Succeeded)).is_ok());
        let failed = JobRecord {
            step: "wait".into(),
            attempt: 3,
            last_error: Some("install failed".into()),
            ..job("j-1", Failed)
        };
        assert_eq!(
            require_success(&failed).unwrap_err().to_string(),
            "job j-1 FAILED at step wait (attempt 3): install failed\n  fix the cause, then resume it at wait: certflow jobs retry j-1 --wait"
        );
        let cancelled = JobRecord {
            last_error: Some("throttled".into()),
            ..job("j-1", Cancelled)
        };
        assert_eq!(
            require_success(&cancelled).unwrap_err().to_string(),
            "job j-1 was CANCELLED at step check (last error: throttled)"
        );
        assert_eq!(
            require_success(&job("j-1", Running))
                .unwrap_err()
                .to_string(),
            "job j-1 is RUNNING, not finished"
        );
    }
}
