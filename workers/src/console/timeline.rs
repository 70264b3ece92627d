//! A job's history as bars: one row per step, in the order the job first reached each,
//! on one time axis from the job's creation to its end (or now). A step's runs are solid
//! segments coloured by how they ended; the time it spent waiting (for its turn, a poll's
//! interval, a retry's back-off) is a pale segment between them. Pure: the job page
//! draws it as SVG (attributes, not inline styles, which the page's CSP forbids).

use engine::{EventKind, HistoryEvent, Millis};

use crate::view;

/// Width of the axis in SVG units (the bars scale to the page).
pub(crate) const AXIS: f64 = 1000.0;
/// Narrowest segment drawn, so that a 5 ms run on a one-hour axis is still seen.
const MIN_WIDTH: f64 = 3.0;

/// One segment of a bar.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Segment {
    /// Start on the axis, in SVG units.
    pub(crate) x: f64,
    pub(crate) width: f64,
    /// `ok`, `poll`, `retry`, `bad`, `muted`, `mark` (an instant: woken, retried) or
    /// `wait`.
    pub(crate) class: &'static str,
    /// What it was, for its tooltip.
    pub(crate) title: String,
}

/// One step's row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Bar {
    pub(crate) step: String,
    /// Runs of the step (attempts that ran, polls included).
    pub(crate) runs: u32,
    /// Of those, the ones that failed and were retried.
    pub(crate) retries: u32,
    /// Time spent running, and waiting, for people.
    pub(crate) ran: String,
    pub(crate) waited: String,
    /// How the step's last run ended (a segment class).
    pub(crate) last: &'static str,
    /// The step's last error, if any of its runs failed.
    pub(crate) error: Option<String>,
    pub(crate) segments: Vec<Segment>,
}

/// The bars of a history, and the span of the axis.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Timeline {
    pub(crate) bars: Vec<Bar>,
    /// The axis: from, and how long, for people.
    pub(crate) from: Millis,
    pub(crate) span: String,
}

fn class(kind: EventKind) -> &'static str {
    match kind {
        EventKind::StepCompleted | EventKind::Succeeded => "ok",
        EventKind::Polled => "poll",
        EventKind::RetryScheduled => "retry",
        EventKind::Failed => "bad",
        EventKind::Cancelled => "muted",
        EventKind::Created | EventKind::Retried | EventKind::Woken => "mark",
    }
}

/// The bars of `history` (oldest first), up to `until` (the job's end or now). `current`
/// is the step an unfinished job waits at: its wait since it became due is drawn up to
/// `until`, on a bar of its own if it never ran.
pub(crate) fn build(history: &[HistoryEvent], until: Millis, current: Option<&str>) -> Timeline {
    let Some(first) = history.first() else {
        return Timeline::default();
    };
    let from = first.at - first.duration_ms.map_or(0, |d| d as Millis);
    let end = history
        .iter()
        .map(|e| e.at)
        .max()
        .unwrap_or(from)
        .max(until);
    let span = (end - from).max(1) as f64;
    let x = |t: Millis| ((t - from).max(0) as f64 / span * AXIS).min(AXIS);
    let seg = |start: Millis, stop: Millis, class: &'static str, title: String| {
        let left = x(start);
        let width = (x(stop) - left)
            .max(MIN_WIDTH)
            .min(AXIS - left.min(AXIS - MIN_WIDTH));
        Segment {
            x: left.min(AXIS - MIN_WIDTH),
            width,
            class,
            title,
        }
    };

    let mut bars: Vec<Bar> = Vec::new();
    // Per step: when it became due to run (a transition into it, or its last run's end).
    let mut due: Vec<(String, Millis)> = Vec::new();
    let mut ran_ms: Vec<u64> = Vec::new();
    let mut waited_ms: Vec<u64> = Vec::new();
    for e in history {
        let i = match bars.iter().position(|b| b.step == e.step) {
            Some(i) => i,
            None => {
                bars.push(Bar {
                    step: e.step.clone(),
                    runs: 0,
                    retries: 0,
                    ran: String::new(),
                    waited: String::new(),
                    last: "mark",
                    error: None,
                    segments: Vec::new(),
                });
                ran_ms.push(0);
                waited_ms.push(0);
                bars.len() - 1
            }
        };
        let bar = &mut bars[i];
        match e.duration_ms {
            Some(d) => {
                let start = e.at - d as Millis;
                if let Some(pos) = due.iter().position(|(s, _)| *s == e.step) {
                    let since = due[pos].1;
                    if start > since {
                        waited_ms[i] += (start - since) as u64;
                        bar.segments.push(seg(
                            since,
                            start,
                            "wait",
                            format!("waited {}", view::duration((start - since) as u64)),
                        ));
                    }
                }
                bar.runs += 1;
                ran_ms[i] += d;
                if e.kind == EventKind::RetryScheduled {
                    bar.retries += 1;
                }
                bar.last = class(e.kind);
                if let Some(err) = &e.error {
                    bar.error = Some(err.clone());
                }
                let mut title = format!(
                    "try {}: {} in {}",
                    e.attempt,
                    view::outcome(e),
                    view::duration(d)
                );
                if let Some(err) = &e.error {
                    title.push_str(&format!(" — {err}"));
                }
                bar.segments.push(seg(start, e.at, class(e.kind), title));
            }
            None => {
                if e.kind != EventKind::Created {
                    bar.segments.push(seg(
                        e.at,
                        e.at,
                        "mark",
                        format!("{} by {}", view::outcome(e), e.worker),
                    ));
                }
                if let Some(err) = &e.error {
                    bar.error = Some(err.clone());
                }
            }
        }
        // The step the job is at next is due from now: a later run of it starts a wait.
        // A wake-up only cuts a wait short: the wait goes on from when it was due.
        let next = if e.to_step.is_empty() {
            &e.step
        } else {
            &e.to_step
        };
        if !e.to_status.is_terminal() && e.kind != EventKind::Woken {
            match due.iter_mut().find(|(s, _)| s == next) {
                Some(d) => d.1 = e.at,
                None => due.push((next.clone(), e.at)),
            }
        }
    }
    if let Some(step) = current {
        if let Some(&(_, since)) = due.iter().find(|(s, _)| s == step) {
            if until > since {
                let i = match bars.iter().position(|b| b.step == step) {
                    Some(i) => i,
                    None => {
                        bars.push(Bar {
                            step: step.to_string(),
                            runs: 0,
                            retries: 0,
                            ran: String::new(),
                            waited: String::new(),
                            last: "wait",
                            error: None,
                            segments: Vec::new(),
                        });
                        ran_ms.push(0);
                        waited_ms.push(0);
                        bars.len() - 1
                    }
                };
                waited_ms[i] += (until - since) as u64;
                bars[i].segments.push(seg(
                    since,
                    until,
                    "wait",
                    format!("waiting since {}", view::duration((until - since) as u64)),
                ));
            }
        }
    }
    for (i, bar) in bars.iter_mut().enumerate() {
        bar.ran = view::duration(ran_ms[i]);
        bar.waited = view::duration(waited_ms[i]);
        // A wait is known only when the run after it comes: drawn in time order.
        bar.segments.sort_by(|a, b| a.x.total_cmp(&b.x));
    }
    // A step reached only as the job's last position (never run) is not a bar.
    bars.retain(|b| !b.segments.is_empty());
    Timeline {
        bars,
        from,
        span: view::duration((end - from).max(0) as u64),
    }
}

#[cfg(test)]
mod tests {
    use engine::JobStatus;

    use super::*;

    fn ev(
        seq: u32,
        at: Millis,
        kind: EventKind,
        step: &str,
        to: &str,
        took: Option<u64>,
        err: Option<&str>,
    ) -> HistoryEvent {
        HistoryEvent {
            seq,
            at,
            kind,
            step: step.into(),
            attempt: 1,
            duration_ms: took,
            to_step: to.into(),
            to_status: match kind {
                EventKind::Succeeded => JobStatus::Succeeded,
                EventKind::Failed => JobStatus::Failed,
                _ => JobStatus::Waiting,
            },
            error: err.map(str::to_string),
            note: None,
            worker: "w-1".into(),
        }
    }

    #[test]
    fn steps_are_rows_in_the_order_first_reached_with_their_runs_and_waits() {
        use EventKind::*;
        let h = [
            ev(1, 0, Created, "export", "export", None, None),
            ev(2, 400, StepCompleted, "export", "install", Some(400), None),
            ev(
                3,
                1_000,
                RetryScheduled,
                "install",
                "install",
                Some(100),
                Some("throttled"),
            ),
            ev(4, 3_000, StepCompleted, "install", "wait", Some(200), None),
            ev(5, 5_000, Polled, "wait", "wait", Some(50), None),
            ev(
                6,
                10_000,
                Failed,
                "wait",
                "wait",
                Some(60),
                Some("i-2 Failed: exit 1"),
            ),
        ];
        let t = build(&h, 10_000, None);
        let steps: Vec<&str> = t.bars.iter().map(|b| b.step.as_str()).collect();
        assert_eq!(steps, ["export", "install", "wait"]);
        let install = &t.bars[1];
        assert_eq!((install.runs, install.retries), (2, 1));
        // Due at 400, ran 900..1000 (waited 500), due again at 1000, ran 2800..3000.
        assert_eq!(install.waited, "2.3s");
        assert_eq!(install.ran, "300ms");
        let classes: Vec<&str> = install.segments.iter().map(|s| s.class).collect();
        assert_eq!(classes, ["wait", "retry", "wait", "ok"]);
        let wait = &t.bars[2];
        assert_eq!(wait.last, "bad");
        assert_eq!(wait.error.as_deref(), Some("i-2 Failed: exit 1"));
        assert_eq!(t.span, "10.0s");
        for b in &t.bars {
            for s in &b.segments {
                assert!(
                    s.x >= 0.0 && s.width >= MIN_WIDTH && s.x + s.width <= AXIS + 1e-9,
                    "{s:?}"
                );
            }
        }
        // Segments of a row never go back in time.
        for b in &t.bars {
            for pair in b.segments.windows(2) {
                assert!(pair[0].x <= pair[1].x, "{:?}", b.segments);
            }
        }
    }

    #[test]
    fn a_wake_up_cuts_a_wait_short_without_hiding_it_and_a_running_job_waits_until_now() {
        use EventKind::*;
        let h = [
            ev(1, 0, Created, "install", "install", None, None),
            ev(2, 100, StepCompleted, "install", "wait", Some(100), None),
            // Woken at 4 s: the wait for SSM lasted from 100 ms to the run at 4.0 s.
            ev(3, 4_000, Woken, "wait", "wait", None, None),
            ev(4, 4_050, Polled, "wait", "wait", Some(50), None),
        ];
        let t = build(&h, 10_000, Some("wait"));
        let wait = &t.bars[1];
        // 100 → 4000 waited, then due again at 4050 and waiting until now (10 s).
        assert_eq!(wait.waited, "9.8s", "3.9 s, then 5.95 s");
        let classes: Vec<&str> = wait.segments.iter().map(|s| s.class).collect();
        assert_eq!(classes, ["wait", "mark", "poll", "wait"]);

        // A step the job is at but never ran: a bar with its wait only.
        let h = [ev(1, 0, Created, "check", "check", None, None)];
        let t = build(&h, 3_000, Some("check"));
        assert_eq!(t.bars.len(), 1);
        assert_eq!((t.bars[0].runs, t.bars[0].waited.as_str()), (0, "3.0s"));
    }

    #[test]
    fn an_empty_history_draws_nothing() {
        assert_eq!(build(&[], 0, None), Timeline::default());
    }
}
