//! The AWS clients the certificate workflows use, and how their errors map onto the
//! engine's taxonomy: throttling, 5xx, timeouts and dropped connections are retried;
//! everything else (validation, access denied, not found) fails the job with the service's
//! own words.

use aws_sdk_dynamodb::error::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use engine::StepError;

/// One client per service, built from one SDK configuration.
#[derive(Clone, Debug)]
pub struct Clients {
    /// Certificate Manager.
    pub acm: aws_sdk_acm::Client,
    /// Secrets Manager.
    pub secrets: aws_sdk_secretsmanager::Client,
    /// Systems Manager (Run Command).
    pub ssm: aws_sdk_ssm::Client,
    /// DynamoDB (the inventory table).
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// EventBridge: certflow publishes its outcome events there ([`crate::notify`]).
    pub events: aws_sdk_eventbridge::Client,
}

impl Clients {
    /// Clients for `sdk` (region, endpoint, credentials, retry configuration).
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Clients {
            acm: aws_sdk_acm::Client::new(sdk),
            secrets: aws_sdk_secretsmanager::Client::new(sdk),
            ssm: aws_sdk_ssm::Client::new(sdk),
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            events: aws_sdk_eventbridge::Client::new(sdk),
        }
    }
}

const RETRYABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalServerError",
    "InternalServiceError",
    "InternalFailure",
    "InternalServiceErrorException",
    "InternalServerException",
];

/// Maps an SDK error of operation `op` onto retry or abort. The message is the service's
/// code and message; no request content is ever included.
pub(crate) fn classify<E>(op: &str, err: &SdkError<E>) -> StepError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let code = e.code().unwrap_or("UnknownError");
            let message = e.message().unwrap_or("no message");
            let status = se.raw().status().as_u16();
            if RETRYABLE_CODES.contains(&code) || status >= 500 {
                StepError::retry(format!("{op}: {code}: {message}"))
            } else {
                StepError::abort(format!("{op}: {code}: {message}"))
            }
        }
        SdkError::TimeoutError(_) => StepError::retry(format!("{op}: timed out")),
        SdkError::DispatchFailure(_) => StepError::retry(format!("{op}: connection failed")),
        SdkError::ResponseError(_) => StepError::retry(format!("{op}: unreadable response")),
        _ => StepError::retry(format!("{op}: {err}")),
    }
}
