//! The install document (`deploy/ssm/Install-ACMCertificate.yaml`), compiled into the
//! binary so that `certflow bootstrap` creates exactly what is in the repository, with
//! the `ReloadService` allow-list of the deployment baked in.
//!
//! The file holds the default allow-list twice, as the same regular-expression
//! alternation [`MARKER`]: in the `ReloadService` parameter's `allowedPattern` (so SSM
//! refuses anything else) and as the script's `RELOAD_ALLOWED` (checked again on the
//! server). [`content`] replaces both with the deployment's list; the CloudFormation
//! template does the same by splitting the file at the marker (tests/tests/cloudformation.rs
//! checks that the two agree).

use aws_sdk_ssm::types::{DocumentFormat, DocumentType};

/// The document's YAML, with the default allow-list.
pub const CONTENT: &str = include_str!("../../deploy/ssm/Install-ACMCertificate.yaml");

/// The document's name unless `CERTFLOW_DOCUMENT_NAME` says otherwise.
pub const DEFAULT_NAME: &str = "Install-ACMCertificate";

/// The services `ReloadService` may name unless the deployment says otherwise.
pub const DEFAULT_RELOAD_SERVICES: [&str; 4] = ["nginx", "apache2", "httpd", "haproxy"];

/// The default allow-list as it appears in the file, twice: in `ReloadService`'s
/// `allowedPattern` and in the script's `RELOAD_ALLOWED`.
pub const MARKER: &str = "nginx|apache2|httpd|haproxy";

/// Longest service name the document accepts (its `ReloadService` pattern).
const MAX_SERVICE_LEN: usize = 128;

/// A name in the reload allow-list that `ReloadService` could never match.
#[derive(Debug, thiserror::Error)]
#[error(
    "reload service {0:?} is not a unit name: a letter or digit, then up to 127 letters, \
     digits, '@', '.', '_' or '-'"
)]
pub struct InvalidService(pub String);

/// Whether `name` is a unit name the document's `ReloadService` pattern accepts.
fn valid_service(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_SERVICE_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '_' | '-'))
}

/// The document with `services` as the `ReloadService` allow-list (empty names are
/// ignored; no names: no reload allowed). In the pattern a '.' is written `[.]` so that
/// it matches only itself.
pub fn content<S: AsRef<str>>(services: &[S]) -> Result<String, InvalidService> {
    let names: Vec<&str> = services
        .iter()
        .map(AsRef::as_ref)
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(bad) = names.iter().find(|n| !valid_service(n)) {
        return Err(InvalidService((*bad).to_string()));
    }
    let pattern = names
        .iter()
        .map(|n| n.replace('.', "[.]"))
        .collect::<Vec<_>>()
        .join("|");
    Ok(CONTENT.replace(MARKER, &pattern))
}

/// Creates the document with the default allow-list, or updates it to that content.
pub async fn ensure(client: &aws_sdk_ssm::Client, name: &str) -> Result<(), aws_sdk_ssm::Error> {
    ensure_content(client, name, CONTENT).await
}

/// Creates the document with `content` (see [`content`]), or updates it to that content
/// (and makes that the default version).
pub async fn ensure_content(
    client: &aws_sdk_ssm::Client,
    name: &str,
    content: &str,
) -> Result<(), aws_sdk_ssm::Error> {
    let created = client
        .create_document()
        .name(name)
        .content(content)
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
                .content(content)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_is_in_the_file_exactly_twice() {
        assert_eq!(CONTENT.matches(MARKER).count(), 2);
        assert!(CONTENT.contains(&format!("allowedPattern: \"^({MARKER})?$\"")));
        assert!(CONTENT.contains(&format!("RELOAD_ALLOWED='{MARKER}'")));
        assert_eq!(DEFAULT_RELOAD_SERVICES.join("|"), MARKER);
    }

    #[test]
    fn the_default_list_gives_the_file_verbatim() {
        assert_eq!(content(&DEFAULT_RELOAD_SERVICES).unwrap(), CONTENT);
    }

    #[test]
    fn another_list_replaces_both_places_and_dots_match_only_dots() {
        let c = content(&["nginx", "php8.2-fpm", ""]).unwrap();
        assert!(c.contains("allowedPattern: \"^(nginx|php8[.]2-fpm)?$\""));
        assert!(c.contains("RELOAD_ALLOWED='nginx|php8[.]2-fpm'"));
        assert!(!c.contains(MARKER));
        let none = content::<&str>(&[]).unwrap();
        assert!(none.contains("allowedPattern: \"^()?$\""));
        assert!(none.contains("RELOAD_ALLOWED=''"));
    }

    #[test]
    fn names_that_are_not_units_are_refused() {
        for bad in [
            "reboot target",
            "-x",
            "a|b",
            "a'b",
            "$(id)",
            &"a".repeat(129),
        ] {
            assert!(matches!(content(&[bad]), Err(InvalidService(_))), "{bad}");
        }
        assert!(content(&["debug-shell.service", "foo@1"]).is_ok());
    }
}
