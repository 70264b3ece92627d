//! Certificate material: generated with openssl, or exported by the emulator's ACM,
//! and stored as certflow's export step stores it.

use std::fs;
use std::path::Path;

use serde_json::json;

use crate::harness::{openssl, unique, Emulator};

// ------------------------------------------------------------------------
// Certificate material
// ------------------------------------------------------------------------

/// What certflow's export step stores: certificate, chain, encrypted key and
/// the passphrase that decrypts it.
#[derive(Clone)]
pub(crate) struct Material {
    pub(crate) certificate: String,
    pub(crate) chain: String,
    pub(crate) encrypted_key: String,
    pub(crate) passphrase: String,
    pub(crate) serial: String,
    pub(crate) certificate_arn: String,
}

pub(crate) fn random_passphrase(dir: &Path) -> String {
    // 32 random bytes, base64: no '#', '$' or '%' (which ACM refuses).
    openssl(dir, &["rand", "-base64", "32"]).trim().to_string()
}

pub(crate) fn openssl_serial(dir: &Path, cert_file: &str) -> String {
    openssl(dir, &["x509", "-in", cert_file, "-noout", "-serial"])
        .trim()
        .trim_start_matches("serial=")
        .to_string()
}

/// A CA and a leaf certificate signed by it, the leaf key generated with
/// `genpkey_args` and encrypted as PKCS#8 (AES-256-CBC) with a random
/// passphrase, as ACM exports it.
pub(crate) fn generate(dir: &Path, genpkey_args: &[&str], cn: &str) -> Material {
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
pub(crate) fn acm_export(emu: &Emulator, dir: &Path) -> Material {
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

/// Stores `m` as certflow's export step does: one secret holding the passphrase and the
/// bundle together; returns its name.
pub(crate) fn store(emu: &Emulator, dir: &Path, label: &str, m: &Material) -> String {
    let name = unique(label);
    emu.create_secret(dir, &name, &secret_json(m, &name));
    name
}

/// The secret's JSON for `m`.
pub(crate) fn secret_json(m: &Material, job_id: &str) -> serde_json::Value {
    json!({
        "passphrase": m.passphrase,
        "certificate": m.certificate,
        "certificate_chain": m.chain,
        "private_key": m.encrypted_key,
        "serial": m.serial,
        "not_after": "2099-01-01T00:00:00Z",
        "certificate_arn": m.certificate_arn,
        "job_id": job_id,
    })
}

/// A serial in ACM's format (DescribeCertificate `Serial`): lowercase hex
/// pairs joined by colons.
pub(crate) fn acm_serial(openssl_hex: &str) -> String {
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
