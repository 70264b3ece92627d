//! The install document (`deploy/ssm/Install-ACMCertificate.yaml`), compiled into the
//! binary so that `certflow bootstrap` creates exactly what is in the repository.

use aws_sdk_ssm::types::{DocumentFormat, DocumentType};

/// The document's YAML.
pub const CONTENT: &str = include_str!("../../deploy/ssm/Install-ACMCertificate.yaml");

/// Creates the document, or updates it to this content (and makes that the default).
pub async fn ensure(client: &aws_sdk_ssm::Client, name: &str) -> Result<(), aws_sdk_ssm::Error> {
    let created = client
        .create_document()
        .name(name)
        .content(CONTENT)
        .document_type(DocumentType::Command)
        .document_format(DocumentFormat::Yaml)
        .send()
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_document_already_exists()) =>
        {
            let updated = client
                .update_document()
                .name(name)
                .content(CONTENT)
                .document_format(DocumentFormat::Yaml)
                .document_version("$LATEST")
                .send()
                .await;
            match updated {
                Ok(out) => {
                    if let Some(v) = out
                        .document_description()
                        .and_then(|d| d.document_version())
                    {
                        client
                            .update_document_default_version()
                            .name(name)
                            .document_version(v)
                            .send()
                            .await?;
                    }
                    Ok(())
                }
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_duplicate_document_content()) =>
                {
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}
