//! The Secrets Manager adapter: secret versions named by an idempotency token. A version,
//! once stored, never changes, so whoever writes a token second reads what the first one
//! stored; that is what lets the `export` step run twice without a second passphrase or a
//! second export (docs/architecture.md, *Export steps*).

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

/// Whether CreateSecret made the secret or found it there.
enum Created {
    Yes,
    Exists,
}

impl Secrets<'_> {
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

    /// Stores `value` as version `token` of secret `name`, creating the secret (tagged) if
    /// needed, and returns what that version holds: `value`, or what an earlier run of the
    /// step stored under the same token (a version never changes).
    ///
    /// `create_first` tries CreateSecret before PutSecretValue: one call for a secret that
    /// does not exist yet (a first export), three for one that does (a renewal).
    pub(crate) async fn store_version(
        &self,
        name: &str,
        token: &str,
        value: String,
        tags: &[Tag],
        create_first: bool,
    ) -> Result<String, StepError> {
        if create_first {
            match self.create(name, token, &value, tags).await? {
                Created::Yes => return Ok(value),
                Created::Exists => {}
            }
        }
        let put = self
            .client
            .put_secret_value()
            .secret_id(name)
            .client_request_token(token)
            .secret_string(&value)
            .send()
            .await;
        match put {
            Ok(_) => {
                // The secret existed (an earlier export): make sure it carries our tags.
                self.client
                    .tag_resource()
                    .secret_id(name)
                    .set_tags(Some(tags.to_vec()))
                    .send()
                    .await
                    .map_err(|e| classify("TagResource", &e))?;
                Ok(value)
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                if create_first {
                    return Err(StepError::retry(format!(
                        "secret {name} was deleted while being written"
                    )));
                }
                match self.create(name, token, &value, tags).await? {
                    Created::Yes => Ok(value),
                    Created::Exists => Err(StepError::retry(format!(
                        "secret {name} was created concurrently"
                    ))),
                }
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

    /// Creates secret `name` with `value` as version `token`, unless the secret exists.
    async fn create(
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
