//! The Secrets Manager adapter: a secret's tags, and secret versions named by an
//! idempotency token. A version, once stored, never changes, so whoever writes a token
//! second reads what the first one stored; that is what lets the `export` step run twice
//! without a second passphrase or a second export (docs/architecture.md, *Export steps*).
//!
//! Tags are written only when a secret is created (`CreateSecret` with tags); nothing here
//! changes the tags of a secret that exists.

use aws_sdk_secretsmanager::types::Tag;
use engine::StepError;

use crate::aws::classify;

/// Secrets Manager, with the KMS key new secrets are encrypted with.
pub(crate) struct Secrets<'a> {
    /// The client.
    pub(crate) client: &'a aws_sdk_secretsmanager::Client,
    /// KMS key for new secrets (default: the account's `aws/secretsmanager` key).
    pub(crate) kms_key_id: Option<&'a str>,
}

/// Whether CreateSecret made the secret or found one by that name.
pub(crate) enum Created {
    /// Created, with the value as its first version.
    Yes,
    /// A secret of that name exists (made by someone else, or concurrently).
    Exists,
}

impl Secrets<'_> {
    /// The tags of secret `name` as (key, value) pairs; `None` if there is no such secret.
    /// A secret scheduled for deletion counts as existing: its name cannot be reused.
    pub(crate) async fn tags(
        &self,
        name: &str,
    ) -> Result<Option<Vec<(String, String)>>, StepError> {
        match self.client.describe_secret().secret_id(name).send().await {
            Ok(d) => Ok(Some(
                d.tags()
                    .iter()
                    .map(|t| {
                        (
                            t.key().unwrap_or_default().to_string(),
                            t.value().unwrap_or_default().to_string(),
                        )
                    })
                    .collect(),
            )),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(classify("DescribeSecret", &e)),
        }
    }

    /// Reads the version `token` of secret `name`, if it exists.
    pub(crate) async fn read_version(
        &self,
        name: &str,
        token: &str,
    ) -> Result<Option<String>, StepError> {
        let got = self
            .client
            .get_secret_value()
            .secret_id(name)
            .version_id(token)
            .send()
            .await;
        match got {
            Ok(o) => Ok(o.secret_string().map(str::to_string)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(classify("GetSecretValue", &e)),
        }
    }

    /// Stores `value` as version `token` of the existing secret `name` and returns what
    /// that version holds: `value`, or what an earlier run of the step stored under the
    /// same token (a version never changes, and the stored one wins).
    pub(crate) async fn put_version(
        &self,
        name: &str,
        token: &str,
        value: String,
    ) -> Result<String, StepError> {
        let put = self
            .client
            .put_secret_value()
            .secret_id(name)
            .client_request_token(token)
            .secret_string(&value)
            .send()
            .await;
        match put {
            Ok(_) => Ok(value),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Err(StepError::retry(format!(
                    "secret {name} was deleted while being written"
                )))
            }
            // The token names a version already stored with other contents: an earlier run
            // of this step got this far. Its value is the one that counts.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_exists_exception()) =>
            {
                self.read_version(name, token).await?.ok_or_else(|| {
                    StepError::retry(format!(
                        "secret {name}: version {token} is taken but cannot be read"
                    ))
                })
            }
            Err(e) => Err(classify("PutSecretValue", &e)),
        }
    }

    /// Creates secret `name`, tagged `tags`, with `value` as version `token`, unless a
    /// secret of that name exists.
    pub(crate) async fn create(
        &self,
        name: &str,
        token: &str,
        value: &str,
        tags: &[Tag],
    ) -> Result<Created, StepError> {
        let mut create = self
            .client
            .create_secret()
            .name(name)
            .client_request_token(token)
            .secret_string(value)
            .description("Managed by certflow")
            .set_tags(Some(tags.to_vec()));
        if let Some(kms) = self.kms_key_id {
            create = create.kms_key_id(kms);
        }
        match create.send().await {
            Ok(_) => Ok(Created::Yes),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_exists_exception()) =>
            {
                Ok(Created::Exists)
            }
            Err(e) => Err(classify("CreateSecret", &e)),
        }
    }
}
