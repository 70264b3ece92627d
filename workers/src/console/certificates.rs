//! The certificates page: the inventory as `certflow inventory list` reads it (one row
//! per target, certificate and name, with ACM's serial now), soonest expiry first, each
//! row's days to expiry coloured by urgency and its servers current against lagging.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use engine::{Clock, SystemClock};

use super::page::{self, encode, PageError, Tab};
use super::Console;
use crate::inventory::{self, Row};
use workflows::inventory::LastStatus;

/// Days to expiry at or under which a row is urgent (red): ACM renews 60 days before
/// expiry, so a certificate this close has missed its renewal.
pub(crate) const URGENT_DAYS: i64 = 14;
/// Days at or under which a row is a warning (amber).
pub(crate) const WARN_DAYS: i64 = 45;

/// The days to expiry a row is judged by. ACM's certificate's, as the CLI shows them,
/// unless servers may still serve an older one (ACM renewed and the target was not sent
/// the renewal, or servers lag): then the sooner of ACM's and the exported one's, since
/// that is what expires on them.
pub(crate) fn shown_days(r: &Row) -> Option<i64> {
    let behind = r.renewal_not_exported() || r.lagging_servers.unwrap_or(0) > 0;
    match (r.days_to_expiry, r.acm_days_to_expiry) {
        (Some(exported), Some(acm)) if behind => Some(exported.min(acm)),
        _ => r.days_left(),
    }
}

/// How urgent `days` to expiry is: a CSS class and the words beside the number.
pub(crate) fn urgency(days: Option<i64>) -> (&'static str, &'static str) {
    match days {
        None => ("muted", "unknown"),
        Some(d) if d < 0 => ("bad", "expired"),
        Some(d) if d <= URGENT_DAYS => ("bad", "expires soon"),
        Some(d) if d <= WARN_DAYS => ("warn", "renewal due"),
        Some(_) => ("ok", ""),
    }
}

struct Cert {
    target: String,
    cert_name: String,
    arn: String,
    arn_link: String,
    short_arn: String,
    exported_serial: String,
    acm_serial: String,
    renewal_not_exported: bool,
    acm_status: String,
    days: String,
    urgency_class: &'static str,
    urgency_words: &'static str,
    expiry: String,
    last_status: String,
    last_status_class: &'static str,
    last_installed: String,
    servers: String,
    current: u64,
    lagging: String,
    lagging_class: &'static str,
    last_job: String,
    last_job_href: String,
}

impl Cert {
    fn of(r: &Row) -> Cert {
        let days = shown_days(r);
        let (urgency_class, urgency_words) = urgency(days);
        let lagging = r.lagging_servers.unwrap_or(0);
        let last_status = r.last_status.clone().unwrap_or_default();
        Cert {
            target: r.target(),
            cert_name: r.cert_name.clone(),
            arn: r.certificate_arn.clone(),
            arn_link: format!("/jobs?certificate={}", encode(&r.certificate_arn)),
            short_arn: crate::view::certificate_id(&r.certificate_arn),
            exported_serial: crate::view::serial_cell(r.serial.as_deref()),
            acm_serial: crate::view::serial_cell(r.acm_serial.as_deref()),
            renewal_not_exported: r.renewal_not_exported(),
            acm_status: r.acm_status.clone().unwrap_or_default(),
            days: days.map_or_else(|| "?".into(), |d| d.to_string()),
            urgency_class,
            urgency_words,
            expiry: r.cert_expiry_date.clone().unwrap_or_default(),
            last_status_class: match LastStatus::parse(&last_status) {
                Some(LastStatus::Installed) => "ok",
                Some(LastStatus::InstallFailed) => "bad",
                Some(LastStatus::Exported) => "wait",
                None => "muted",
            },
            last_status,
            last_installed: r
                .last_installed_date
                .as_deref()
                .and_then(engine::clock::parse_rfc3339)
                .map(page::when)
                .unwrap_or_default(),
            servers: r.servers.map_or_else(|| "?".into(), |n| n.to_string()),
            current: r.current_servers,
            lagging: r
                .lagging_servers
                .map_or_else(|| "?".into(), |n| n.to_string()),
            lagging_class: if lagging > 0 { "bad" } else { "" },
            last_job_href: r
                .last_job_id
                .as_deref()
                .map(|id| format!("/jobs/{}", encode(id)))
                .unwrap_or_default(),
            last_job: r.last_job_id.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/certificates.html")]
struct CertificatesPage {
    tab: Tab,
    table: String,
    certs: Vec<Cert>,
    warning: Option<String>,
    urgent_days: i64,
    warn_days: i64,
}

/// `GET /certificates`.
pub(crate) async fn page(State(console): State<Console>) -> Result<Response, PageError> {
    let now = SystemClock.now();
    let ddb = aws_sdk_dynamodb::Client::new(&console.sdk);
    let table = &console.names.inventory_table;
    let (mut rows, warning) = inventory::listing(&console.sdk, &ddb, table, None, None, now)
        .await
        .map_err(|e| console.failed(e))?;
    // Most urgent first, by the days shown (unknown last).
    rows.sort_by_key(|r| shown_days(r).unwrap_or(i64::MAX));
    page::html(&CertificatesPage {
        tab: Tab::Certificates,
        table: table.clone(),
        certs: rows.iter().map(Cert::of).collect(),
        warning,
        urgent_days: URGENT_DAYS,
        warn_days: WARN_DAYS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_to_expiry_are_coloured_by_urgency() {
        assert_eq!(urgency(Some(-1)), ("bad", "expired"));
        assert_eq!(urgency(Some(0)), ("bad", "expires soon"));
        assert_eq!(urgency(Some(URGENT_DAYS)), ("bad", "expires soon"));
        assert_eq!(urgency(Some(URGENT_DAYS + 1)), ("warn", "renewal due"));
        assert_eq!(urgency(Some(WARN_DAYS + 1)), ("ok", ""));
        assert_eq!(urgency(None), ("muted", "unknown"));
    }
}
