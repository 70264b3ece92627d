//! What a reconcile decides for one inventory row, from what it observed: pure, so that
//! every rule is a unit test and a dry run decides exactly what a run would.
//!
//! 1. **Gone or unusable.** A certificate ACM no longer has, or one that is not ISSUED,
//!    cannot be exported: an alert, no job.
//! 2. **A renewal not exported.** ACM's serial differs from the row's: the row's export
//!    job for that serial ([`Action::Export`]), which every server of the target gets.
//! 3. **Servers behind.** Otherwise, online servers carrying the target that are not
//!    recorded as running the row's serial get an install of the bundle already exported
//!    ([`Action::Install`]); offline ones are named and left for a later run.
//! 4. **Busy.** A row whose last export job is still running is left alone: that job is
//!    installing it.
//! 5. **Expiry.** A certificate within the alert window of its expiry that ACM is not
//!    renewing (no renewal pending) gets an alert, besides whatever else applies.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::inventory::InventoryRow;

/// What ACM says about a certificate, as far as a reconcile cares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Certificate {
    /// ACM has it (`DescribeCertificate` did not answer `ResourceNotFoundException`).
    pub found: bool,
    /// `Status`: `ISSUED`, `EXPIRED`, `REVOKED`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `Serial`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// `NotAfter`, epoch milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<i64>,
    /// `RenewalSummary.RenewalStatus` (`PENDING_AUTO_RENEWAL`, `SUCCESS`, `FAILED`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_status: Option<String>,
    /// `RenewalEligibility` (`ELIGIBLE`, `INELIGIBLE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_eligibility: Option<String>,
}

impl Certificate {
    /// Whole days from `now` (epoch ms) to its expiry, negative once expired.
    pub fn days_to_expiry(&self, now: i64) -> Option<i64> {
        self.not_after.map(|t| (t - now).div_euclid(86_400_000))
    }
}

/// A server carrying the row's target now, as SSM lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Its id.
    pub id: String,
    /// Its agent is online.
    pub online: bool,
}

/// What the reconcile does about the row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Kind", rename_all = "PascalCase")]
pub enum Action {
    /// Nothing: the row holds ACM's certificate and every online server runs it.
    None,
    /// Export ACM's certificate (serial `serial`) and install it on every server.
    Export {
        /// ACM's serial.
        #[serde(rename = "Serial")]
        serial: String,
    },
    /// Install the row's certificate, already exported, on these servers only.
    Install {
        /// The lagging online servers, sorted.
        #[serde(rename = "Servers")]
        servers: Vec<String>,
    },
    /// Nothing now: the row's export job `job_id` is still running.
    Busy {
        /// That job.
        #[serde(rename = "JobId")]
        job_id: String,
    },
}

impl Action {
    /// `none`, `export`, `install` or `busy`: the word notices and tables use.
    pub fn word(&self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Export { .. } => "export",
            Action::Install { .. } => "install",
            Action::Busy { .. } => "busy",
        }
    }
}

/// Settings of the decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// A certificate this close to expiry (days) that ACM is not renewing is alerted on.
    pub expiry_alert_days: u32,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            expiry_alert_days: 30,
        }
    }
}

/// The reconcile's view of one row: what it saw, what it decided, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Assessment {
    /// `TargetTagKey=TargetTagValue`.
    pub target: String,
    /// `CertName`.
    pub cert_name: String,
    /// `CertificateArn`.
    pub certificate_arn: String,
    /// ACM's serial now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acm_serial: Option<String>,
    /// ACM's status now (`NOT_FOUND` when ACM has no such certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acm_status: Option<String>,
    /// The serial the row's last export installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported_serial: Option<String>,
    /// Days to the expiry of ACM's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_to_expiry: Option<i64>,
    /// That expiry, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// Servers carrying the target now (online or not).
    pub servers: u32,
    /// Of them, how many are recorded as running the row's serial.
    pub current: u32,
    /// Online servers not recorded as running it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lagging: Vec<String>,
    /// Offline servers not recorded as running it (left for a later run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offline_lagging: Vec<String>,
    /// Servers recorded as running it that no longer carry the target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub departed: Vec<String>,
    /// What the reconcile does.
    pub action: Action,
    /// Why, in a sentence.
    pub why: String,
    /// An alert for a person, when one is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
}

impl Assessment {
    /// Whether the row differs from what it should be (an action, lagging servers
    /// offline, or an alert).
    pub fn drifted(&self) -> bool {
        !matches!(self.action, Action::None | Action::Busy { .. })
            || !self.offline_lagging.is_empty()
    }
}

/// Decides for `row`, given ACM's `cert`, the `servers` carrying its target now, and
/// whether its last export job is still running (`busy`), at `now` (epoch ms).
pub fn assess(
    row: &InventoryRow,
    cert: &Certificate,
    servers: &[Server],
    busy: Option<&str>,
    now: i64,
    rules: Rules,
) -> Assessment {
    let current_set = row.current_servers();
    let carrying: BTreeSet<&str> = servers.iter().map(|s| s.id.as_str()).collect();
    let mut lagging = Vec::new();
    let mut offline_lagging = Vec::new();
    for s in servers {
        if !current_set.contains(&s.id) {
            if s.online {
                lagging.push(s.id.clone());
            } else {
                offline_lagging.push(s.id.clone());
            }
        }
    }
    lagging.sort();
    offline_lagging.sort();
    let departed: Vec<String> = current_set
        .iter()
        .filter(|id| !carrying.contains(id.as_str()))
        .cloned()
        .collect();
    let current = servers.len() as u32 - (lagging.len() + offline_lagging.len()) as u32;
    let days = cert.days_to_expiry(now);
    let mut a = Assessment {
        target: row.target(),
        cert_name: row.cert_name.clone(),
        certificate_arn: row.certificate_arn.clone(),
        acm_serial: cert.serial.clone(),
        acm_status: if cert.found {
            cert.status.clone()
        } else {
            Some("NOT_FOUND".into())
        },
        exported_serial: row.serial.clone(),
        days_to_expiry: days,
        not_after: cert.not_after.map(engine::clock::rfc3339),
        servers: servers.len() as u32,
        current,
        lagging,
        offline_lagging,
        departed,
        action: Action::None,
        why: String::new(),
        alert: None,
    };
    // Rule 1.
    if !cert.found {
        a.why = "ACM has no such certificate: nothing can be exported".into();
        a.alert = Some(format!(
            "certificate {} no longer exists in ACM; its servers keep the last certificate installed until it expires. Remove the inventory row if the target no longer needs it",
            row.certificate_arn
        ));
        return a;
    }
    let status = cert.status.as_deref().unwrap_or("UNKNOWN");
    if status != "ISSUED" {
        a.why = format!("the certificate is {status}, not ISSUED: it cannot be exported");
        a.alert = Some(format!(
            "certificate {} is {status}: certflow cannot export it, and its servers keep the last certificate installed{}",
            row.certificate_arn,
            match days {
                Some(d) if d < 0 => format!(", which expired {} day(s) ago", -d),
                Some(d) => format!(", which expires in {d} day(s)"),
                None => String::new(),
            }
        ));
        return a;
    }
    // Rule 5 applies whatever else does.
    if let Some(d) = days.filter(|d| *d <= i64::from(rules.expiry_alert_days)) {
        let renewing = matches!(cert.renewal_status.as_deref(), Some("PENDING_AUTO_RENEWAL"));
        if !renewing {
            a.alert = Some(format!(
                "certificate {} expires in {d} day(s) and ACM is not renewing it (renewal status {}, eligibility {}): check its domain validation and that it was exported since its last issue or renewal",
                row.certificate_arn,
                cert.renewal_status.as_deref().unwrap_or("none"),
                cert.renewal_eligibility.as_deref().unwrap_or("unknown"),
            ));
        }
    }
    // Rule 4.
    if let Some(job) = busy {
        a.why = format!("its export job {job} is still running");
        a.action = Action::Busy {
            job_id: job.to_string(),
        };
        return a;
    }
    // Rule 2.
    let acm_serial = cert.serial.clone().unwrap_or_default();
    if row.serial.as_deref() != Some(acm_serial.as_str()) {
        a.why = match &row.serial {
            Some(old) => format!(
                "ACM's certificate is serial {acm_serial}, the target was last sent serial {old}: a renewal that was not exported"
            ),
            None => format!(
                "ACM's certificate is serial {acm_serial} and the target has no exported serial on record (an imported or unfinished row)"
            ),
        };
        a.action = Action::Export { serial: acm_serial };
        return a;
    }
    // Rule 3.
    if !a.lagging.is_empty() {
        a.why = format!(
            "{} of {} server(s) carrying {} do not run serial {acm_serial} (new, replaced, or offline at the last install)",
            a.lagging.len(),
            a.servers,
            a.target
        );
        a.action = Action::Install {
            servers: a.lagging.clone(),
        };
        return a;
    }
    a.why = if a.offline_lagging.is_empty() {
        format!(
            "in sync: serial {acm_serial} on all {} server(s)",
            a.servers
        )
    } else {
        format!(
            "{} offline server(s) do not run serial {acm_serial}: they get it once online, at a later run",
            a.offline_lagging.len()
        )
    };
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:acm:us-east-1:123456789012:certificate/abc";
    const DAY: i64 = 86_400_000;
    const NOW: i64 = 1_800_000_000_000;

    fn row(serial: &str, current: &[&str]) -> InventoryRow {
        InventoryRow {
            serial: Some(serial.into()),
            instances_serial: Some(serial.into()),
            instances_at_serial: current.iter().map(|s| s.to_string()).collect(),
            ..InventoryRow::new("Env", "prod", ARN, "web")
        }
    }

    fn cert(serial: &str, days: i64) -> Certificate {
        Certificate {
            found: true,
            status: Some("ISSUED".into()),
            serial: Some(serial.into()),
            not_after: Some(NOW + days * DAY + 1),
            renewal_status: None,
            renewal_eligibility: Some("ELIGIBLE".into()),
        }
    }

    fn servers(ids: &[(&str, bool)]) -> Vec<Server> {
        ids.iter()
            .map(|(id, online)| Server {
                id: id.to_string(),
                online: *online,
            })
            .collect()
    }

    fn decide(row: &InventoryRow, cert: &Certificate, s: &[Server]) -> Assessment {
        assess(row, cert, s, None, NOW, Rules::default())
    }

    #[test]
    fn in_sync_does_nothing() {
        let a = decide(
            &row("01", &["i-1", "i-2"]),
            &cert("01", 200),
            &servers(&[("i-1", true), ("i-2", true)]),
        );
        assert_eq!(a.action, Action::None);
        assert!(!a.drifted());
        assert_eq!((a.servers, a.current), (2, 2));
        assert_eq!(a.alert, None);
        assert_eq!(a.why, "in sync: serial 01 on all 2 server(s)");
    }

    #[test]
    fn a_new_serial_in_acm_exports_for_the_row() {
        let a = decide(
            &row("01", &["i-1"]),
            &cert("02", 200),
            &servers(&[("i-1", true), ("i-2", true)]),
        );
        assert_eq!(
            a.action,
            Action::Export {
                serial: "02".into()
            }
        );
        assert!(
            a.why.contains("a renewal that was not exported"),
            "{}",
            a.why
        );
        let imported = InventoryRow::new("Env", "prod", ARN, "web");
        let a = decide(&imported, &cert("02", 200), &[]);
        assert_eq!(
            a.action,
            Action::Export {
                serial: "02".into()
            }
        );
    }

    #[test]
    fn lagging_online_servers_get_an_install_and_offline_ones_wait() {
        let a = decide(
            &row("01", &["i-1"]),
            &cert("01", 200),
            &servers(&[("i-3", true), ("i-1", true), ("i-2", false), ("i-0", true)]),
        );
        assert_eq!(
            a.action,
            Action::Install {
                servers: vec!["i-0".into(), "i-3".into()]
            }
        );
        assert_eq!(a.offline_lagging, ["i-2"]);
        assert_eq!((a.servers, a.current), (4, 1));
        let only_offline = decide(
            &row("01", &["i-1"]),
            &cert("01", 200),
            &servers(&[("i-1", true), ("i-2", false)]),
        );
        assert_eq!(only_offline.action, Action::None);
        assert!(
            only_offline.drifted(),
            "offline lagging is drift, not an action"
        );
    }

    #[test]
    fn departed_servers_are_named_and_not_counted() {
        let a = decide(
            &row("01", &["i-1", "i-gone"]),
            &cert("01", 200),
            &servers(&[("i-1", true)]),
        );
        assert_eq!(a.departed, ["i-gone"]);
        assert_eq!((a.servers, a.current), (1, 1));
        assert_eq!(a.action, Action::None);
    }

    #[test]
    fn a_running_export_is_left_alone() {
        let a = assess(
            &row("01", &[]),
            &cert("02", 200),
            &servers(&[("i-1", true)]),
            Some("job-1"),
            NOW,
            Rules::default(),
        );
        assert_eq!(
            a.action,
            Action::Busy {
                job_id: "job-1".into()
            }
        );
        assert!(!a.drifted());
    }

    #[test]
    fn gone_or_unissued_certificates_alert_and_do_nothing() {
        let gone = Certificate::default();
        let a = decide(&row("01", &[]), &gone, &servers(&[("i-1", true)]));
        assert_eq!(a.action, Action::None);
        assert_eq!(a.acm_status.as_deref(), Some("NOT_FOUND"));
        assert!(a
            .alert
            .as_deref()
            .unwrap_or("")
            .contains("no longer exists"));
        let mut revoked = cert("01", -3);
        revoked.status = Some("EXPIRED".into());
        let a = decide(&row("01", &[]), &revoked, &servers(&[("i-1", true)]));
        assert_eq!(a.action, Action::None);
        let alert = a.alert.unwrap_or_default();
        assert!(
            alert.contains("is EXPIRED") && alert.contains("expired 3 day(s) ago"),
            "{alert}"
        );
    }

    #[test]
    fn expiry_without_a_renewal_in_sight_alerts_besides_the_action() {
        let a = decide(
            &row("01", &["i-1"]),
            &cert("01", 12),
            &servers(&[("i-1", true)]),
        );
        let alert = a.alert.unwrap_or_default();
        assert!(alert.contains("expires in 12 day(s)"), "{alert}");
        assert_eq!(a.days_to_expiry, Some(12));
        let mut renewing = cert("01", 12);
        renewing.renewal_status = Some("PENDING_AUTO_RENEWAL".into());
        let a = decide(&row("01", &["i-1"]), &renewing, &servers(&[("i-1", true)]));
        assert_eq!(a.alert, None, "ACM is renewing it");
        let a = decide(
            &row("01", &["i-1"]),
            &cert("01", 31),
            &servers(&[("i-1", true)]),
        );
        assert_eq!(a.alert, None, "outside the window");
        let a = decide(
            &row("01", &["i-1"]),
            &cert("02", 5),
            &servers(&[("i-1", true)]),
        );
        assert!(a.alert.is_some() && matches!(a.action, Action::Export { .. }));
    }

    #[test]
    fn assessments_serialize_with_the_action_kind() {
        let a = decide(
            &row("01", &[]),
            &cert("01", 200),
            &servers(&[("i-1", true)]),
        );
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["Action"]["Kind"], "Install");
        assert_eq!(v["Action"]["Servers"][0], "i-1");
        assert_eq!(v["Lagging"][0], "i-1");
        let back: Assessment = serde_json::from_value(v).unwrap();
        assert_eq!(back, a);
    }
}
