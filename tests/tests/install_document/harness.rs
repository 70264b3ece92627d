//! Running the script like the SSM agent does, against the emulator, and what the
//! tests assert about the result.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::document::Document;
use crate::material::{openssl_serial, Material};

pub(crate) const SERIAL_PREFIX: &str = "CERTFLOW_INSTALLED_SERIAL=";

// ------------------------------------------------------------------------
// Subprocess helpers
// ------------------------------------------------------------------------

pub(crate) fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub(crate) fn run_ok(cmd: &mut Command) -> String {
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

pub(crate) fn openssl(dir: &Path, args: &[&str]) -> String {
    run_ok(Command::new("openssl").current_dir(dir).args(args))
}

/// PATH with the venv first, so the script finds the AWS CLI installed there.
pub(crate) fn script_path_var() -> String {
    format!(
        "{}:{}",
        certflow_tests::venv_bin().display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    )
}

/// The emulator the README's test command started, and the venv's AWS CLI for it.
pub(crate) struct Emulator;

impl Emulator {
    pub(crate) fn get() -> Emulator {
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
    pub(crate) fn aws(&self, args: &[&str]) -> serde_json::Value {
        certflow_tests::aws_cli_in(&self.region(), args)
    }

    pub(crate) fn region(&self) -> String {
        std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|_| "us-east-1".into())
    }

    /// Creates a secret; its value goes through a file, not argv.
    pub(crate) fn create_secret(&self, dir: &Path, name: &str, value: &serde_json::Value) {
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
/// CertDir/KeyDir allowedPattern, which refuses components starting with '.', and the
/// script's check that no component is writable by anyone but root), and the run
/// directory the script uses with it (see [`run_dir`]), removed with it.
pub(crate) struct Scratch(tempfile::TempDir);

impl Scratch {
    pub(crate) fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(parent) = run_dir(self.0.path()).parent() {
            let _ = fs::remove_dir_all(parent);
        }
    }
}

pub(crate) fn scratch(label: &str) -> Scratch {
    Scratch(
        tempfile::Builder::new()
            .prefix(&format!("install-{label}-"))
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap(),
    )
}

/// Where the tests put the tmpfs the script wants for its lock and work directory
/// (`CERTFLOW_RUN_DIR`): this machine's /run is not tmpfs, /dev/shm is.
const SHM: &str = "/dev/shm";

/// The script's `CERTFLOW_RUN_DIR` for runs in scratch directory `dir`: on tmpfs, one
/// per scratch directory, not created (the script creates it).
pub(crate) fn run_dir(dir: &Path) -> PathBuf {
    let base = dir.file_name().unwrap().to_str().unwrap();
    Path::new(SHM)
        .join(format!("certflow-test-{base}"))
        .join("run")
}

pub(crate) fn unique(label: &str) -> String {
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
// Running the script like the SSM agent
// ------------------------------------------------------------------------

pub(crate) struct Target {
    pub(crate) cert_dir: PathBuf,
    pub(crate) key_dir: PathBuf,
}

impl Target {
    /// `<root>/etc/ssl/{certs,private}`, not created: the script must create them.
    pub(crate) fn under(root: &Path) -> Target {
        Target {
            cert_dir: root.join("etc/ssl/certs"),
            key_dir: root.join("etc/ssl/private"),
        }
    }

    pub(crate) fn fullchain(&self, name: &str) -> PathBuf {
        self.cert_dir.join(format!("{name}-fullchain.pem"))
    }

    pub(crate) fn chain(&self, name: &str) -> PathBuf {
        self.cert_dir.join(format!("{name}-chain.pem"))
    }

    pub(crate) fn privkey(&self, name: &str) -> PathBuf {
        self.key_dir.join(format!("{name}-privkey.pem"))
    }

    pub(crate) fn files(&self, name: &str) -> [PathBuf; 3] {
        [self.fullchain(name), self.chain(name), self.privkey(name)]
    }
}

pub(crate) struct Run {
    pub(crate) success: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Writes the rendered script to `_script.sh` (mode 0755) and runs it as the
/// agent does: `sh -c <path>`.
/// Its `CERTFLOW_RUN_DIR` is [`run_dir`]`(dir)` unless `env` says otherwise.
pub(crate) fn run_script(dir: &Path, script: &str, env: &[(&str, &str)]) -> Run {
    let run_in = run_dir(dir);
    let parent = run_in.parent().unwrap();
    fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
    fs::set_permissions(parent, fs::Permissions::from_mode(0o700)).unwrap();
    let file = dir.join("_script.sh");
    fs::write(&file, script).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&file)
        .current_dir(dir)
        .env("PATH", script_path_var())
        .env("CERTFLOW_RUN_DIR", &run_in)
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
pub(crate) fn install(
    doc: &Document,
    emu: &Emulator,
    dir: &Path,
    target: &Target,
    name: &str,
    secret: &str,
    reload_service: &str,
    env: &[(&str, &str)],
) -> Run {
    let region = emu.region();
    let script = doc
        .render(&[
            ("CertName", name),
            ("SecretId", secret),
            ("Region", &region),
            ("CertDir", target.cert_dir.to_str().unwrap()),
            ("KeyDir", target.key_dir.to_str().unwrap()),
            ("ReloadService", reload_service),
        ])
        .unwrap_or_else(|e| panic!("refused: {e}"));
    run_script(dir, &script, env)
}

pub(crate) fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

pub(crate) fn pem(text: &str) -> String {
    let t = text.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!("{t}\n")
    }
}

/// Output must never carry secret material.
pub(crate) fn assert_no_secrets(run: &Run, m: &Material) {
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
pub(crate) fn assert_installed(dir: &Path, target: &Target, name: &str, m: &Material, run: &Run) {
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

    assert_nothing_left_behind(dir, target);
}

/// No temp file beside the installed ones, no work directory in the run directory (the
/// lock files stay there).
pub(crate) fn assert_nothing_left_behind(dir: &Path, target: &Target) {
    for d in [&target.cert_dir, &target.key_dir] {
        for entry in fs::read_dir(d).unwrap() {
            let file = entry.unwrap().file_name().into_string().unwrap();
            let expected = !file.starts_with('.')
                && (file.ends_with(".pem") || file.ends_with(".pem.previous"));
            assert!(expected, "left behind in {}: {file}", d.display());
        }
    }
    let run = run_dir(dir);
    if run.exists() {
        assert_eq!(mode(&run), 0o700, "run directory mode");
        for entry in fs::read_dir(&run).unwrap() {
            let file = entry.unwrap().file_name().into_string().unwrap();
            assert!(
                file.ends_with(".lock"),
                "left behind in {}: {file}",
                run.display()
            );
        }
    }
}

/// A shim for `prog` in a fresh directory that logs each command line to `log` and then
/// runs the real program found on `path`; returns the PATH to use.
pub(crate) fn logging_shim(dir: &Path, prog: &str, log: &Path, path: &str) -> String {
    let real = std::env::split_paths(path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{prog} is not on {path}"));
    let shims = dir.join(format!("shim-{prog}"));
    fs::create_dir_all(&shims).unwrap();
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
    format!("{}:{path}", shims.display())
}

/// The script's PATH with an `aws` that records every call in `log` (see
/// [`assert_no_aws_call`]).
pub(crate) fn recording_aws(dir: &Path, log: &Path) -> String {
    logging_shim(dir, "aws", log, &script_path_var())
}

/// The recording `aws` saw no call at all.
pub(crate) fn assert_no_aws_call(log: &Path, run: &Run) {
    let calls = fs::read_to_string(log).unwrap_or_default();
    assert!(
        calls.is_empty(),
        "the AWS CLI was called before the refusal:\n{calls}\n{}",
        run.all()
    );
}

pub(crate) fn assert_dir_modes(target: &Target) {
    assert_eq!(mode(&target.cert_dir), 0o755, "new CertDir mode");
    assert_eq!(mode(&target.key_dir), 0o700, "new KeyDir mode");
}

/// A fake `systemctl` that records its arguments and exits with `code`.
pub(crate) fn fake_reload(dir: &Path, code: i32) -> (PathBuf, PathBuf) {
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
