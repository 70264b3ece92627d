//! What the script refuses, and that it refuses it before the AWS CLI is ever called: the
//! script runs with an `aws` on its PATH that records every call (and then runs the real
//! CLI against the emulator), and each refusal must leave that record empty. A control
//! run through the same shim shows that the shim does see the script's call.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use crate::document::{load_document, load_document_with, Document};
use crate::harness::*;

/// Renders without the `allowedPattern` check (the script's own check is under test),
/// runs with the recording `aws`, and returns the run and the call log.
pub(crate) fn run_recorded(
    doc: &Document,
    dir: &Path,
    target: &Target,
    overrides: &[(&str, &str)],
) -> (Run, std::path::PathBuf) {
    let mut values = vec![
        ("CertName", "www"),
        ("SecretId", "certflow/never-created"),
        ("Region", "us-east-1"),
        ("CertDir", target.cert_dir.to_str().unwrap()),
        ("KeyDir", target.key_dir.to_str().unwrap()),
    ];
    values.extend_from_slice(overrides);
    let script = doc.render_unchecked(&values);
    let log = dir.join(format!("aws-calls-{}.log", unique("r").replace('/', "-")));
    let path = recording_aws(dir, &log);
    let run = run_script(dir, &script, &[("PATH", &path)]);
    (run, log)
}

/// The run failed with a refusal naming `parameter` and `reason`, and the AWS CLI was
/// never called.
pub(crate) fn assert_refused(run: &Run, log: &Path, parameter: &str, reason: &str) {
    assert!(!run.success, "must be refused:\n{}", run.all());
    let wanted = format!("refusing {parameter}: ");
    assert!(
        run.stderr.contains(&wanted) && run.stderr.contains(reason),
        "expected `{wanted}…{reason}`:\n{}",
        run.stderr
    );
    assert_no_aws_call(log, run);
    assert!(!run.stdout.contains(SERIAL_PREFIX));
}

#[test]
fn a_url_as_secret_id_is_refused_by_the_pattern_and_by_the_script_before_any_aws_call() {
    let emu = Emulator::get();
    let doc = load_document();
    let tmp = scratch("url");
    let dir = tmp.path();
    let target = Target::under(&dir.join("root"));
    for url in [
        "file:///etc/passwd",
        "fileb:///root/.ssh/id_rsa",
        "http://169.254.169.254/latest/meta-data/",
        "https://example.com/secret",
    ] {
        let err = doc
            .render(&[
                ("CertName", "www"),
                ("SecretId", url),
                ("Region", "us-east-1"),
            ])
            .expect_err("SSM refuses a URL as SecretId");
        assert_eq!(err.parameter, "SecretId");

        let (run, log) = run_recorded(&doc, dir, &target, &[("SecretId", url)]);
        assert_refused(&run, &log, "SecretId", "is a URL");
        assert!(!target.cert_dir.exists() && !target.key_dir.exists());
    }

    // Control: the same shim, a well-formed name: the script gets as far as the AWS CLI,
    // and asks for the AWSCURRENT version only.
    let region = emu.region();
    let (run, log) = run_recorded(
        &doc,
        dir,
        &target,
        &[("SecretId", "certflow/no-such-secret"), ("Region", &region)],
    );
    assert!(!run.success);
    assert!(run.stderr.contains("cannot read secret"), "{}", run.stderr);
    let calls = fs::read_to_string(&log).unwrap();
    assert!(
        calls.contains("aws secretsmanager get-secret-value")
            && calls.contains("--secret-id certflow/no-such-secret --version-stage AWSCURRENT"),
        "{calls}"
    );
}

#[test]
fn a_reload_service_outside_the_allow_list_is_refused_before_any_aws_call() {
    let doc = load_document();
    let tmp = scratch("reload-list");
    let dir = tmp.path();
    let target = Target::under(&dir.join("root"));
    for service in [
        "reboot.target",
        "debug-shell.service",
        "sshd",
        "nginx.service",
    ] {
        assert!(doc
            .render(&[
                ("CertName", "www"),
                ("SecretId", "certflow/x"),
                ("Region", "us-east-1"),
                ("ReloadService", service),
            ])
            .is_err());
        let (run, log) = run_recorded(&doc, dir, &target, &[("ReloadService", service)]);
        assert_refused(
            &run,
            &log,
            "ReloadService",
            "is not one of the services allowed when this document was deployed (nginx apache2 httpd haproxy)",
        );
    }

    // A document deployed with another list: its pattern and its script follow it.
    let custom = load_document_with(&["nginx", "php8.2-fpm"]);
    let render = |s: &str| {
        custom.render(&[
            ("CertName", "www"),
            ("SecretId", "certflow/x"),
            ("Region", "us-east-1"),
            ("ReloadService", s),
        ])
    };
    assert!(render("php8.2-fpm").is_ok());
    assert!(render("php8x2-fpm").is_err(), "a '.' matches only itself");
    assert!(render("haproxy").is_err());
    let (run, log) = run_recorded(&custom, dir, &target, &[("ReloadService", "haproxy")]);
    assert_refused(&run, &log, "ReloadService", "(nginx php8.2-fpm)");
    let (run, log) = run_recorded(&custom, dir, &target, &[("ReloadService", "php8.2-fpm")]);
    assert!(!run.success);
    assert!(!run.stderr.contains("refusing"), "{}", run.stderr);
    assert!(fs::read_to_string(&log)
        .unwrap()
        .contains("get-secret-value"));
}

#[test]
fn a_symlinked_or_non_root_writable_target_directory_is_refused_before_any_aws_call() {
    let doc = load_document();
    let tmp = scratch("dirs");
    let dir = tmp.path();
    let elsewhere = dir.join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();

    // KeyDir itself a symlink.
    let root = dir.join("a");
    let target = Target::under(&root);
    fs::create_dir_all(target.key_dir.parent().unwrap()).unwrap();
    symlink(&elsewhere, &target.key_dir).unwrap();
    let (run, log) = run_recorded(&doc, dir, &target, &[]);
    assert_refused(&run, &log, "KeyDir", "is a symlink");
    assert!(run.stderr.contains(target.key_dir.to_str().unwrap()));

    // A parent of KeyDir (and CertDir) a symlink.
    let root = dir.join("b");
    fs::create_dir(&root).unwrap();
    symlink(&elsewhere, root.join("etc")).unwrap();
    let target = Target::under(&root);
    let (run, log) = run_recorded(&doc, dir, &target, &[]);
    assert_refused(&run, &log, "CertDir", "is a symlink");

    // A parent writable by everyone (even with the sticky bit), or by its group.
    for (mode, shown) in [(0o777, "777"), (0o1777, "1777"), (0o775, "775")] {
        let root = dir.join(format!("c{shown}"));
        fs::create_dir_all(root.join("etc/ssl")).unwrap();
        fs::set_permissions(root.join("etc"), fs::Permissions::from_mode(mode)).unwrap();
        let target = Target::under(&root);
        let (run, log) = run_recorded(&doc, dir, &target, &[]);
        assert_refused(
            &run,
            &log,
            "CertDir",
            &format!("is writable by users other than root (mode {shown})"),
        );
    }

    // KeyDir owned by another user.
    let root = dir.join("d");
    let target = Target::under(&root);
    fs::create_dir_all(&target.key_dir).unwrap();
    fs::set_permissions(&target.key_dir, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&target.key_dir, Some(65534), None).unwrap();
    let (run, log) = run_recorded(&doc, dir, &target, &[]);
    assert_refused(&run, &log, "KeyDir", "is owned by uid 65534, not root");

    assert_eq!(
        fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn a_symlinked_previous_or_lock_file_is_refused_before_any_aws_call() {
    let doc = load_document();
    let tmp = scratch("links");
    let dir = tmp.path();
    let victim = dir.join("victim");
    fs::write(&victim, "root's file\n").unwrap();
    let target = Target::under(&dir.join("root"));
    fs::create_dir_all(&target.cert_dir).unwrap();
    fs::create_dir_all(&target.key_dir).unwrap();
    fs::set_permissions(&target.key_dir, fs::Permissions::from_mode(0o700)).unwrap();

    for (file, parameter, reason) in [
        (
            target.privkey("www"),
            "KeyDir",
            "-privkey.pem.previous is a symlink",
        ),
        (
            target.chain("www"),
            "CertDir",
            "-chain.pem.previous is a symlink",
        ),
        (
            target.fullchain("www"),
            "CertDir",
            "-fullchain.pem.previous is a symlink",
        ),
    ] {
        let previous = Path::new(&format!("{}.previous", file.display())).to_path_buf();
        symlink(&victim, &previous).unwrap();
        let (run, log) = run_recorded(&doc, dir, &target, &[]);
        assert_refused(&run, &log, parameter, reason);
        fs::remove_file(&previous).unwrap();
    }

    // The lock file, in the run directory.
    let run_in = run_dir(dir);
    fs::create_dir_all(&run_in).unwrap();
    fs::set_permissions(&run_in, fs::Permissions::from_mode(0o700)).unwrap();
    symlink(&victim, run_in.join("www.lock")).unwrap();
    let (run, log) = run_recorded(&doc, dir, &target, &[]);
    assert_refused(&run, &log, "CertName", "lock file");
    assert!(
        run.stderr.contains("www.lock is a symlink"),
        "{}",
        run.stderr
    );

    assert_eq!(fs::read_to_string(&victim).unwrap(), "root's file\n");
    assert_eq!(fs::read_dir(&target.cert_dir).unwrap().count(), 0);
    assert_eq!(fs::read_dir(&target.key_dir).unwrap().count(), 0);
}

#[test]
fn a_run_directory_that_is_not_tmpfs_or_not_roots_is_refused_before_any_aws_call() {
    let doc = load_document();
    let tmp = scratch("rundir");
    let dir = tmp.path();
    let target = Target::under(&dir.join("root"));
    let script = doc.render_unchecked(&[
        ("CertName", "www"),
        ("SecretId", "certflow/x"),
        ("Region", "us-east-1"),
        ("CertDir", target.cert_dir.to_str().unwrap()),
        ("KeyDir", target.key_dir.to_str().unwrap()),
    ]);
    let log = dir.join("aws-calls.log");
    let path = recording_aws(dir, &log);

    // On the scratch directory's own filesystem (the target dir: not tmpfs here).
    let fs_type = run_ok(
        std::process::Command::new("stat")
            .args(["-f", "-c", "%T"])
            .arg(dir),
    );
    if fs_type.trim() != "tmpfs" {
        let on_disk = dir.join("run");
        let run = run_script(
            dir,
            &script,
            &[
                ("PATH", &path),
                ("CERTFLOW_RUN_DIR", on_disk.to_str().unwrap()),
            ],
        );
        assert_refused(&run, &log, "CERTFLOW_RUN_DIR", "not tmpfs");
    }

    // A run directory someone else made, or made readable by others.
    let run_in = run_dir(dir);
    fs::create_dir_all(&run_in).unwrap();
    fs::set_permissions(&run_in, fs::Permissions::from_mode(0o755)).unwrap();
    let run = run_script(dir, &script, &[("PATH", &path)]);
    assert_refused(
        &run,
        &log,
        "CERTFLOW_RUN_DIR",
        "must be owned by root with mode 0700",
    );
    fs::set_permissions(&run_in, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&run_in, Some(65534), None).unwrap();
    let run = run_script(dir, &script, &[("PATH", &path)]);
    assert_refused(
        &run,
        &log,
        "CERTFLOW_RUN_DIR",
        "must be owned by root with mode 0700",
    );
}

#[test]
fn work_directories_older_than_the_command_timeout_are_swept() {
    let emu = Emulator::get();
    let doc = load_document();
    let tmp = scratch("sweep");
    let dir = tmp.path();
    let target = Target::under(&dir.join("root"));
    let run_in = run_dir(dir);
    fs::create_dir_all(&run_in).unwrap();
    fs::set_permissions(&run_in, fs::Permissions::from_mode(0o700)).unwrap();
    let (stale, fresh) = (run_in.join("work.stale123"), run_in.join("work.fresh123"));
    for d in [&stale, &fresh] {
        fs::create_dir(d).unwrap();
        fs::write(d.join("key.pem"), "left by a killed run").unwrap();
    }
    // Older than timeoutSeconds (600 s) plus the margin.
    run_ok(
        std::process::Command::new("touch")
            .args(["-d", "20 minutes ago"])
            .arg(&stale),
    );
    let region = emu.region();
    let (run, _) = run_recorded(&doc, dir, &target, &[("Region", &region)]);
    assert!(run.stderr.contains("cannot read secret"), "{}", run.stderr);
    assert!(!stale.exists(), "the stale work directory is swept");
    assert!(
        fresh.exists(),
        "a recent one may belong to a running install"
    );
}
