//! The three files switch together: a failed reload, or a failure injected after any
//! of the three moves, leaves them as they were.

use std::fs;
use std::path::{Path, PathBuf};

use crate::document::load_document;
use crate::harness::*;
use crate::material::*;


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
    let secret = store(&emu, dir, "rollback-first", &m);
    let target = Target::under(&dir.join("root"));
    let run = install(
        &doc,
        &emu,
        dir,
        &target,
        "first",
        &secret,
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
