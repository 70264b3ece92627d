//! Who may send a certificate where, and where its secret lives.
//!
//! - **Targets allowed by the certificate's owner.** A certificate goes only to the targets
//!   listed in its ACM tag [`TARGETS_TAG`] (`certflow:targets`): `key=value` entries
//!   separated by whitespace (ACM tag values cannot hold commas). Tagging a certificate is
//!   governed by IAM, so whoever controls the certificate controls its destinations; the
//!   sender of a request does not. [`parse_targets`] reads the tag strictly and
//!   [`authorise`] decides, in the `check` step, before any secret is written.
//! - **One secret per (target, certificate name).** [`secret_name`] derives the name from
//!   both, so two targets of one name never share (or race for) a secret.

use sha2::Digest;

/// The ACM tag on a certificate listing the targets it may be installed on.
pub const TARGETS_TAG: &str = "certflow:targets";

/// The tag every secret certflow creates carries (and the IAM policies require).
pub const MANAGED_TAG: &str = "certflow:managed";

/// Why a `certflow:targets` tag value cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {TARGETS_TAG} tag: {}", .bad.join("; "))]
pub struct BadTargets {
    /// Each bad entry, with what is wrong with it.
    pub bad: Vec<String>,
}

/// Parses a `certflow:targets` value: whitespace-separated `key=value` entries, the key
/// non-empty (split at the first `=`, since tag keys cannot hold one; the value may be
/// empty or hold `=`). Every bad entry is named in the error, not only the first.
pub fn parse_targets(value: &str) -> Result<Vec<(String, String)>, BadTargets> {
    let mut targets = Vec::new();
    let mut bad = Vec::new();
    for entry in value.split_whitespace() {
        match entry.split_once('=') {
            Some(("", _)) => bad.push(format!("entry {entry:?} has an empty key")),
            Some((k, v)) => targets.push((k.to_string(), v.to_string())),
            None => bad.push(format!("entry {entry:?} is not key=value")),
        }
    }
    if bad.is_empty() {
        Ok(targets)
    } else {
        Err(BadTargets { bad })
    }
}

/// Whether the certificate `arn`, whose `certflow:targets` tag holds `tag` (`None`: no
/// such tag), may go to target `key=value`. The error is the job's failure reason: it
/// names the target, the tag, and the command that allows the target.
pub fn authorise(arn: &str, tag: Option<&str>, key: &str, value: &str) -> Result<(), String> {
    let target = format!("{key}={value}");
    if target.chars().any(char::is_whitespace) {
        return Err(format!(
            "certificate {arn} cannot allow target {target}: entries of its {TARGETS_TAG} tag are separated by spaces, so a target with a space cannot be listed; tag the servers with a value without spaces"
        ));
    }
    let listed = match tag {
        None => Vec::new(),
        Some(v) => parse_targets(v)
            .map_err(|e| format!("certificate {arn} has a {e}: fix the tag's value"))?,
    };
    if listed.iter().any(|(k, v)| k == key && v == value) {
        return Ok(());
    }
    let allowed = match tag.map(str::trim) {
        Some(v) if !v.is_empty() => format!("{v} {target}"),
        _ => target.clone(),
    };
    let has = match tag {
        None => format!("has no {TARGETS_TAG} tag and so "),
        Some(_) => String::new(),
    };
    Err(format!(
        "certificate {arn} {has}does not allow target {target}: add it to its {TARGETS_TAG} tag \
         (aws acm add-tags-to-certificate --certificate-arn {arn} --tags Key={TARGETS_TAG},Value=\"{allowed}\")"
    ))
}

/// The part of a secret's name that stands for the target: `<key>=<value>` when both are
/// plain (key `^[A-Za-z0-9_+.@-]+$`, value `^[A-Za-z0-9_+=.@-]*$`), else `t-` and the
/// first 16 hex digits of SHA-256(key U+001F value). Either way the same target always
/// gives the same slug, and two targets do not share one: a plain slug holds an `=` and a
/// hashed one does not, and two hashed ones would need a 64-bit collision (which the
/// export's tag check on an existing secret would still refuse).
pub fn target_slug(key: &str, value: &str) -> String {
    let key_plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '.' | '@' | '-'));
    let value_plain = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | '.' | '@' | '-'));
    if key_plain && value_plain {
        return format!("{key}={value}");
    }
    let digest = sha2::Sha256::digest(format!("{key}\u{1f}{value}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t-{}", &hex[..16])
}

/// The secret of certificate name `cert_name` for target `key=value`:
/// `<prefix><CertName>/<slug>` ([`target_slug`]).
pub fn secret_name(prefix: &str, cert_name: &str, key: &str, value: &str) -> String {
    format!("{prefix}{cert_name}/{}", target_slug(key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:acm:us-east-1:123456789012:certificate/abc";

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn targets_are_whitespace_separated_key_value_entries() {
        assert_eq!(
            parse_targets("Environment=Production  Environment=Staging\tRole=web"),
            Ok(pairs(&[
                ("Environment", "Production"),
                ("Environment", "Staging"),
                ("Role", "web")
            ]))
        );
        assert_eq!(parse_targets(""), Ok(vec![]));
        assert_eq!(parse_targets("   "), Ok(vec![]));
        assert_eq!(
            parse_targets("k=a=b k="),
            Ok(pairs(&[("k", "a=b"), ("k", "")]))
        );
    }

    #[test]
    fn every_bad_entry_is_named() {
        let e = parse_targets("Environment=Production,Environment=dev =x prod").unwrap_err();
        // A comma is not a separator: the first entry is one target with a comma in its
        // value, so it is accepted as such; `=x` and `prod` are refused.
        assert_eq!(
            e.bad,
            [
                "entry \"=x\" has an empty key".to_string(),
                "entry \"prod\" is not key=value".to_string()
            ]
        );
        assert!(e
            .to_string()
            .starts_with("malformed certflow:targets tag: "));
    }

    #[test]
    fn only_a_listed_target_is_allowed_by_exact_match() {
        let tag = Some("Environment=Production Environment=Staging");
        assert_eq!(authorise(ARN, tag, "Environment", "Production"), Ok(()));
        assert_eq!(authorise(ARN, tag, "Environment", "Staging"), Ok(()));
        for (k, v) in [
            ("Environment", "production"),
            ("environment", "Production"),
            ("Environment", "Prod"),
            ("Environment", "dev"),
        ] {
            let e = authorise(ARN, tag, k, v).unwrap_err();
            assert!(e.contains(&format!("does not allow target {k}={v}")), "{e}");
        }
    }

    #[test]
    fn the_refusal_names_the_target_the_tag_and_the_command() {
        let e = authorise(ARN, Some("Environment=Production"), "Environment", "dev").unwrap_err();
        assert_eq!(
            e,
            format!(
                "certificate {ARN} does not allow target Environment=dev: add it to its certflow:targets tag \
                 (aws acm add-tags-to-certificate --certificate-arn {ARN} --tags Key=certflow:targets,Value=\"Environment=Production Environment=dev\")"
            )
        );
        let e = authorise(ARN, None, "Environment", "dev").unwrap_err();
        assert!(
            e.starts_with(&format!(
                "certificate {ARN} has no certflow:targets tag and so does not allow target Environment=dev"
            )),
            "{e}"
        );
        assert!(e.ends_with("Value=\"Environment=dev\")"), "{e}");
        let e = authorise(ARN, Some("Environment=dev junk"), "Environment", "dev").unwrap_err();
        assert!(e.contains("malformed certflow:targets tag"), "{e}");
        assert!(e.contains("\"junk\""), "{e}");
        let e = authorise(ARN, Some("Role=web server"), "Role", "web server").unwrap_err();
        assert!(e.contains("a target with a space cannot be listed"), "{e}");
    }

    #[test]
    fn plain_targets_keep_their_name_and_others_are_hashed() {
        assert_eq!(
            target_slug("Environment", "Production"),
            "Environment=Production"
        );
        assert_eq!(target_slug("a.b@c+d_e-f", "x=y.z"), "a.b@c+d_e-f=x=y.z");
        assert_eq!(target_slug("Role", ""), "Role=");
        // Pinned: secrets are found again by this name; it must never change.
        assert_eq!(target_slug("Role", "web server"), "t-44c7fefe8f497bac");
        for (k, v) in [
            ("Role", "web server"),
            ("a:b", "x"),
            ("k", "a/b"),
            ("", "x"),
        ] {
            let slug = target_slug(k, v);
            assert!(slug.starts_with("t-") && slug.len() == 18, "{slug}");
        }
        assert_ne!(target_slug("a:b", "c"), target_slug("a", "b:c"));
        assert_eq!(
            secret_name("certflow/", "web", "Environment", "Production"),
            "certflow/web/Environment=Production"
        );
    }
}
