//! AWS clients and the engine handles built on them, and `bootstrap`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use engine::backend::dynamodb::{create_job_table, DynamoJobStore};
use engine::backend::sqs::{create_queue_with_dlq, SqsTaskQueue};
use engine::schema::JobTableSpec;
use engine::{Jobs, SystemClock};

use crate::cli::Names;

/// The SDK configuration from the standard chain (`AWS_REGION`, `AWS_ENDPOINT_URL`,
/// credentials, profiles), as every AWS tool reads it.
pub(crate) async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

/// The job operations over the configured table and task queue.
pub(crate) async fn jobs(sdk: &aws_config::SdkConfig, names: &Names) -> anyhow::Result<Jobs> {
    let store = DynamoJobStore::new(aws_sdk_dynamodb::Client::new(sdk), &names.jobs_table);
    let queue = SqsTaskQueue::connect(aws_sdk_sqs::Client::new(sdk), &names.tasks_queue)
        .await
        .with_context(|| {
            format!(
                "connecting to task queue {} in {}",
                names.tasks_queue,
                region(sdk)
            )
        })?;
    Ok(Jobs::new(
        Arc::new(store),
        Arc::new(queue),
        workflows::registry(),
        Arc::new(SystemClock),
    ))
}

pub(crate) fn region(sdk: &aws_config::SdkConfig) -> String {
    sdk.region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "(no region set: AWS_REGION)".to_string())
}

/// Creates every resource certflow needs on the endpoint in use; safe to run again.
pub(crate) async fn bootstrap(sdk: &aws_config::SdkConfig, names: &Names) -> anyhow::Result<()> {
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let spec = JobTableSpec::new(&names.jobs_table, workflows::JOB_LABELS);
    create_job_table(&ddb, &spec)
        .await
        .with_context(|| format!("creating table {}", names.jobs_table))?;
    println!("table  {} ready", names.jobs_table);
    let url = create_queue_with_dlq(&sqs, &names.tasks_queue, Duration::from_secs(60), 10)
        .await
        .with_context(|| format!("creating queue {}", names.tasks_queue))?;
    println!(
        "queue  {} ready (dead letters: {}) {url}",
        names.tasks_queue,
        engine::schema::dlq_name(&names.tasks_queue)
    );
    Ok(())
}
