//! # certflow-workflows
//!
//! The workflows certflow runs on its engine, and the AWS adapters they use.
//!
//! - [`demo`]: a small workflow that shows the engine at work.
//!
//! [`registry`] returns every workflow, ready for a worker.
#![warn(missing_docs, unreachable_pub)]

pub mod demo;

use engine::Registry;

/// Label attributes the jobs table indexes (each gets a `By<Label>` index).
pub const JOB_LABELS: &[&str] = &["CertificateArn"];

/// Every workflow certflow runs.
pub fn registry() -> Registry {
    Registry::new().register(demo::workflow())
}
