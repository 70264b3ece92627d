//! What each workflow tells the world when it ends or finds something, as
//! [`crate::notify`] events: the notices are built here from a job's ending and state, so
//! that the workflows' steps only say *when*.
//!
//! Publishing never fails a job: an event that could not be published is logged (and, in a
//! step, noted in the history), and the drift it was about is found again by the next
//! reconcile.

use engine::{Ended, JobStatus};

use crate::aws::Clients;
use crate::export_certificate::ExportState;
use crate::notify::{self, JobFailed, Notice, Notifier, RenewalFailed};

/// The notifier for `bus` (`None`: notifications off).
pub fn notifier(clients: &Clients, bus: Option<&str>) -> Notifier {
    match bus.map(str::trim).filter(|b| !b.is_empty()) {
        Some(bus) => Notifier::new(clients.events.clone(), bus),
        None => Notifier::off(),
    }
}

/// Publishes `notices`; an error is logged, and returned as a note for the history.
pub(crate) async fn publish(notifier: &Notifier, job: &str, notices: &[Notice]) -> Option<String> {
    match notifier.publish(notices).await {
        Ok(()) => None,
        Err(e) => {
            tracing::warn!(job_id = %job, error = %e, "outcome events not published");
            Some(format!("outcome events not published: {e}"))
        }
    }
}

/// `certflow Job Failed` for a job that ended FAILED.
pub(crate) fn job_failed(
    ended: &Ended,
    certificate_arn: Option<&str>,
    target: Option<String>,
    cert_name: Option<&str>,
) -> Notice {
    let id = ended.job_id.as_str();
    Notice::JobFailed(JobFailed {
        job_id: id.to_string(),
        workflow: ended.workflow.clone(),
        certificate_arn: certificate_arn.map(str::to_string),
        target,
        cert_name: cert_name.map(str::to_string),
        reason: ended.error.clone().unwrap_or_default(),
        show: format!("certflow jobs show {id}"),
        retry: format!("certflow jobs retry {id}"),
    })
}

/// What a failed export job says: that it failed and, when it was installing a certificate
/// ACM renewed, that the renewal is stuck until an export succeeds.
pub(crate) fn export_ended(ended: &Ended, s: &ExportState) -> Vec<Notice> {
    if ended.status != JobStatus::Failed {
        return Vec::new();
    }
    let r = &s.request;
    // Only fields that passed validation go into an event (an e-mail, a ticket).
    if r.validate().is_err() {
        return vec![job_failed(ended, None, None, None)];
    }
    let mut notices = vec![job_failed(
        ended,
        Some(&r.certificate_arn),
        Some(r.target()),
        Some(&r.cert_name),
    )];
    if s.cause.is_renewal() && s.install_only.is_none() {
        let id = ended.job_id.as_str();
        notices.push(Notice::RenewalFailed(RenewalFailed {
            job_id: id.to_string(),
            certificate_arn: r.certificate_arn.clone(),
            target: r.target(),
            cert_name: r.cert_name.clone(),
            serial: s.serial.clone(),
            reason: ended.error.clone().unwrap_or_default(),
            consequence: notify::RENEWAL_BLOCKED.to_string(),
            retry: format!("certflow jobs retry {id}"),
        }));
    }
    notices
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export_certificate::{Cause, ExportRequest};
    use engine::JobId;

    fn ended(status: JobStatus) -> Ended {
        Ended {
            job_id: JobId::new("j-1"),
            workflow: "export-certificate".into(),
            status,
            step: "wait".into(),
            error: Some("rollout stopped at canary batch".into()),
            labels: Default::default(),
            at: 0,
        }
    }

    fn state(cause: Cause) -> ExportState {
        ExportState {
            cause,
            serial: Some("0a".into()),
            ..ExportState::new(ExportRequest {
                certificate_arn: "arn:aws:acm:us-east-1:123456789012:certificate/abc".into(),
                cert_name: "web".into(),
                target_tag_key: "Env".into(),
                target_tag_value: "prod".into(),
                ..ExportRequest::default()
            })
        }
    }

    #[test]
    fn a_failed_renewal_export_says_acm_will_not_renew_again() {
        let notices = export_ended(&ended(JobStatus::Failed), &state(Cause::Renewal));
        let types: Vec<&str> = notices.iter().map(Notice::detail_type).collect();
        assert_eq!(types, [notify::JOB_FAILED, notify::RENEWAL_FAILED]);
        let d = notices[1].detail();
        assert_eq!(d["Target"], "Env=prod");
        assert_eq!(d["Serial"], "0a");
        assert_eq!(d["Reason"], "rollout stopped at canary batch");
        assert!(d["Consequence"]
            .as_str()
            .unwrap()
            .contains("will not renew it again"));
        assert_eq!(d["Retry"], "certflow jobs retry j-1");
        // A request's export failing is a job failure only.
        let types: Vec<&str> = export_ended(&ended(JobStatus::Failed), &state(Cause::Request))
            .iter()
            .map(Notice::detail_type)
            .collect();
        assert_eq!(types, [notify::JOB_FAILED]);
        assert!(export_ended(&ended(JobStatus::Succeeded), &state(Cause::Renewal)).is_empty());
        assert!(export_ended(&ended(JobStatus::Cancelled), &state(Cause::Renewal)).is_empty());
    }

    #[test]
    fn an_invalid_request_s_fields_stay_out_of_the_event() {
        let mut s = state(Cause::Request);
        s.request.cert_name = "<script>alert(1)</script>".into();
        let notices = export_ended(&ended(JobStatus::Failed), &s);
        assert_eq!(notices.len(), 1);
        let d = notices[0].detail();
        assert!(d["CertName"].is_null() && d["Target"].is_null(), "{d}");
    }
}
