//! `certflow submit`: put an export request on the intake queue, as any producer would,
//! and optionally follow the job it becomes.

use anyhow::Context;
use serde_json::json;
use workflows::export_certificate::{self, ExportRequest};

use crate::cli::{Output, SubmitArgs};
use crate::follow;
use crate::jobs::{self, Ctx};

pub(crate) async fn run(ctx: &Ctx<'_>, args: &SubmitArgs) -> anyhow::Result<()> {
    let intake_queue = &ctx.global.names.intake_queue;
    let request = ExportRequest {
        certificate_arn: args.certificate_arn.clone(),
        cert_name: args.cert_name.clone(),
        target_tag_key: args.target.key.clone(),
        target_tag_value: args.target.value.clone(),
        request_id: args.request_id.clone(),
        canary: args.canary,
        max_concurrency: args.max_concurrency.clone(),
        max_errors: args.max_errors.clone(),
    };
    request
        .validate()
        .context("the request would fail its first check; nothing was sent")?;
    let sqs = aws_sdk_sqs::Client::new(ctx.sdk);
    let url = sqs
        .get_queue_url()
        .queue_name(intake_queue)
        .send()
        .await
        .map_err(|e| {
            let missing = e
                .as_service_error()
                .is_some_and(|s| s.is_queue_does_not_exist());
            if missing {
                anyhow::Error::from(engine::QueueError::QueueNotFound {
                    queue: intake_queue.clone(),
                })
            } else {
                anyhow::anyhow!(
                    "looking up intake queue {intake_queue}: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(&e)
                )
            }
        })?
        .queue_url
        .with_context(|| format!("intake queue {intake_queue}: no URL returned"))?;
    let sent = sqs
        .send_message()
        .queue_url(url)
        .message_body(serde_json::to_string(&request)?)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "sending the request to {intake_queue}: {}",
                aws_sdk_sqs::error::DisplayErrorContext(&e)
            )
        })?;
    let message_id = sent.message_id.unwrap_or_default();
    let id = export_certificate::job_id(&request, &message_id);
    if !args.wait {
        match ctx.output {
            Output::Table => println!(
                "submitted: job {id} (message {message_id} on {intake_queue})\nfollow it: certflow jobs watch {id}"
            ),
            Output::Json => println!(
                "{}",
                jobs::pretty(&json!({"JobId": id.as_str(), "MessageId": message_id, "Queue": intake_queue}))?
            ),
        }
        return Ok(());
    }
    let said = format!("submitted: job {id} (message {message_id} on {intake_queue})");
    match ctx.output {
        Output::Table => println!("{said}"),
        Output::Json => eprintln!("{said}"),
    }
    let waiting_for =
        format!("a worker to take the request from {intake_queue} (is `certflow worker` running?)");
    let rec = follow::follow(
        &ctx.store,
        &id,
        args.timeout,
        jobs::sink(ctx.output),
        &waiting_for,
    )
    .await?;
    jobs::finish_output(ctx, &rec).await?;
    follow::require_success(&rec)
}
