//! Time, as the engine sees it.
//!
//! Records hold wall-clock milliseconds. The runtime asks a [`Clock`] for them so that the
//! simulation can run on tokio's paused, virtual time.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::job::Millis;

/// A source of "now" in epoch milliseconds.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now(&self) -> Millis;
}

/// The system's wall clock (production).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0)
    }
}

/// A clock that follows tokio's time, so `tokio::time::pause` makes it virtual.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
    origin_ms: Millis,
}

impl TokioClock {
    /// A clock reading `origin_ms` now and advancing with tokio's time.
    pub fn starting_at(origin_ms: Millis) -> Self {
        TokioClock {
            origin: tokio::time::Instant::now(),
            origin_ms,
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Millis {
        self.origin_ms + self.origin.elapsed().as_millis() as Millis
    }
}

/// A shared clock.
pub type SharedClock = Arc<dyn Clock>;

/// Formats epoch milliseconds as RFC 3339 (UTC, milliseconds), as stored in the table.
pub fn rfc3339(ms: Millis) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses an RFC 3339 timestamp back to epoch milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as Millis)
}
