//! `certflow submit`: put an export request on the intake queue, as any producer would,
//! and optionally follow the job it becomes.

use std::time::Duration;

use anyhow::{bail, Context};
use engine::{JobId, JobStatus, Jobs};
use workflows::export_certificate::{self, ExportRequest};

use crate::cli::SubmitArgs;
use crate::view;

pub(crate) async fn run(
    sdk: &aws_config::SdkConfig,
    jobs: &Jobs,
    intake_queue: &str,
    args: &SubmitArgs,
) -> anyhow::Result<()> {
    let Some((key, value)) = args.target.split_once('=') else {
        bail!("--target must be TAG_KEY=TAG_VALUE, got {:?}", args.target);
    };
    let request = ExportRequest {
        certificate_arn: args.certificate_arn.clone(),
        cert_name: args.cert_name.clone(),
        target_tag_key: key.to_string(),
        target_tag_value: value.to_string(),
        request_id: args.request_id.clone(),
    };
    request.validate()?;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let url = sqs
        .get_queue_url()
        .queue_name(intake_queue)
        .send()
        .await
        .with_context(|| {
            format!("intake queue {intake_queue} not found — run `certflow bootstrap` or check CERTFLOW_INTAKE_QUEUE")
        })?
        .queue_url
        .unwrap_or_default();
    let sent = sqs
        .send_message()
        .queue_url(url)
        .message_body(serde_json::to_string(&request)?)
        .send()
        .await
        .context("sending the request to the intake queue")?;
    let key = request
        .request_id
        .clone()
        .or(sent.message_id)
        .unwrap_or_default();
    let id = JobId::from_key(export_certificate::NAME, &key);
    println!("job {id}");
    if !args.wait {
        return Ok(());
    }
    let give_up = tokio::time::Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut seen = 0usize;
    loop {
        if let Ok(rec) = jobs.get(&id).await {
            let history = jobs.history(&id).await?;
            for e in history.iter().skip(seen) {
                let detail = e
                    .error
                    .clone()
                    .or_else(|| e.note.clone())
                    .unwrap_or_default();
                println!(
                    "{:<10} {:<16} {:<10} {detail}",
                    e.step,
                    e.kind.as_str(),
                    e.to_status.as_str()
                );
            }
            seen = history.len();
            if rec.status.is_terminal() {
                println!("\n{}", view::job_text(&rec, &history));
                if rec.status == JobStatus::Succeeded {
                    return Ok(());
                }
                bail!(
                    "job {id} {}: {}",
                    rec.status,
                    rec.last_error.unwrap_or_else(|| "cancelled".into())
                );
            }
        }
        if tokio::time::Instant::now() > give_up {
            bail!(
                "job {id} still running after {} s; follow it with `certflow jobs show {id}`",
                args.timeout_secs
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
