//! Installs against the emulator: key types, parsers, bad material, argv hygiene.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::document::load_document;
use crate::harness::*;
use crate::material::*;

// ------------------------------------------------------------------------
// Tests against the emulator
// ------------------------------------------------------------------------

/// ACM's export format (an RSA key as encrypted PKCS#8, its certificate) installs. The
/// emulator's ACM (moto 5.2.5) signs its certificates with a key that is not its chain's,
/// so with the chain it hands over the install is refused by the chain's signature check;
/// without a chain, what ACM's format needs of the document is all exercised.
#[test]
fn installs_rsa_key_exported_by_the_emulators_acm() {
    let emu = Emulator::get();
    let doc = load_document();
    let tmp = scratch("acm-rsa");
    let exported = acm_export(&emu, tmp.path());
    let target = Target::under(&tmp.path().join("root"));

    let secret = store(&emu, tmp.path(), "acm-rsa-chain", &exported);
    let run = install(
        &doc,
        &emu,
        tmp.path(),
        &target,
        "www.example.com",
        &secret,
        "",
        &[],
    );
    assert!(
        !run.success,
        "moto's chain does not sign its leaf:\n{}",
        run.all()
    );
    assert!(
        run.stderr.contains("did not sign the one before it"),
        "{}",
        run.stderr
    );
    for f in target.files("www.example.com") {
        assert!(!f.exists(), "{} written", f.display());
    }

    let m = Material {
        chain: String::new(),
        ..exported
    };
    let secret = store(&emu, tmp.path(), "acm-rsa", &m);
    let run = install(
        &doc,
        &emu,
        tmp.path(),
        &target,
        "www.example.com",
        &secret,
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
    let secret = store(&emu, tmp.path(), "rsa", &m);
    let target = Target::under(&tmp.path().join("root"));
    let run = install(&doc, &emu, tmp.path(), &target, "rsa", &secret, "", &[]);
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

    let secret = store(&emu, tmp.path(), "ecdsa", &m);
    let target = Target::under(&tmp.path().join("root"));
    let run = install(
        &doc,
        &emu,
        tmp.path(),
        &target,
        "ec.example.com",
        &secret,
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
    let secret = store(&emu, tmp.path(), "ecdsa384", &m);
    let target = Target::under(&tmp.path().join("root"));
    let run = install(
        &doc,
        &emu,
        tmp.path(),
        &target,
        "ec384",
        &secret,
        "",
        &[("CERTFLOW_JSON_PARSER", "jq")],
    );
    assert_installed(tmp.path(), &target, "ec384", &m, &run);
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
    let secret = store(&emu, dir, "mismatch", &mixed);
    let target = Target::under(&dir.join("root"));
    let run = install(&doc, &emu, dir, &target, "mixed", &secret, "", &[]);
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
    let secret = store(&emu, dir, "badpass", &wrong);
    let target = Target::under(&dir.join("root"));
    let run = install(&doc, &emu, dir, &target, "p", &secret, "", &[]);
    assert!(!run.success);
    assert!(
        run.stderr.contains("cannot decrypt the private key"),
        "{}",
        run.stderr
    );
    assert_no_secrets(&run, &wrong);
    assert!(!target.privkey("p").exists());

    let missing = unique("missing");
    let run = install(&doc, &emu, dir, &target, "p", &missing, "", &[]);
    assert!(!run.success);
    assert!(run.stderr.contains("cannot read secret"), "{}", run.stderr);
    assert!(run.stderr.contains("(SecretId)"), "{}", run.stderr);
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
            ("SecretId", "unused/secret"),
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
    let secret = store(&emu, dir, "serial", &odd);
    let target = Target::under(&dir.join("root"));
    let run = install(&doc, &emu, dir, &target, "s", &secret, "", &[]);
    assert!(run.success, "{}", run.all());
    assert!(
        run.stderr
            .contains("warning: the secret says serial 0a:0b:0c"),
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
    let secret = store(&emu, dir, "argv", &m);

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
        "mktemp", "chmod", "rm", "stat", "mkdir", "dirname", "basename", "flock", "ln", "grep",
        "find",
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
                ("SecretId", &secret),
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
        // (`grep` and `awk` name the "-----BEGIN CERTIFICATE-----" line as a pattern.)
        assert!(!argv.contains("PRIVATE"), "{argv}");
        let installed = fs::read_to_string(target.privkey("argv")).unwrap();
        for body in m.encrypted_key.lines().chain(installed.lines()) {
            if body.len() >= 16 && !body.starts_with("-----") {
                assert!(!argv.contains(body), "key material on a command line");
            }
        }
    }
    assert!(shimmed.len() >= 10, "shimmed only {shimmed:?}");
}
