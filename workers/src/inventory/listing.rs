//! How inventory rows are shown to people: the list's table and its footnotes, and one
//! certificate's rows for `inventory show`.

use super::*;

/// How many servers installed the serial, and how many of them were verified serving it:
/// `12`, or `12 (12 verified)` when the deployment verifies.
pub(super) fn servers_cell(r: &Row) -> String {
    match (r.installed_instances, r.verified_instances) {
        (Some(n), Some(v)) if v > 0 => format!("{n} ({v} verified serving)"),
        (Some(n), _) => n.to_string(),
        (None, _) => "-".into(),
    }
}

/// The ACM SERIAL cell: ACM's serial, marked when it was not exported; `?` when ACM
/// could not be read, its status when the certificate is gone or not issued.
pub(super) fn acm_cell(r: &Row) -> String {
    match (r.acm, r.acm_status.as_deref()) {
        (Acm::Unreadable, _) => "?".into(),
        (Acm::NotRead, _) => "-".into(),
        (Acm::Read, Some("NOT_FOUND")) => "(not in ACM)".into(),
        (Acm::Read, status) => {
            let mut cell = view::serial_cell(r.acm_serial.as_deref());
            if r.renewal_not_exported() {
                cell.push_str(RENEWAL_MARK);
            }
            match status {
                Some("ISSUED") | None => cell,
                Some(other) => format!("{cell} {other}"),
            }
        }
    }
}

/// Servers behind, or `-` when certflow never looked at the target.
pub(super) fn lagging_cell(r: &Row) -> String {
    r.lagging_servers
        .map_or_else(|| "-".into(), |n| n.to_string())
}

pub(super) fn rows_table(rows: &[Row]) -> String {
    let dash = || "-".to_string();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.target(),
                r.cert_name.clone(),
                r.days_left().map_or_else(dash, |d| d.to_string()),
                acm_cell(r),
                view::serial_cell(r.serial.as_deref()),
                r.servers.map_or_else(dash, |n| n.to_string()),
                r.current_servers.to_string(),
                lagging_cell(r),
                r.last_status.clone().unwrap_or_else(dash),
                r.last_installed_date.clone().unwrap_or_else(dash),
                r.certificate_arn.clone(),
            ]
        })
        .collect();
    let mut out = view::table(
        &[
            "TARGET",
            "CERT NAME",
            "DAYS",
            "ACM SERIAL",
            "EXPORTED",
            "SERVERS",
            "CURRENT",
            "LAGGING",
            "LAST STATUS",
            "LAST INSTALLED",
            "CERTIFICATE",
        ],
        &cells,
    );
    out.push_str(&footnotes(rows));
    out
}

/// The lines under the table that explain its marks, only those that appear.
pub(super) fn footnotes(rows: &[Row]) -> String {
    let mut out = String::new();
    let renewed = rows.iter().filter(|r| r.renewal_not_exported()).count();
    if renewed > 0 {
        out.push_str(&format!(
            "{RENEWAL_MARK} renewal not exported ({renewed} row(s)): ACM's certificate is not the one exported to the target; `certflow reconcile` exports and installs it (`--dry-run` shows the plan)\n"
        ));
    }
    let behind: u64 = rows.iter().filter_map(|r| r.lagging_servers).sum();
    if behind > 0 {
        out.push_str(&format!(
            "LAGGING: {behind} server(s) carried the target when certflow last looked (SERVERS) and are not known to run the EXPORTED serial; `certflow reconcile` installs it on them\n"
        ));
    }
    if rows.iter().any(|r| r.lagging_servers.is_none()) {
        out.push_str(
            "-: certflow has not looked at the target's servers yet (a reconcile or an install does)\n",
        );
    }
    out
}

/// The row's fleet state in words, for `inventory show`.
pub(super) fn fleet_text(r: &Row) -> String {
    match (r.servers, r.lagging_servers) {
        (Some(n), Some(lagging)) => format!(
            "{n} when certflow last looked ({}); {} run the exported serial, {lagging} lagging",
            r.target_seen_date.as_deref().unwrap_or("date not recorded"),
            r.current_servers
        ),
        _ => format!(
            "not looked at yet; {} recorded running the exported serial",
            r.current_servers
        ),
    }
}

/// ACM's serial and status, and whether the target was sent it, for `inventory show`.
pub(super) fn acm_text(r: &Row) -> Option<String> {
    match r.acm {
        Acm::NotRead => None,
        Acm::Unreadable => Some("? (ACM could not be read: see the warning)".into()),
        Acm::Read => Some(match r.acm_status.as_deref() {
            Some("NOT_FOUND") => "ACM has no such certificate".into(),
            status => {
                let mut text = format!(
                    "{} ({})",
                    r.acm_serial.as_deref().unwrap_or("-"),
                    status.unwrap_or("UNKNOWN")
                );
                if r.renewal_not_exported() {
                    text.push_str(
                        " — renewal not exported: `certflow reconcile` exports and installs it",
                    );
                }
                text
            }
        }),
    }
}

pub(super) fn show_text(arn: &str, rows: &[Row], jobs: &[engine::JobRecord]) -> String {
    let mut out = format!("Certificate     {}\n", view::printable(arn));
    if rows.is_empty() {
        out.push_str("\nNot in the inventory (no export got as far as the inventory step).\n");
    }
    for r in rows {
        out.push('\n');
        let mut line = |k: &str, v: Option<&str>| {
            out.push_str(&format!("{k:<15} {}\n", view::one_line(v.unwrap_or("-"))));
        };
        line("Target", Some(&r.target()));
        line("Cert name", Some(&r.cert_name));
        let expires = r.cert_expiry_date.as_ref().map(|e| match r.days_to_expiry {
            Some(d) if d < 0 => format!("{e} (EXPIRED {} days ago)", -d),
            Some(d) => format!("{e} (in {d} days)"),
            None => e.clone(),
        });
        line("Expires", expires.as_deref());
        line("Last status", r.last_status.as_deref());
        let installed = r.installed_instances.map(|_| servers_cell(r));
        line("Installed on", installed.as_deref());
        line("Target servers", Some(&fleet_text(r)));
        line("Last installed", r.last_installed_date.as_deref());
        line("Last exported", r.last_exported_date.as_deref());
        line("Last job", r.last_job_id.as_deref());
        // Each server's installed and served serial is in the job that installed it.
        let per_server = r
            .last_job_id
            .as_ref()
            .map(|j| format!("certflow jobs show {} --servers all", view::printable(j)));
        line("Per server", per_server.as_deref());
        line("Serial", r.serial.as_deref());
        let acm = acm_text(r);
        line("ACM serial", acm.as_deref());
        line("Fingerprint", r.fingerprint.as_deref());
        line("Secret", r.secret_name.as_deref());
        // Rows exported before one secret held both still name the two old secrets.
        if r.bundle_secret_name.is_some() || r.passphrase_secret_name.is_some() {
            line("Bundle secret", r.bundle_secret_name.as_deref());
            line("Passphrase", r.passphrase_secret_name.as_deref());
        }
    }
    out.push_str("\nRecent jobs\n");
    if jobs.is_empty() {
        out.push_str("(none in the jobs table)\n");
    } else {
        out.push_str(&view::jobs_table(jobs));
    }
    out
}
