//! `inventory`: records the export in the inventory table — the row of this target,
//! certificate and name, with the secret's name, expiry, serial and fingerprint — so that a
//! renewal finds where the certificate goes. It sets the same attributes however often it
//! runs; a new serial also empties the row's set of servers running its certificate
//! (`crate::inventory`'s fleet state).

use std::sync::Arc;

use engine::clock::rfc3339;
use engine::{Outcome, StepContext};

use super::{Deps, ExportState, StepResult};
use crate::inventory::{self, attr, InventoryRow, LastStatus};

/// `inventory`: upsert the row (same result however often it runs).
pub(super) async fn inventory(deps: Arc<Deps>, ctx: StepContext, s: ExportState) -> StepResult {
    let r = &s.request;
    let row = InventoryRow {
        last_exported_date: Some(rfc3339(ctx.now())),
        last_job_id: Some(ctx.job_id().to_string()),
        last_status: Some(LastStatus::Exported),
        secret_name: s.secret.clone(),
        cert_expiry_date: s.not_after.clone(),
        serial: s.serial.clone(),
        fingerprint: s.fingerprint.clone(),
        ..InventoryRow::new(
            &r.target_tag_key,
            &r.target_tag_value,
            &r.certificate_arn,
            &r.cert_name,
        )
    };
    // The two secret names of the old layout: this export's secret replaces them.
    let old_layout = &[attr::PASSPHRASE_SECRET_NAME, attr::BUNDLE_SECRET_NAME];
    match &s.serial {
        // A new serial empties the row's set of servers running it (none do yet).
        Some(serial) => {
            inventory::write_export(
                &deps.clients.dynamodb,
                &deps.config.inventory_table,
                row.key(),
                serial,
                row.attributes(),
                old_layout,
            )
            .await?
        }
        None => {
            inventory::set(
                &deps.clients.dynamodb,
                &deps.config.inventory_table,
                row.key(),
                row.attributes(),
                old_layout,
            )
            .await?
        }
    }
    Ok(Outcome::next("install", s))
}
