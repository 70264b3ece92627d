//! `inventory`: records the export in the inventory table — the row of this target,
//! certificate and name, with the secret names, expiry, serial and fingerprint — so that a
//! renewal finds where the certificate goes. It sets the same attributes however often it
//! runs.

use std::sync::Arc;

use engine::clock::rfc3339;
use engine::{Outcome, StepContext};

use super::{Deps, ExportState, StepResult};
use crate::inventory::{self, InventoryRow, LastStatus};

/// `inventory`: upsert the row (same result however often it runs).
pub(super) async fn inventory(deps: Arc<Deps>, ctx: StepContext, s: ExportState) -> StepResult {
    let r = &s.request;
    let row = InventoryRow {
        last_exported_date: Some(rfc3339(ctx.now())),
        last_job_id: Some(ctx.job_id().to_string()),
        last_status: Some(LastStatus::Exported),
        passphrase_secret_name: s.passphrase_secret.clone(),
        bundle_secret_name: s.bundle_secret.clone(),
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
    inventory::set(
        &deps.clients.dynamodb,
        &deps.config.inventory_table,
        row.key(),
        row.attributes(),
    )
    .await?;
    Ok(Outcome::next("install", s))
}
