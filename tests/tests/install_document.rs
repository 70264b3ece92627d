//! The SSM install document `deploy/ssm/Install-ACMCertificate.yaml`, run for real.
//!
//! The document is parsed, its parameters are checked against their
//! `allowedPattern` and substituted the way SSM does it, and the script is then
//! run the way the SSM agent runs it (`sh -c <file>`), against the emulator's
//! Secrets Manager, with `CertDir`/`KeyDir` in a temporary directory. Everything
//! is done with subprocesses: the venv's AWS CLI for the secrets, `openssl` for
//! keys and certificates.
//!
//! The emulator tests need the environment that the README's test command
//! sets up (`AWS_ENDPOINT_URL` and friends, see `deploy/local/emulator.sh`). Without
//! it they fail; they do not skip.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use regex::Regex;
use serde_json::json;
use serde_yaml_ng::Value;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const DOCUMENT: &str = "deploy/ssm/Install-ACMCertificate.yaml";
const SERIAL_PREFIX: &str = "CERTFLOW_INSTALLED_SERIAL=";

// ------------------------------------------------------------------------
// The document and SSM-style parameter substitution
// ------------------------------------------------------------------------

struct Parameter {
    default: Option<String>,
    allowed: Regex,
}

struct Document {
    parameters: BTreeMap<String, Parameter>,
    run_command: Vec<String>,
}

/// A parameter value that SSM would refuse, naming the parameter.
#[derive(Debug)]
struct Refused {
    parameter: String,
    reason: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "parameter {}: {}", self.parameter, self.reason)
    }
}

fn str_field<'a>(v: &'a Value, key: &str, ctx: &str) -> &'a str {
    v.get(key)
        .unwrap_or_else(|| panic!("{ctx}: missing `{key}`"))
        .as_str()
        .unwrap_or_else(|| panic!("{ctx}: `{key}` must be a string"))
}

/// Parses the document and checks its shape: schema 2.2, a single Linux
/// `aws:runShellScript` step, every parameter a String with a description and
/// an `allowedPattern` that its default (if any) satisfies.
fn load_document() -> Document {
    let path = Path::new(REPO).join(DOCUMENT);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: Value = serde_yaml_ng::from_str(&text).expect("the document is valid YAML");

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
        "BundleSecretId",
        "PassphraseSecretId",
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
    fn render(&self, values: &[(&str, &str)]) -> Result<String, Refused> {
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
            if !spec.allowed.is_match(&value) {
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

// ------------------------------------------------------------------------
// Subprocess helpers
// ------------------------------------------------------------------------

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    run_ok(Command::new("openssl").current_dir(dir).args(args))
}

/// PATH with the venv first, so the script finds the AWS CLI installed there.
fn script_path_var() -> String {
    format!(
        "{}:{}",
        certflow_tests::venv_bin().display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    )
}

/// The emulator the README's test command started, and the venv's AWS CLI for it.
struct Emulator;

impl Emulator {
    fn get() -> Emulator {
        let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
        assert!(
            !endpoint.is_empty(),
            "AWS_ENDPOINT_URL is not set: these tests run against the AWS emulator. Run them \
             with the README's test command, `deploy/local/test.sh`, which starts it, or by \
             hand: `deploy/local/emulator.sh start && eval \"$(deploy/local/emulator.sh env)\"`"
        );
        assert!(
            certflow_tests::venv_bin().join("aws").exists(),
            "{}/aws is missing: run `deploy/local/emulator.sh setup` (the README's test \
             command does)",
            certflow_tests::venv_bin().display()
        );
        Emulator
    }

    /// The venv's AWS CLI against the emulator, in the region the script is given.
    fn aws(&self, args: &[&str]) -> serde_json::Value {
        certflow_tests::aws_cli_in(&self.region(), args)
    }

    fn region(&self) -> String {
        std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|_| "us-east-1".into())
    }

    /// Creates a secret; its value goes through a file, not argv.
    fn create_secret(&self, dir: &Path, name: &str, value: &serde_json::Value) {
        let file = dir.join(format!("secret-{}.json", name.replace('/', "_")));
        fs::write(&file, value.to_string()).unwrap();
        let from = format!("file://{}", file.display());
        self.aws(&[
            "secretsmanager",
            "create-secret",
            "--name",
            name,
            "--secret-string",
            &from,
        ]);
        fs::remove_file(&file).unwrap();
    }
}

/// A scratch directory under cargo's target tmp dir (its path satisfies the
/// CertDir/KeyDir allowedPattern, which refuses components starting with '.').
fn scratch(label: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("install-{label}-"))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

fn unique(label: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "certflow-test/{label}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ------------------------------------------------------------------------
// Certificate material
// ------------------------------------------------------------------------

/// What certflow's export step stores: certificate, chain, encrypted key and
/// the passphrase that decrypts it.
#[derive(Clone)]
struct Material {
    certificate: String,
    chain: String,
    encrypted_key: String,
    passphrase: String,
    serial: String,
    certificate_arn: String,
}

fn random_passphrase(dir: &Path) -> String {
    // 32 random bytes, base64: no '#', '$' or '%' (which ACM refuses).
    openssl(dir, &["rand", "-base64", "32"]).trim().to_string()
}

fn openssl_serial(dir: &Path, cert_file: &str) -> String {
    openssl(dir, &["x509", "-in", cert_file, "-noout", "-serial"])
        .trim()
        .trim_start_matches("serial=")
        .to_string()
}

/// A CA and a leaf certificate signed by it, the leaf key generated with
/// `genpkey_args` and encrypted as PKCS#8 (AES-256-CBC) with a random
/// passphrase, as ACM exports it.
fn generate(dir: &Path, genpkey_args: &[&str], cn: &str) -> Material {
    let pass = random_passphrase(dir);
    fs::write(dir.join("pass"), &pass).unwrap();
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ca.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=certflow test CA",
            "-days",
            "3",
            "-out",
            "ca.pem",
        ],
    );
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey_args);
    args.extend_from_slice(&["-out", "leaf.key"]);
    openssl(dir, &args);
    let subj = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req", "-new", "-key", "leaf.key", "-subj", &subj, "-out", "leaf.csr",
        ],
    );
    let serial = format!("0x{}", openssl(dir, &["rand", "-hex", "16"]).trim());
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &serial,
            "-days",
            "2",
            "-out",
            "leaf.pem",
        ],
    );
    openssl(
        dir,
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-in",
            "leaf.key",
            "-out",
            "leaf.enc.pem",
            "-passout",
            "file:pass",
        ],
    );
    let m = Material {
        certificate: fs::read_to_string(dir.join("leaf.pem")).unwrap(),
        chain: fs::read_to_string(dir.join("ca.pem")).unwrap(),
        encrypted_key: fs::read_to_string(dir.join("leaf.enc.pem")).unwrap(),
        passphrase: pass,
        serial: acm_serial(&openssl_serial(dir, "leaf.pem")),
        certificate_arn: "arn:aws:acm:us-east-1:123456789012:certificate/generated".into(),
    };
    for f in [
        "pass",
        "ca.key",
        "ca.pem",
        "leaf.key",
        "leaf.csr",
        "leaf.pem",
        "leaf.enc.pem",
    ] {
        fs::remove_file(dir.join(f)).unwrap();
    }
    assert!(m.encrypted_key.contains("BEGIN ENCRYPTED PRIVATE KEY"));
    m
}

/// An exportable certificate from the emulator's ACM, exported with a random
/// passphrase: the RSA key exactly as ACM hands it over.
fn acm_export(emu: &Emulator, dir: &Path) -> Material {
    let pass = random_passphrase(dir);
    let domain = format!(
        "{}.example.com",
        unique("acm").replace(['/', '_'], "-").to_lowercase()
    );
    let requested = emu.aws(&[
        "acm",
        "request-certificate",
        "--domain-name",
        &domain,
        "--key-algorithm",
        "RSA_2048",
        "--options",
        "Export=ENABLED",
    ]);
    let arn = requested["CertificateArn"].as_str().unwrap().to_string();
    let pass_file = dir.join("acm-pass");
    fs::write(&pass_file, &pass).unwrap();
    let exported = emu.aws(&[
        "acm",
        "export-certificate",
        "--certificate-arn",
        &arn,
        "--passphrase",
        &format!("fileb://{}", pass_file.display()),
    ]);
    fs::remove_file(&pass_file).unwrap();
    let described = emu.aws(&["acm", "describe-certificate", "--certificate-arn", &arn]);
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let m = Material {
        certificate: text(&exported["Certificate"]),
        chain: text(&exported["CertificateChain"]),
        encrypted_key: text(&exported["PrivateKey"]),
        passphrase: pass,
        // Verbatim. Real ACM writes lowercase hex pairs with colons; moto 5.2.5
        // writes the serial in decimal.
        serial: text(&described["Certificate"]["Serial"]),
        certificate_arn: arn,
    };
    assert!(
        m.encrypted_key.contains("BEGIN ENCRYPTED PRIVATE KEY"),
        "the emulator exported an encrypted PKCS#8 key"
    );
    m
}

/// Stores the passphrase and bundle secrets in the emulator; returns their
/// names.
fn store(emu: &Emulator, dir: &Path, label: &str, m: &Material) -> (String, String) {
    let base = unique(label);
    let pass_name = format!("{base}/passphrase");
    let bundle_name = format!("{base}/bundle");
    emu.create_secret(dir, &pass_name, &json!({ "passphrase": m.passphrase }));
    emu.create_secret(
        dir,
        &bundle_name,
        &json!({
            "certificate": m.certificate,
            "certificate_chain": m.chain,
            "private_key": m.encrypted_key,
            "serial": m.serial,
            "not_after": "2099-01-01T00:00:00Z",
            "certificate_arn": m.certificate_arn,
            "job_id": base,
        }),
    );
    (bundle_name, pass_name)
}

// ------------------------------------------------------------------------
// Running the script like the SSM agent
// ------------------------------------------------------------------------

struct Target {
    cert_dir: PathBuf,
    key_dir: PathBuf,
}

impl Target {
    /// `<root>/etc/ssl/{certs,private}`, not created: the script must create them.
    fn under(root: &Path) -> Target {
        Target {
            cert_dir: root.join("etc/ssl/certs"),
            key_dir: root.join("etc/ssl/private"),
        }
    }

    fn fullchain(&self, name: &str) -> PathBuf {
        self.cert_dir.join(format!("{name}-fullchain.pem"))
    }

    fn chain(&self, name: &str) -> PathBuf {
        self.cert_dir.join(format!("{name}-chain.pem"))
    }

    fn privkey(&self, name: &str) -> PathBuf {
        self.key_dir.join(format!("{name}-privkey.pem"))
    }

    fn files(&self, name: &str) -> [PathBuf; 3] {
        [self.fullchain(name), self.chain(name), self.privkey(name)]
    }
}

struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Writes the rendered script to `_script.sh` (mode 0755) and runs it as the
/// agent does: `sh -c <path>`.
fn run_script(dir: &Path, script: &str, env: &[(&str, &str)]) -> Run {
    let file = dir.join("_script.sh");
    fs::write(&file, script).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&file)
        .current_dir(dir)
        .env("PATH", script_path_var())
        .env_remove("CERTFLOW_RELOAD_CMD")
        .env_remove("CERTFLOW_JSON_PARSER");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    Run {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One install: render with the given parameters and run.
#[allow(clippy::too_many_arguments)]
fn install(
    doc: &Document,
    emu: &Emulator,
    dir: &Path,
    target: &Target,
    name: &str,
    secrets: &(String, String),
    reload_service: &str,
    env: &[(&str, &str)],
) -> Run {
    let region = emu.region();
    let script = doc
        .render(&[
            ("CertName", name),
            ("BundleSecretId", &secrets.0),
            ("PassphraseSecretId", &secrets.1),
            ("Region", &region),
            ("CertDir", target.cert_dir.to_str().unwrap()),
            ("KeyDir", target.key_dir.to_str().unwrap()),
            ("ReloadService", reload_service),
        ])
        .unwrap_or_else(|e| panic!("refused: {e}"));
    run_script(dir, &script, env)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn pem(text: &str) -> String {
    let t = text.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!("{t}\n")
    }
}

/// A serial in ACM's format (DescribeCertificate `Serial`): lowercase hex
/// pairs joined by colons.
fn acm_serial(openssl_hex: &str) -> String {
    let mut hex = openssl_hex.to_ascii_lowercase();
    if hex.len() % 2 == 1 {
        hex.insert(0, '0');
    }
    hex.as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":")
}

/// Output must never carry secret material.
fn assert_no_secrets(run: &Run, m: &Material) {
    let all = run.all();
    assert!(
        !all.contains(&m.passphrase),
        "the passphrase leaked into the output"
    );
    assert!(
        !all.contains("PRIVATE KEY"),
        "key material leaked into the output:\n{all}"
    );
    assert!(!all.contains("BEGIN"), "PEM leaked into the output:\n{all}");
}

/// The three files are there, with their modes, the chain and the key that
/// matches the certificate, and the output names the installed serial.
fn assert_installed(dir: &Path, target: &Target, name: &str, m: &Material, run: &Run) {
    assert!(
        run.success,
        "install failed:\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert_no_secrets(run, m);

    let fullchain = fs::read_to_string(target.fullchain(name)).unwrap();
    let chain = fs::read_to_string(target.chain(name)).unwrap();
    let key = fs::read_to_string(target.privkey(name)).unwrap();
    assert_eq!(
        fullchain,
        pem(&m.certificate) + &pem(&m.chain),
        "fullchain = cert + chain"
    );
    assert_eq!(chain, pem(&m.chain), "chain file");
    assert!(
        key.contains("BEGIN PRIVATE KEY"),
        "the key is stored decrypted (PKCS#8)"
    );
    assert!(!key.contains("ENCRYPTED"));

    assert_eq!(mode(&target.fullchain(name)), 0o644, "fullchain mode");
    assert_eq!(mode(&target.chain(name)), 0o644, "chain mode");
    assert_eq!(mode(&target.privkey(name)), 0o600, "privkey mode");

    let fullchain_path = target.fullchain(name);
    let cert_pub = openssl(
        dir,
        &[
            "x509",
            "-in",
            fullchain_path.to_str().unwrap(),
            "-pubkey",
            "-noout",
        ],
    );
    let key_path = target.privkey(name);
    let key_pub = openssl(dir, &["pkey", "-in", key_path.to_str().unwrap(), "-pubout"]);
    assert_eq!(cert_pub, key_pub, "the installed key is the certificate's");

    let serial = openssl_serial(dir, fullchain_path.to_str().unwrap());
    fs::write(dir.join("expected.pem"), &m.certificate).unwrap();
    assert_eq!(
        serial,
        openssl_serial(dir, "expected.pem"),
        "the installed certificate"
    );
    fs::remove_file(dir.join("expected.pem")).unwrap();
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with(SERIAL_PREFIX))
        .collect();
    assert_eq!(
        lines,
        [format!("{SERIAL_PREFIX}{serial}")],
        "exactly one serial line:\n{}",
        run.stdout
    );
    assert!(
        !run.stderr.contains("warning"),
        "unexpected warning: {}",
        run.stderr
    );

    // Nothing left behind: no temp files, no work directory.
    for d in [&target.cert_dir, &target.key_dir] {
        for entry in fs::read_dir(d).unwrap() {
            let file = entry.unwrap().file_name().into_string().unwrap();
            let expected = file.ends_with(".pem")
                || file.ends_with(".pem.previous")
                || file.starts_with(".certflow-") && file.ends_with(".lock");
            assert!(expected, "left behind in {}: {file}", d.display());
        }
    }
}

fn assert_dir_modes(target: &Target) {
    assert_eq!(mode(&target.cert_dir), 0o755, "new CertDir mode");
    assert_eq!(mode(&target.key_dir), 0o700, "new KeyDir mode");
}

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
            ("BundleSecretId", "certflow/www/bundle"),
            ("PassphraseSecretId", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:certflow/www/passphrase-AbCdEf"),
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
    let good: [(&str, &str); 4] = [
        ("CertName", "www.example.com"),
        ("BundleSecretId", "certflow/www.example.com/bundle"),
        ("PassphraseSecretId", "certflow/www.example.com/passphrase"),
        ("Region", "us-east-1"),
    ];
    let with = |name: &'static str, value: &'static str| {
        let mut v: Vec<(&str, &str)> = good.to_vec();
        v.push((name, value));
        v
    };
    assert!(doc.render(&good).is_ok());
    for value in ["a", "web-01.example.com_2", "A9", &"a".repeat(64)] {
        let v = [("CertName", value), good[1], good[2], good[3]];
        assert!(
            doc.render(&v).is_ok(),
            "CertName {value:?} should be accepted"
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
        ("BundleSecretId", "certflow/x bundle".into()),
        ("BundleSecretId", "x'$(id)'".into()),
        ("PassphraseSecretId", "--debug".into()),
        ("PassphraseSecretId", String::new()),
        ("ReloadService", "nginx; reboot".into()),
        ("ReloadService", "-x".into()),
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

// ------------------------------------------------------------------------
// Tests against the emulator
// ------------------------------------------------------------------------

#[test]
fn installs_rsa_key_exported_by_the_emulators_acm() {
    let emu = Emulator::get();
    let doc = load_document();
    let tmp = scratch("acm-rsa");
    let m = acm_export(&emu, tmp.path());
    let secrets = store(&emu, tmp.path(), "acm-rsa", &m);
    let target = Target::under(&tmp.path().join("root"));
    let run = install(
        &doc,
        &emu,
        tmp.path(),
        &target,
        "www.example.com",
        &secrets,
        "",
        &[],
    );
    assert_installed(tmp.path(), &target, "www.example.com", &m, &run);
    assert_dir_modes(&target);
}

#[test]
fn installs_generated_rsa_2048_key() {
    let emu = Emulator::get();
    let doc = load_document();
    let tmp = scratch("rsa");
    let m = generate(
        tmp.path(),
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        "rsa.example.com",
    );
    let secrets = store(&emu, tmp.path(), "rsa", &m);
    let target = Target::under(&tmp.path().join("root"));
    let run = install(&doc, &emu, tmp.path(), &target, "rsa", &secrets, "", &[]);
    assert_installed(tmp.path(), &target, "rsa", &m, &run);
    assert_dir_modes(&target);
}

#[test]
fn installs_ecdsa_p256_key_where_openssl_rsa_fails() {
    let emu = Emulator::get();
    let doc = load_document();
    let tmp = scratch("ecdsa");
    let m = generate(
        tmp.path(),
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "ec.example.com",
    );
    // The reference solution's `openssl rsa` cannot read this key.
    fs::write(tmp.path().join("k.pem"), &m.encrypted_key).unwrap();
    fs::write(tmp.path().join("p"), &m.passphrase).unwrap();
    let rsa = run(Command::new("openssl")
        .current_dir(tmp.path())
        .args(["rsa", "-in", "k.pem", "-passin", "file:p", "-noout"]));
    assert!(
        !rsa.status.success(),
        "`openssl rsa` should fail on an EC key"
    );
    fs::remove_file(tmp.path().join("k.pem")).unwrap();
    fs::remove_file(tmp.path().join("p")).unwrap();

    let secrets = store(&emu, tmp.path(), "ecdsa", &m);
    let target = Target::under(&tmp.path().join("root"));
    let run = install(
        &doc,
        &emu,
        tmp.path(),
        &target,
        "ec.example.com",
        &secrets,
        "",
        &[],
    );
    assert_installed(tmp.path(), &target, "ec.example.com", &m, &run);
    let key = target.privkey("ec.example.com");
    let text = openssl(
        tmp.path(),
        &["pkey", "-in", key.to_str().unwrap(), "-noout", "-text"],
    );
    assert!(
        text.contains("prime256v1") || text.contains("P-256"),
        "{text}"
    );
}

#[test]
fn installs_ecdsa_p384_key_with_the_jq_parser() {
    let emu = Emulator::get();
    if Command::new("jq").arg("--version").output().is_err() {
        eprintln!("jq is not installed: the jq fallback was not exercised");
        return;
    }
    let doc = load_document();
    let tmp = scratch("ecdsa384");
    let m = generate(
        tmp.path(),
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        "ec384.example.com",
    );
    let secrets = store(&emu, tmp.path(), "ecdsa384", &m);
    let target = Target::under(&tmp.path().join("root"));
    let run = install(
        &doc,
        &emu,
        tmp.path(),
        &target,
        "ec384",
        &secrets,
        "",
        &[("CERTFLOW_JSON_PARSER", "jq")],
    );
    assert_installed(tmp.path(), &target, "ec384", &m, &run);
}

/// A fake `systemctl` that records its arguments and exits with `code`.
fn fake_reload(dir: &Path, code: i32) -> (PathBuf, PathBuf) {
    let log = dir.join(format!("reload-{code}.log"));
    let bin = dir.join(format!("fake-systemctl-{code}"));
    fs::write(
        &bin,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >>'{}'\nexit {code}\n",
            log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    (bin, log)
}

#[test]
fn failed_reload_restores_the_previous_files_and_a_good_reload_keeps_the_new() {
    let emu = Emulator::get();
    let doc = load_document();
    let tmp = scratch("rollback");
    let dir = tmp.path();
    let v1 = generate(
        dir,
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "v1",
    );
    let v2 = generate(
        dir,
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        "v2",
    );
    let s1 = store(&emu, dir, "rollback-v1", &v1);
    let s2 = store(&emu, dir, "rollback-v2", &v2);
    let target = Target::under(&dir.join("root"));
    let name = "app";

    let run = install(&doc, &emu, dir, &target, name, &s1, "", &[]);
    assert_installed(dir, &target, name, &v1, &run);
    let before: Vec<Vec<u8>> = target
        .files(name)
        .iter()
        .map(|f| fs::read(f).unwrap())
        .collect();

    // v2 with a reload that fails: back to v1, non-zero exit, a clear message.
    let (failing, failing_log) = fake_reload(dir, 1);
    let run = install(
        &doc,
        &emu,
        dir,
        &target,
        name,
        &s2,
        "nginx",
        &[("CERTFLOW_RELOAD_CMD", failing.to_str().unwrap())],
    );
    assert!(
        !run.success,
        "a failed reload must fail the command:\n{}",
        run.all()
    );
    assert!(
        run.stderr.contains("reloading nginx failed") && run.stderr.contains("restored"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains(SERIAL_PREFIX), "no serial on failure");
    assert_no_secrets(&run, &v2);
    let after: Vec<Vec<u8>> = target
        .files(name)
        .iter()
        .map(|f| fs::read(f).unwrap())
        .collect();
    assert_eq!(before, after, "the v1 files are back");
    assert_eq!(mode(&target.privkey(name)), 0o600);
    assert_eq!(mode(&target.fullchain(name)), 0o644);
    assert_eq!(mode(&target.chain(name)), 0o644);
    assert_eq!(
        fs::read_to_string(&failing_log).unwrap(),
        "reload-or-restart nginx\nreload-or-restart nginx\n",
        "reloaded with v2, then again with the restored v1"
    );

    // v2 with a reload that works: v2 stays, v1 kept as .previous.
    let (working, working_log) = fake_reload(dir, 0);
    let run = install(
        &doc,
        &emu,
        dir,
        &target,
        name,
        &s2,
        "nginx",
        &[("CERTFLOW_RELOAD_CMD", working.to_str().unwrap())],
    );
    assert_installed(dir, &target, name, &v2, &run);
    assert_eq!(
        fs::read_to_string(&working_log).unwrap(),
        "reload-or-restart nginx\n"
    );
    for (file, old) in target.files(name).iter().zip(&before) {
        let previous = PathBuf::from(format!("{}.previous", file.display()));
        assert_eq!(&fs::read(&previous).unwrap(), old, "{}", previous.display());
    }
    assert_eq!(
        mode(Path::new(&format!(
            "{}.previous",
            target.privkey(name).display()
        ))),
        0o600
    );

    // The same v2 again (a retried command): nothing changes and .previous
    // still holds v1.
    let run = install(&doc, &emu, dir, &target, name, &s2, "", &[]);
    assert_installed(dir, &target, name, &v2, &run);
    for (file, old) in target.files(name).iter().zip(&before) {
        let previous = PathBuf::from(format!("{}.previous", file.display()));
        assert_eq!(&fs::read(&previous).unwrap(), old);
    }
}

#[test]
fn failed_reload_on_a_first_install_removes_the_new_files() {
    let emu = Emulator::get();
    let doc = load_document();
    let tmp = scratch("rollback-first");
    let dir = tmp.path();
    let m = generate(
        dir,
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "first",
    );
    let secrets = store(&emu, dir, "rollback-first", &m);
    let target = Target::under(&dir.join("root"));
    let run = install(
        &doc,
        &emu,
        dir,
        &target,
        "first",
        &secrets,
        "nginx",
        &[("CERTFLOW_RELOAD_CMD", "false")],
    );
    assert!(!run.success);
    assert!(
        run.stderr.contains("reloading nginx failed"),
        "{}",
        run.stderr
    );
    for f in target.files("first") {
        assert!(!f.exists(), "{} should have been removed", f.display());
    }
}

#[test]
fn mismatched_key_and_certificate_installs_nothing() {
    let emu = Emulator::get();
    let doc = load_document();
    let tmp = scratch("mismatch");
    let dir = tmp.path();
    let a = generate(
        dir,
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "a",
    );
    let b = generate(
        dir,
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "b",
    );
    let mixed = Material {
        encrypted_key: a.encrypted_key.clone(),
        passphrase: a.passphrase.clone(),
        ..b.clone()
    };
    let secrets = store(&emu, dir, "mismatch", &mixed);
    let target = Target::under(&dir.join("root"));
    let run = install(&doc, &emu, dir, &target, "mixed", &secrets, "", &[]);
    assert!(
        !run.success,
        "a mismatched bundle must fail:\n{}",
        run.all()
    );
    assert!(run.stderr.contains("do not match"), "{}", run.stderr);
    assert!(!run.stdout.contains(SERIAL_PREFIX));
    assert_no_secrets(&run, &mixed);
    for f in target.files("mixed") {
        assert!(!f.exists(), "{} must not be written", f.display());
    }
    let left: Vec<_> = fs::read_dir(&target.key_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| !f.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "left in KeyDir: {left:?}");
}

#[test]
fn wrong_passphrase_and_missing_secret_fail_cleanly() {
    let emu = Emulator::get();
    let doc = load_document();
    let tmp = scratch("badpass");
    let dir = tmp.path();
    let m = generate(
        dir,
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "p",
    );
    let wrong = Material {
        passphrase: random_passphrase(dir),
        ..m.clone()
    };
    let secrets = store(&emu, dir, "badpass", &wrong);
    let target = Target::under(&dir.join("root"));
    let run = install(&doc, &emu, dir, &target, "p", &secrets, "", &[]);
    assert!(!run.success);
    assert!(
        run.stderr.contains("cannot decrypt the private key"),
        "{}",
        run.stderr
    );
    assert_no_secrets(&run, &wrong);
    assert!(!target.privkey("p").exists());

    let missing = (unique("missing") + "/bundle", secrets.1.clone());
    let run = install(&doc, &emu, dir, &target, "p", &missing, "", &[]);
    assert!(!run.success);
    assert!(run.stderr.contains("cannot read secret"), "{}", run.stderr);
    assert!(run.stderr.contains("BundleSecretId"), "{}", run.stderr);
}

#[test]
fn dot_dot_inside_a_name_passes_the_pattern_but_the_script_refuses_it() {
    // `a..b` matches CertName's allowedPattern (the engine's pattern too); the
    // script refuses it anyway, before it reads any secret.
    let doc = load_document();
    let tmp = scratch("dotdot");
    let target = Target::under(&tmp.path().join("root"));
    let script = doc
        .render(&[
            ("CertName", "a..b"),
            ("BundleSecretId", "unused/bundle"),
            ("PassphraseSecretId", "unused/passphrase"),
            ("Region", "us-east-1"),
            ("CertDir", target.cert_dir.to_str().unwrap()),
            ("KeyDir", target.key_dir.to_str().unwrap()),
        ])
        .expect("a..b matches the allowedPattern");
    let run = run_script(tmp.path(), &script, &[]);
    assert!(!run.success);
    assert!(
        run.stderr.contains("CertName must not contain '..'"),
        "{}",
        run.stderr
    );
    assert!(!target.cert_dir.exists(), "nothing was created");
}

#[test]
fn a_bundle_serial_that_differs_from_the_certificate_is_a_warning() {
    let emu = Emulator::get();
    let doc = load_document();
    let tmp = scratch("serial");
    let dir = tmp.path();
    let m = generate(
        dir,
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "s",
    );
    let odd = Material {
        serial: "0a:0b:0c".into(),
        ..m.clone()
    };
    let secrets = store(&emu, dir, "serial", &odd);
    let target = Target::under(&dir.join("root"));
    let run = install(&doc, &emu, dir, &target, "s", &secrets, "", &[]);
    assert!(run.success, "{}", run.all());
    assert!(
        run.stderr
            .contains("warning: the bundle says serial 0a:0b:0c"),
        "{}",
        run.stderr
    );
    let expected = format!(
        "{SERIAL_PREFIX}{}",
        m.serial.replace(':', "").to_uppercase()
    );
    assert!(run.stdout.lines().any(|l| l == expected), "{}", run.stdout);
}

/// Every program the script runs that sees secret material, replaced by a
/// shim that logs its command line and then runs the real one: no command
/// line may carry the passphrase or any part of a key (argv is public in `ps`).
#[test]
fn no_secret_reaches_a_command_line() {
    let emu = Emulator::get();
    let doc = load_document();
    let tmp = scratch("argv");
    let dir = tmp.path();
    let m = generate(
        dir,
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        "argv",
    );
    let secrets = store(&emu, dir, "argv", &m);

    let shims = dir.join("shims");
    fs::create_dir(&shims).unwrap();
    let log = dir.join("argv.log");
    let path = script_path_var();
    let find = |prog: &str| {
        std::env::split_paths(&path)
            .map(|d| d.join(prog))
            .find(|p| p.is_file())
    };
    let mut shimmed = Vec::new();
    for prog in [
        "aws", "openssl", "python3", "jq", "cat", "cp", "mv", "cmp", "tr", "wc", "sed", "awk",
        "mktemp", "chmod", "rm", "stat", "mkdir", "dirname", "basename", "flock",
    ] {
        let Some(real) = find(prog) else { continue };
        let shim = shims.join(prog);
        fs::write(
            &shim,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"{prog} $*\" >>'{}'\nexec '{}' \"$@\"\n",
                log.display(),
                real.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&shim, fs::Permissions::from_mode(0o755)).unwrap();
        shimmed.push(prog);
    }
    let shim_path = format!("{}:{path}", shims.display());

    let mut parsers = vec!["python3"];
    if find("jq").is_some() {
        parsers.push("jq");
    }
    for parser in parsers {
        let target = Target::under(&dir.join(format!("root-{parser}")));
        let region = emu.region();
        let script = doc
            .render(&[
                ("CertName", "argv"),
                ("BundleSecretId", &secrets.0),
                ("PassphraseSecretId", &secrets.1),
                ("Region", &region),
                ("CertDir", target.cert_dir.to_str().unwrap()),
                ("KeyDir", target.key_dir.to_str().unwrap()),
            ])
            .unwrap();
        let _ = fs::remove_file(&log);
        let run = run_script(
            dir,
            &script,
            &[("PATH", &shim_path), ("CERTFLOW_JSON_PARSER", parser)],
        );
        assert_installed(dir, &target, "argv", &m, &run);

        let argv = fs::read_to_string(&log).unwrap();
        for expected in [
            "aws secretsmanager get-secret-value",
            "openssl pkey",
            parser,
        ] {
            assert!(
                argv.contains(expected),
                "shims not used ({expected}):\n{argv}"
            );
        }
        assert!(
            !argv.contains(&m.passphrase),
            "the passphrase was on a command line"
        );
        assert!(
            !argv.contains("BEGIN") && !argv.contains("PRIVATE"),
            "{argv}"
        );
        let installed = fs::read_to_string(target.privkey("argv")).unwrap();
        for body in m.encrypted_key.lines().chain(installed.lines()) {
            if body.len() >= 16 && !body.starts_with("-----") {
                assert!(!argv.contains(body), "key material on a command line");
            }
        }
    }
    assert!(shimmed.len() >= 10, "shimmed only {shimmed:?}");
}
