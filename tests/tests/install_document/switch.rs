//! The three files switch together: a failed reload, or a failure injected after any
//! of the three moves, leaves them as they were.

use std::fs;
use std::os::unix::fs::PermissionsExt;
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

/// The script's PATH with an `mv` that moves as asked and then, once, after the `n`th
/// move onto one of the three installed files, fails: `exit 1` ("fail"), or a SIGTERM to
/// the script ("term"). Returns the PATH and the file counting those moves.
fn failing_mv(dir: &Path, n: u32, how: &str) -> (String, PathBuf) {
    let shims = dir.join(format!("mv-{n}-{how}-{}", unique("").replace('/', "-")));
    fs::create_dir_all(&shims).unwrap();
    let count = shims.join("count");
    let fired = shims.join("fired");
    let real = ["/usr/bin/mv", "/bin/mv"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("mv");
    let fail = match how {
        "fail" => "exit 1",
        "term" => "kill -TERM \"$PPID\"; exit 0",
        other => panic!("{other}"),
    };
    let shim = shims.join("mv");
    fs::write(
        &shim,
        format!(
            "#!/bin/sh\n\
             for last; do :; done\n\
             '{real}' \"$@\" || exit $?\n\
             case \"$last\" in *-privkey.pem|*-chain.pem|*-fullchain.pem) ;; *) exit 0 ;; esac\n\
             [ -e '{fired}' ] && exit 0\n\
             n=$(cat '{count}' 2>/dev/null || echo 0); n=$((n + 1)); echo \"$n\" >'{count}'\n\
             if [ \"$n\" -eq {n} ]; then : >'{fired}'; {fail}; fi\n\
             exit 0\n",
            fired = fired.display(),
            count = count.display(),
        ),
    )
    .unwrap();
    fs::set_permissions(&shim, fs::Permissions::from_mode(0o755)).unwrap();
    (format!("{}:{}", shims.display(), script_path_var()), count)
}

/// A file's content and mode, or `None` when it does not exist.
type FileState = Option<(Vec<u8>, u32)>;

/// Each installed file and its `.previous`: content and mode, or absent.
fn snapshot(target: &Target, name: &str) -> Vec<(PathBuf, FileState)> {
    target
        .files(name)
        .into_iter()
        .flat_map(|f| [PathBuf::from(format!("{}.previous", f.display())), f])
        .map(|f| {
            let state = fs::read(&f).ok().map(|b| (b, mode(&f)));
            (f, state)
        })
        .collect()
}

#[test]
fn a_failure_after_any_of_the_three_moves_leaves_all_three_as_they_were() {
    let emu = Emulator::get();
    let doc = load_document();
    let tmp = scratch("switch");
    let dir = tmp.path();
    let gen = |cn: &str| {
        generate(
            dir,
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            cn,
        )
    };
    let (v1, v2, v3) = (gen("v1"), gen("v2"), gen("v3"));
    let s1 = store(&emu, dir, "switch-v1", &v1);
    let s2 = store(&emu, dir, "switch-v2", &v2);
    let s3 = store(&emu, dir, "switch-v3", &v3);
    let target = Target::under(&dir.join("root"));
    let name = "app";

    // A first install that fails after its first or second move leaves no file.
    for n in [1, 2] {
        let (path, count) = failing_mv(dir, n, "fail");
        let run = install(&doc, &emu, dir, &target, name, &s1, "", &[("PATH", &path)]);
        assert!(!run.success, "{}", run.all());
        assert_eq!(fs::read_to_string(&count).unwrap().trim(), n.to_string());
        for f in target.files(name) {
            assert!(!f.exists(), "{} must be removed again", f.display());
        }
        assert_nothing_left_behind(dir, &target);
    }

    let run = install(&doc, &emu, dir, &target, name, &s1, "", &[]);
    assert_installed(dir, &target, name, &v1, &run);
    let run = install(&doc, &emu, dir, &target, name, &s2, "", &[]);
    assert_installed(dir, &target, name, &v2, &run);
    let before = snapshot(&target, name);
    assert!(
        before.iter().all(|(_, s)| s.is_some()),
        "v2 and its .previous v1"
    );

    for n in 1..=3 {
        for how in ["fail", "term"] {
            let (path, count) = failing_mv(dir, n, how);
            let run = install(&doc, &emu, dir, &target, name, &s3, "", &[("PATH", &path)]);
            assert!(!run.success, "move {n} {how}: must fail:\n{}", run.all());
            assert_eq!(
                fs::read_to_string(&count).unwrap().trim(),
                n.to_string(),
                "the failure came after move {n}"
            );
            assert!(
                run.stderr
                    .contains("failed while switching files: the previous files are back in place"),
                "move {n} {how}:\n{}",
                run.stderr
            );
            assert!(!run.stdout.contains(SERIAL_PREFIX));
            assert_no_secrets(&run, &v3);
            assert!(
                snapshot(&target, name) == before,
                "move {n} {how}: the files and their .previous are not as before"
            );
            assert_nothing_left_behind(dir, &target);
        }
    }

    // Then v3 for real: v2 becomes .previous, v1 is gone (one generation).
    let run = install(&doc, &emu, dir, &target, name, &s3, "", &[]);
    assert_installed(dir, &target, name, &v3, &run);
    for (f, old) in target.files(name).iter().zip(
        before
            .iter()
            .filter(|(p, _)| !p.to_string_lossy().ends_with(".previous")),
    ) {
        let previous = PathBuf::from(format!("{}.previous", f.display()));
        assert_eq!(
            fs::read(&previous).unwrap(),
            old.1.as_ref().unwrap().0,
            "{}",
            previous.display()
        );
    }
}
