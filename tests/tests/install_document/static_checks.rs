//! The document's shape and its `allowedPattern`s, without the emulator.

use std::fs;
use std::process::Command;

use regex::Regex;

use crate::document::load_document;
use crate::harness::{run_ok, scratch};

// ------------------------------------------------------------------------
// Tests without the emulator
// ------------------------------------------------------------------------

#[test]
fn document_shape_and_script_hygiene() {
    let doc = load_document();
    let script = doc.run_command.join("\n");
    assert!(
        script.starts_with("#!/bin/bash\n"),
        "the script selects bash"
    );
    let code: String = script
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(code.contains("set -euo pipefail"));
    assert!(code.contains("umask 077"));
    assert!(
        !code.contains("set -x"),
        "never trace: variables hold secrets"
    );
    assert!(
        !code.contains("openssl rsa"),
        "`openssl rsa` fails on EC keys"
    );
    assert!(
        !code.contains("pass:"),
        "passphrases never on a command line"
    );
    assert!(code.contains("openssl pkey"));
    // Every parameter is used, inside single quotes, exactly once.
    let assignment = Regex::new(r"^[A-Z_]+='$").unwrap();
    for name in doc.parameters.keys() {
        let uses = Regex::new(&format!(r"\{{\{{\s*{name}\s*\}}\}}")).unwrap();
        let found: Vec<_> = uses.find_iter(&script).collect();
        assert_eq!(found.len(), 1, "{name} is substituted exactly once");
        let line = script[..found[0].start()].rsplit('\n').next().unwrap();
        let rest = script[found[0].end()..].split('\n').next().unwrap();
        assert!(
            assignment.is_match(line.trim_start()) && rest == "'",
            "{name} is assigned inside single quotes, not `{line}...{rest}`"
        );
    }
    // The rendered defaults leave no placeholder behind and parse with bash.
    let rendered = doc
        .render(&[
            ("CertName", "www.example.com"),
            (
                "SecretId",
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:certflow/www-AbCdEf",
            ),
            ("Region", "eu-west-1"),
        ])
        .unwrap();
    assert!(!rendered.contains("{{"));
    let dir = scratch("syntax");
    let file = dir.path().join("_script.sh");
    fs::write(&file, &rendered).unwrap();
    run_ok(Command::new("bash").arg("-n").arg(&file));
    if Command::new("shellcheck").arg("--version").output().is_ok() {
        run_ok(Command::new("shellcheck").args(["-s", "bash"]).arg(&file));
    }
}

#[test]
fn allowed_pattern_refuses_bad_values() {
    let doc = load_document();
    let good: [(&str, &str); 3] = [
        ("CertName", "www.example.com"),
        (
            "SecretId",
            "certflow/Environment=Production/www.example.com",
        ),
        ("Region", "us-east-1"),
    ];
    let with = |name: &'static str, value: &'static str| {
        let mut v: Vec<(&str, &str)> = good.to_vec();
        v.push((name, value));
        v
    };
    assert!(doc.render(&good).is_ok());
    for value in ["a", "web-01.example.com_2", "A9", &"a".repeat(64)] {
        let v = [("CertName", value), good[1], good[2]];
        assert!(
            doc.render(&v).is_ok(),
            "CertName {value:?} should be accepted"
        );
    }
    for (name, value) in [
        (
            "SecretId",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:certflow/x-AbCdEf",
        ),
        (
            "SecretId",
            "arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:a-b",
        ),
        ("SecretId", "certflow/a@b.c+d=e_f"),
        ("ReloadService", "nginx"),
        ("ReloadService", "haproxy"),
        ("ReloadService", ""),
    ] {
        assert!(
            doc.render(&with(name, value)).is_ok(),
            "{name} {value:?} should be accepted"
        );
    }
    let long = "a".repeat(65);
    let refusals: Vec<(&str, String)> = vec![
        ("CertName", "x; rm -rf /".into()),
        ("CertName", "../etc".into()),
        ("CertName", String::new()),
        ("CertName", long),
        ("CertName", "$(id)".into()),
        ("CertName", "`id`".into()),
        ("CertName", "a'b".into()),
        ("CertName", "a b".into()),
        ("CertName", "a/b".into()),
        ("CertName", "-rf".into()),
        ("CertName", "www\n".into()),
        ("CertDir", "etc/ssl/certs".into()),
        ("CertDir", "/etc/ssl/../../tmp".into()),
        ("CertDir", "/".into()),
        ("CertDir", "/etc/ssl certs".into()),
        ("KeyDir", "private".into()),
        ("KeyDir", "/etc/ssl/private/".into()),
        ("KeyDir", "/etc/$(id)".into()),
        ("Region", "us east-1".into()),
        ("Region", "us-east-1 ".into()),
        ("Region", "us-east-1;id".into()),
        ("SecretId", "certflow/x bundle".into()),
        ("SecretId", "x'$(id)'".into()),
        ("SecretId", "--debug".into()),
        ("SecretId", String::new()),
        ("SecretId", "file:///etc/passwd".into()),
        ("SecretId", "fileb:///root/.ssh/id_rsa".into()),
        (
            "SecretId",
            "http://169.254.169.254/latest/meta-data/".into(),
        ),
        ("SecretId", "arn:aws:s3:::bucket/key".into()),
        (
            "SecretId",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:file://x".into(),
        ),
        ("ReloadService", "nginx; reboot".into()),
        ("ReloadService", "-x".into()),
        ("ReloadService", "reboot.target".into()),
        ("ReloadService", "debug-shell.service".into()),
        ("ReloadService", "nginx.service".into()),
        ("ReloadService", "nginxx".into()),
    ];
    for (name, value) in &refusals {
        let mut v: Vec<(&str, &str)> = good.to_vec();
        v.push((name, value.as_str()));
        let err = doc
            .render(&v)
            .expect_err(&format!("{name}={value:?} must be refused"));
        assert_eq!(err.parameter, *name, "{err}");
        assert!(err.to_string().contains(name), "{err}");
    }
    // Required parameters, unknown parameters.
    let err = doc.render(&good[1..]).unwrap_err();
    assert_eq!(err.parameter, "CertName");
    assert!(err.reason.contains("required"));
    let err = doc.render(&with("Commands", "id")).unwrap_err();
    assert_eq!(err.parameter, "Commands");
}
