//! The document as SSM sees it: parsed, its parameters checked against their
//! `allowedPattern`, and substituted into the script the way SSM does it.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::Path;

use regex::Regex;
use serde_yaml_ng::Value;

pub(crate) const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
pub(crate) const DOCUMENT: &str = "deploy/ssm/Install-ACMCertificate.yaml";

// ------------------------------------------------------------------------
// The document and SSM-style parameter substitution
// ------------------------------------------------------------------------

pub(crate) struct Parameter {
    pub(crate) default: Option<String>,
    pub(crate) allowed: Regex,
}

pub(crate) struct Document {
    pub(crate) parameters: BTreeMap<String, Parameter>,
    pub(crate) run_command: Vec<String>,
}

/// A parameter value that SSM would refuse, naming the parameter.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) parameter: String,
    pub(crate) reason: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "parameter {}: {}", self.parameter, self.reason)
    }
}

pub(crate) fn str_field<'a>(v: &'a Value, key: &str, ctx: &str) -> &'a str {
    v.get(key)
        .unwrap_or_else(|| panic!("{ctx}: missing `{key}`"))
        .as_str()
        .unwrap_or_else(|| panic!("{ctx}: `{key}` must be a string"))
}

/// Parses the document and checks its shape: schema 2.2, a single Linux
/// `aws:runShellScript` step, every parameter a String with a description and
/// an `allowedPattern` that its default (if any) satisfies.
pub(crate) fn load_document() -> Document {
    let path = Path::new(REPO).join(DOCUMENT);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    load_document_from(&text)
}

/// The document as `certflow bootstrap --reload-services <services>` deploys it.
pub(crate) fn load_document_with(services: &[&str]) -> Document {
    load_document_from(&workflows::document::content(services).expect("valid service names"))
}

/// Parses and checks a document's text (see [`load_document`]).
pub(crate) fn load_document_from(text: &str) -> Document {
    let doc: Value = serde_yaml_ng::from_str(text).expect("the document is valid YAML");

    assert_eq!(
        doc.get("schemaVersion").and_then(Value::as_str),
        Some("2.2"),
        "schemaVersion must be the string \"2.2\""
    );
    assert!(
        !str_field(&doc, "description", "document").is_empty(),
        "the document needs a description"
    );

    let mut parameters = BTreeMap::new();
    let params = doc
        .get("parameters")
        .and_then(Value::as_mapping)
        .expect("parameters is a mapping");
    for (name, spec) in params {
        let name = name
            .as_str()
            .expect("parameter names are strings")
            .to_string();
        let ctx = format!("parameter {name}");
        assert_eq!(str_field(spec, "type", &ctx), "String", "{ctx}: type");
        assert!(
            !str_field(spec, "description", &ctx).trim().is_empty(),
            "{ctx}: description"
        );
        let pattern = str_field(spec, "allowedPattern", &ctx);
        assert!(
            pattern.starts_with('^') && pattern.ends_with('$'),
            "{ctx}: allowedPattern must be anchored: {pattern}"
        );
        // Whole-value match, as Java's String.matches() does.
        let allowed = Regex::new(&format!("^(?:{pattern})$"))
            .unwrap_or_else(|e| panic!("{ctx}: allowedPattern does not compile: {e}"));
        let default = spec.get("default").map(|d| {
            let d = d
                .as_str()
                .unwrap_or_else(|| panic!("{ctx}: default must be a string"));
            assert!(
                allowed.is_match(d),
                "{ctx}: default {d:?} fails its own allowedPattern"
            );
            d.to_string()
        });
        parameters.insert(name, Parameter { default, allowed });
    }
    for expected in [
        "CertName",
        "SecretId",
        "Region",
        "CertDir",
        "KeyDir",
        "ReloadService",
    ] {
        assert!(
            parameters.contains_key(expected),
            "missing parameter {expected}"
        );
    }
    assert_eq!(
        parameters["CertDir"].default.as_deref(),
        Some("/etc/ssl/certs")
    );
    assert_eq!(
        parameters["KeyDir"].default.as_deref(),
        Some("/etc/ssl/private")
    );
    assert_eq!(parameters["ReloadService"].default.as_deref(), Some(""));

    let steps = doc
        .get("mainSteps")
        .and_then(Value::as_sequence)
        .expect("mainSteps is a list");
    assert_eq!(steps.len(), 1, "one step");
    let step = &steps[0];
    assert_eq!(str_field(step, "action", "step"), "aws:runShellScript");
    let precondition = step
        .get("precondition")
        .and_then(|p| p.get("StringEquals"))
        .and_then(Value::as_sequence)
        .expect("step has a StringEquals precondition");
    let precondition: Vec<_> = precondition.iter().filter_map(Value::as_str).collect();
    assert_eq!(precondition, ["platformType", "Linux"]);
    let run_command = step
        .get("inputs")
        .and_then(|i| i.get("runCommand"))
        .and_then(Value::as_sequence)
        .expect("inputs.runCommand is a list")
        .iter()
        .map(|l| {
            l.as_str()
                .expect("runCommand lines are strings")
                .to_string()
        })
        .collect();
    Document {
        parameters,
        run_command,
    }
}

impl Document {
    /// What SSM does with SendCommand parameters: refuse unknown names and
    /// missing required values, apply defaults, check every value against its
    /// `allowedPattern`, then replace each `{{ Name }}` / `{{Name}}` in the
    /// script text. Returns the script as the agent writes it to `_script.sh`.
    pub(crate) fn render(&self, values: &[(&str, &str)]) -> Result<String, Refused> {
        self.substitute(values, true)
    }

    /// Like [`Document::render`] but without the `allowedPattern` check: the script as
    /// it would run if SSM let a value through (its own checks are the last line).
    pub(crate) fn render_unchecked(&self, values: &[(&str, &str)]) -> String {
        self.substitute(values, false)
            .unwrap_or_else(|e| panic!("cannot render: {e}"))
    }

    fn substitute(&self, values: &[(&str, &str)], check: bool) -> Result<String, Refused> {
        let mut resolved: BTreeMap<&str, String> = BTreeMap::new();
        for (name, _) in values {
            if !self.parameters.contains_key(*name) {
                return Err(Refused {
                    parameter: (*name).to_string(),
                    reason: "is not a parameter of the document".into(),
                });
            }
        }
        for (name, spec) in &self.parameters {
            let value = match values.iter().rev().find(|(n, _)| n == name) {
                Some((_, v)) => (*v).to_string(),
                None => spec.default.clone().ok_or_else(|| Refused {
                    parameter: name.clone(),
                    reason: "is required".into(),
                })?,
            };
            if check && !spec.allowed.is_match(&value) {
                return Err(Refused {
                    parameter: name.clone(),
                    reason: format!(
                        "value {value:?} does not match allowedPattern {}",
                        spec.allowed.as_str()
                    ),
                });
            }
            resolved.insert(name.as_str(), value);
        }
        let placeholder = Regex::new(r"\{\{\s*([^{}\s]+)\s*\}\}").unwrap();
        let script = self.run_command.join("\n");
        let mut unknown = None;
        let out = placeholder.replace_all(&script, |c: &regex::Captures<'_>| {
            match resolved.get(&c[1]) {
                Some(v) => v.clone(),
                None => {
                    unknown = Some(c[1].to_string());
                    String::new()
                }
            }
        });
        if let Some(name) = unknown {
            return Err(Refused {
                parameter: name,
                reason: "is used by the script but not declared".into(),
            });
        }
        Ok(out.into_owned())
    }
}
