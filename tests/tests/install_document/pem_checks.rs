//! What reaches the installed files: only re-encoded PEM blocks, and only a chain that
//! belongs to the certificate.

use std::fs;

use crate::document::load_document;
use crate::harness::*;
use crate::material::*;

fn ec(dir: &std::path::Path, cn: &str) -> Material {
    generate(
        dir,
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        cn,
    )
}

#[test]
fn text_around_the_pem_blocks_never_reaches_the_files() {
    let emu = Emulator::get();
    let doc = load_document();
    let tmp = scratch("reencode");
    let dir = tmp.path();
    let m = ec(dir, "clean");
    let noisy = Material {
        certificate: format!(
            "Bag Attributes\n    friendlyName: x\nsubject=/CN=clean\n{}trailing words\n",
            m.certificate
        ),
        chain: format!("# the issuer\n{}\nnot PEM at all\n", m.chain),
        ..m.clone()
    };
    let secret = store(&emu, dir, "reencode", &noisy);
    let target = Target::under(&dir.join("root"));
    let run = install(&doc, &emu, dir, &target, "clean", &secret, "", &[]);
    // The files hold exactly the clean blocks.
    assert_installed(dir, &target, "clean", &m, &run);
    for f in target.files("clean") {
        let text = fs::read_to_string(&f).unwrap();
        for junk in [
            "Bag Attributes",
            "subject=",
            "trailing",
            "# the issuer",
            "not PEM",
        ] {
            assert!(!text.contains(junk), "{junk:?} reached {}", f.display());
        }
    }
}

#[test]
fn a_foreign_block_or_a_chain_of_another_certificate_installs_nothing() {
    let emu = Emulator::get();
    let doc = load_document();
    let tmp = scratch("foreign");
    let dir = tmp.path();
    let m = ec(dir, "mine");
    let other = ec(dir, "other");
    let target = Target::under(&dir.join("root"));
    let cases = [
        (
            "key-in-chain",
            Material {
                chain: format!("{}{}", m.chain, m.encrypted_key),
                ..m.clone()
            },
            "holds a PEM block that is not a CERTIFICATE",
        ),
        (
            "two-certificates",
            Material {
                certificate: format!("{}{}", m.certificate, other.certificate),
                ..m.clone()
            },
            "must be exactly one PEM CERTIFICATE block",
        ),
        (
            "foreign-chain",
            Material {
                // Another certificate where the issuer should be.
                chain: other.certificate.clone(),
                ..m.clone()
            },
            "is not the issuer of the one before it",
        ),
        (
            "same-name-ca",
            Material {
                // Another CA of the same name: the names match, the signature does not.
                chain: other.chain.clone(),
                ..m.clone()
            },
            "did not sign the one before it",
        ),
    ];
    for (label, bad, reason) in cases {
        let secret = store(&emu, dir, label, &bad);
        let run = install(&doc, &emu, dir, &target, "mine", &secret, "", &[]);
        assert!(!run.success, "{label}: must fail:\n{}", run.all());
        assert!(run.stderr.contains(reason), "{label}:\n{}", run.stderr);
        assert_no_secrets(&run, &bad);
        for f in target.files("mine") {
            assert!(!f.exists(), "{label}: {} written", f.display());
        }
        assert_nothing_left_behind(dir, &target);
    }
}
