//! # certflow-workflows
//!
//! The workflows certflow runs on its engine, and the AWS adapters they use.
//!
//! - [`export_certificate`]: export an ACM certificate and install it on tagged servers.
//! - [`renew_certificate`]: one ACM renewal event → one export job per inventory row; and
//!   `acm-alert` jobs for events that need a person.
//! - [`children`]: jobs that start jobs keep them as entries and poll them to the end.
//! - [`reconcile`]: the inventory against ACM and the fleet, on a schedule: what events
//!   missed is fixed, what cannot be is reported.
//! - [`new_server`]: a server that joins a target gets its certificate (EC2 `running`).
//! - [`intake`]: how intake messages (requests, ACM events) become jobs.
//! - [`demo`]: a small workflow that shows the engine at work.
//! - [`inventory`]: the inventory table (which certificate is installed where).
//! - [`aws`]: the AWS clients and the mapping of their errors onto retry or abort.
//! - [`outcomes`]: which events each workflow publishes, built from a job's end and state.
//! - [`notify`]: certflow's outcome events (failures, drift, expiry, reconcile summaries)
//!   on EventBridge.
//! - `secrets`, `ssm`: the Secrets Manager and Systems Manager adapters the export steps use.
//!
//! [`registry`] returns every workflow, ready for a worker.
// A worker must not panic on what it reads or is told: every failure is an error value.
// Unit tests may unwrap (a panic there is a failed test).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs, unreachable_pub)]

pub mod acm_event;
pub mod aws;
pub mod children;
pub mod demo;
pub mod document;
pub mod events;
pub mod export_certificate;
pub mod intake;
pub mod inventory;
pub mod new_server;
pub mod notify;
pub mod outcomes;
pub mod reconcile;
pub mod renew_certificate;
mod secrets;
mod ssm;

use engine::Registry;

/// Label attributes the jobs table indexes (each gets a `By<Label>` index).
pub const JOB_LABELS: &[&str] = &["CertificateArn"];

/// The name of every workflow [`registry`] registers, in the order an operator meets them.
pub const WORKFLOW_NAMES: &[&str] = &[
    export_certificate::NAME,
    renew_certificate::NAME,
    new_server::NAME,
    reconcile::NAME,
    renew_certificate::alert::NAME,
    demo::NAME,
];

/// Every workflow certflow runs.
pub fn registry(export: export_certificate::Deps) -> Registry {
    let notifier = outcomes::notifier(&export.clients, export.config.event_bus.as_deref());
    let renew = renew_certificate::Deps {
        acm: export.clients.acm.clone(),
        dynamodb: export.clients.dynamodb.clone(),
        inventory_table: export.config.inventory_table.clone(),
        notifier: notifier.clone(),
    };
    let reconcile = reconcile::Deps {
        clients: export.clients.clone(),
        inventory_table: export.config.inventory_table.clone(),
        config: export.config.reconcile.clone(),
        notifier: notifier.clone(),
    };
    let new_server = new_server::Deps {
        clients: export.clients.clone(),
        inventory_table: export.config.inventory_table.clone(),
        agent_timeout: export.config.agent_timeout,
        notifier: notifier.clone(),
    };
    Registry::new()
        .register(demo::workflow())
        .register(reconcile::workflow(reconcile))
        .register(new_server::workflow(new_server))
        .register(export_certificate::workflow(export))
        .register(renew_certificate::workflow(renew))
        .register(renew_certificate::alert::workflow(notifier))
}
