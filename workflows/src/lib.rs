//! # certflow-workflows
//!
//! The workflows certflow runs on its engine, and the AWS adapters they use.
//!
//! - [`export_certificate`]: export an ACM certificate and install it on tagged servers.
//! - [`demo`]: a small workflow that shows the engine at work.
//! - [`inventory`]: the inventory table (which certificate is installed where).
//! - [`aws`]: the AWS clients and the mapping of their errors onto retry or abort.
//!
//! [`registry`] returns every workflow, ready for a worker.
#![warn(missing_docs, unreachable_pub)]

pub mod aws;
pub mod demo;
pub mod document;
pub mod export_certificate;
pub mod intake;
pub mod inventory;

use engine::Registry;

/// Label attributes the jobs table indexes (each gets a `By<Label>` index).
pub const JOB_LABELS: &[&str] = &["CertificateArn"];

/// Every workflow certflow runs.
pub fn registry(export: export_certificate::Deps) -> Registry {
    Registry::new()
        .register(demo::workflow())
        .register(export_certificate::workflow(export))
}
