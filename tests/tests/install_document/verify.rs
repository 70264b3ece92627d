//! Verified serving (`VerifyPort`, `VerifyName`): after the switch and the reload the
//! script asks 127.0.0.1:VerifyPort for its certificate with `openssl s_client`, and
//! restores the previous files when the served serial is not the installed one.
//!
//! "The service" is a real `openssl s_server` on a free loopback port, started by a
//! small shell script ([`Service`]); the fake reload command (`CERTFLOW_RELOAD_CMD`)
//! either restarts it with the files just installed (a good reload) or leaves the old
//! server running (a reload that "succeeds" without taking the new files). Every server
//! started is killed when the [`Service`] is dropped, on panic too.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::document::{load_document, Document};
use crate::harness::*;
use crate::material::*;
use crate::refusals::{assert_refused, run_recorded};

const SERVED_PREFIX: &str = "CERTFLOW_SERVED_SERIAL=";

/// A loopback port nobody listens on (bound and released at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A TLS "service": `openssl s_server` on 127.0.0.1:`port`, (re)started by the script
/// `serve` (`serve <cert> <key> [<cert2> <key2> <sni-name>]`), which stops the server it
/// started last and records every pid it starts in `pids`.
struct Service {
    port: u16,
    serve: PathBuf,
    pids: PathBuf,
}

impl Service {
    fn new(dir: &Path) -> Service {
        let port = free_port();
        let pids = dir.join(format!("s_server-{port}.pids"));
        let serve = dir.join(format!("serve-{port}"));
        fs::write(
            &serve,
            format!(
                r#"#!/bin/sh
# Stops the s_server started last (and waits until it is gone, or a zombie), then
# starts one on 127.0.0.1:{port} with the given files, detached from our stdio.
pids='{pids}'
if [ -s "$pids.current" ]; then
  old=$(cat "$pids.current")
  kill "$old" 2>/dev/null
  i=0
  while [ "$i" -lt 100 ] && [ -d "/proc/$old" ] \
    && ! grep -q '^State:[[:space:]]*Z' "/proc/$old/status" 2>/dev/null; do
    sleep 0.05; i=$((i + 1))
  done
fi
if [ "$#" -ge 5 ]; then
  openssl s_server -accept 127.0.0.1:{port} -cert "$1" -key "$2" \
    -cert2 "$3" -key2 "$4" -servername "$5" -www -quiet </dev/null >/dev/null 2>&1 &
else
  openssl s_server -accept 127.0.0.1:{port} -cert "$1" -key "$2" \
    -www -quiet </dev/null >/dev/null 2>&1 &
fi
echo "$!" >>"$pids"
echo "$!" >"$pids.current"
"#,
                pids = pids.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&serve, fs::Permissions::from_mode(0o755)).unwrap();
        Service { port, serve, pids }
    }

    /// (Re)starts the server with `files` and waits until it accepts connections.
    fn start(&self, files: &[&Path]) {
        run_ok(Command::new(&self.serve).args(files));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "s_server on port {} did not start",
                self.port
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// The serial the server serves, read as the test's own client would.
    fn served_serial(&self, dir: &Path, sni: Option<&str>) -> String {
        let connect = format!("127.0.0.1:{}", self.port);
        let mut args = vec!["s_client", "-connect", &connect];
        if let Some(name) = sni {
            args.extend(["-servername", name]);
        }
        let out = run(Command::new("openssl")
            .args(&args)
            .stdin(std::process::Stdio::null()));
        let pem = dir.join(format!("served-{}.pem", self.port));
        fs::write(&pem, &out.stdout).unwrap();
        let serial = openssl_serial(dir, pem.to_str().unwrap());
        fs::remove_file(&pem).unwrap();
        serial
    }

    /// A fake `systemctl` that records its arguments in the returned log and then, when
    /// `takes_new_files`, restarts the server with the installed certificate and key of
    /// `name` (a good reload), or else does nothing and exits 0 (the old server keeps
    /// serving the old certificate).
    fn fake_reload(
        &self,
        dir: &Path,
        target: &Target,
        name: &str,
        takes_new_files: bool,
    ) -> (PathBuf, PathBuf) {
        let kind = if takes_new_files { "good" } else { "noop" };
        let log = dir.join(format!("reload-{kind}-{}.log", self.port));
        let bin = dir.join(format!("fake-systemctl-{kind}-{}", self.port));
        let action = if takes_new_files {
            format!(
                "exec '{}' '{}' '{}'",
                self.serve.display(),
                target.fullchain(name).display(),
                target.privkey(name).display()
            )
        } else {
            "exit 0".to_string()
        };
        fs::write(
            &bin,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$*\" >>'{}'\n{action}\n",
                log.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        (bin, log)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        for pid in fs::read_to_string(&self.pids)
            .unwrap_or_default()
            .split_whitespace()
        {
            let _ = Command::new("kill").arg(pid).output();
        }
    }
}

/// The serial as the script prints it (openssl's format).
fn hex(m: &Material) -> String {
    m.serial.replace(':', "").to_uppercase()
}

fn ec(dir: &Path, cn: &str) -> Material {
    generate(
        dir,
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        cn,
    )
}

/// One install with the verification parameters.
#[allow(clippy::too_many_arguments)]
fn install_verified(
    doc: &Document,
    emu: &Emulator,
    dir: &Path,
    target: &Target,
    name: &str,
    secret: &str,
    params: &[(&str, &str)],
    env: &[(&str, &str)],
) -> Run {
    let region = emu.region();
    let mut values = vec![
        ("CertName", name),
        ("SecretId", secret),
        ("Region", region.as_str()),
        ("CertDir", target.cert_dir.to_str().unwrap()),
        ("KeyDir", target.key_dir.to_str().unwrap()),
    ];
    values.extend_from_slice(params);
    let script = doc
        .render(&values)
        .unwrap_or_else(|e| panic!("refused: {e}"));
    run_script(dir, &script, env)
}

fn lines_with<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// Each installed file and its `.previous`, or `None` when absent.
fn snapshot(target: &Target, name: &str) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    target
        .files(name)
        .into_iter()
        .flat_map(|f| [PathBuf::from(format!("{}.previous", f.display())), f])
        .map(|f| {
            let bytes = fs::read(&f).ok();
            (f, bytes)
        })
        .collect()
}

fn fast(reload: &Path, tries: &'static str) -> Vec<(&'static str, String)> {
    vec![
        ("CERTFLOW_RELOAD_CMD", reload.to_str().unwrap().to_string()),
        ("CERTFLOW_VERIFY_TRIES", tries.to_string()),
        ("CERTFLOW_VERIFY_INTERVAL", "0.2".to_string()),
    ]
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn a_reload_that_serves_the_new_certificate_is_verified() {
    let emu = Emulator::get();
    let doc = load_document();
    let tmp = scratch("verify-good");
    let dir = tmp.path();
    let (v1, v2) = (ec(dir, "v1"), ec(dir, "v2"));
    let s1 = store(&emu, dir, "verify-good-v1", &v1);
    let s2 = store(&emu, dir, "verify-good-v2", &v2);
    let target = Target::under(&dir.join("root"));
    let name = "app";

    let run = install(&doc, &emu, dir, &target, name, &s1, "", &[]);
    assert_installed(dir, &target, name, &v1, &run);
    let service = Service::new(dir);
    service.start(&[&target.fullchain(name), &target.privkey(name)]);
    assert_eq!(service.served_serial(dir, None), hex(&v1));

    // The reload restarts the server with the new files; the script retries while it
    // comes up (the fake reload returns before the new server listens).
    let (reload, log) = service.fake_reload(dir, &target, name, true);
    let port = service.port.to_string();
    let env = fast(&reload, "50");
    let run = install_verified(
        &doc,
        &emu,
        dir,
        &target,
        name,
        &s2,
        &[
            ("ReloadService", "nginx"),
            ("VerifyPort", &port),
            ("VerifyName", "www.example.test"),
        ],
        &env_refs(&env),
    );
    assert_installed(dir, &target, name, &v2, &run);
    assert_eq!(
        lines_with(&run.stdout, SERVED_PREFIX),
        [format!("{SERVED_PREFIX}{}", hex(&v2))],
        "exactly one served-serial line:\n{}",
        run.stdout
    );
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "reload-or-restart nginx\n"
    );
    assert_eq!(service.served_serial(dir, None), hex(&v2));
}

#[test]
fn a_reload_that_keeps_serving_the_old_certificate_restores_the_previous_files() {
    let emu = Emulator::get();
    let doc = load_document();
    let tmp = scratch("verify-bad");
    let dir = tmp.path();
    let (v0, v1, v2) = (ec(dir, "v0"), ec(dir, "v1"), ec(dir, "v2"));
    let s0 = store(&emu, dir, "verify-bad-v0", &v0);
    let s1 = store(&emu, dir, "verify-bad-v1", &v1);
    let s2 = store(&emu, dir, "verify-bad-v2", &v2);
    let target = Target::under(&dir.join("root"));
    let name = "app";

    // v1 installed over v0: v0 is .previous, and stays so.
    for (m, s) in [(&v0, &s0), (&v1, &s1)] {
        let run = install(&doc, &emu, dir, &target, name, s, "", &[]);
        assert_installed(dir, &target, name, m, &run);
    }
    let before = snapshot(&target, name);
    assert!(before.iter().all(|(_, b)| b.is_some()));
    let service = Service::new(dir);
    service.start(&[&target.fullchain(name), &target.privkey(name)]);

    let (reload, log) = service.fake_reload(dir, &target, name, false);
    let port = service.port.to_string();
    let env = fast(&reload, "3");
    let run = install_verified(
        &doc,
        &emu,
        dir,
        &target,
        name,
        &s2,
        &[
            ("ReloadService", "nginx"),
            ("VerifyPort", &port),
            ("VerifyName", "www.example.test"),
        ],
        &env_refs(&env),
    );
    assert!(!run.success, "must fail:\n{}", run.all());
    assert_eq!(
        first_line(&run.stderr),
        format!(
            "certflow-install: error: verify failed: 127.0.0.1:{port} (SNI www.example.test) \
             serves serial {}, not the installed {}; previous certificate restored and nginx \
             reloaded",
            hex(&v1),
            hex(&v2)
        ),
        "{}",
        run.stderr
    );
    assert_eq!(
        lines_with(&run.stdout, SERVED_PREFIX),
        [format!("{SERVED_PREFIX}{}", hex(&v1))],
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains(SERIAL_PREFIX), "no installed serial");
    assert_no_secrets(&run, &v2);
    assert!(
        snapshot(&target, name) == before,
        "the v1 files and their v0 .previous are back"
    );
    assert_eq!(
        openssl_serial(dir, target.fullchain(name).to_str().unwrap()),
        hex(&v1)
    );
    assert_eq!(mode(&target.privkey(name)), 0o600);
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "reload-or-restart nginx\nreload-or-restart nginx\n",
        "reloaded with v2, then again with the restored v1"
    );
    assert_nothing_left_behind(dir, &target);
    assert_eq!(service.served_serial(dir, None), hex(&v1));
}

#[test]
fn nothing_listening_on_the_verify_port_restores_the_previous_files_or_removes_new_ones() {
    let emu = Emulator::get();
    let doc = load_document();
    let tmp = scratch("verify-none");
    let dir = tmp.path();
    let (v1, v2) = (ec(dir, "v1"), ec(dir, "v2"));
    let s1 = store(&emu, dir, "verify-none-v1", &v1);
    let s2 = store(&emu, dir, "verify-none-v2", &v2);
    let target = Target::under(&dir.join("root"));
    let name = "app";
    let run = install(&doc, &emu, dir, &target, name, &s1, "", &[]);
    assert_installed(dir, &target, name, &v1, &run);
    let before = snapshot(&target, name);

    // No ReloadService: the script still verifies (and has nothing to reload).
    let port = free_port().to_string();
    let env = [
        ("CERTFLOW_VERIFY_TRIES", "2"),
        ("CERTFLOW_VERIFY_INTERVAL", "0.1"),
    ];
    let params = [("VerifyPort", port.as_str())];
    let run = install_verified(&doc, &emu, dir, &target, name, &s2, &params, &env);
    assert!(!run.success, "must fail:\n{}", run.all());
    assert_eq!(
        first_line(&run.stderr),
        format!(
            "certflow-install: error: verify failed: 127.0.0.1:{port} (no SNI) served no \
             certificate (connection failed, or no TLS) in 2 tries; the installed serial is {}; \
             previous certificate restored (no ReloadService to reload)",
            hex(&v2)
        ),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains(SERVED_PREFIX), "{}", run.stdout);
    assert!(!run.stdout.contains(SERIAL_PREFIX), "{}", run.stdout);
    assert!(snapshot(&target, name) == before, "the v1 files are back");
    assert_nothing_left_behind(dir, &target);

    // A first install: the new files are removed again.
    let fresh = Target::under(&dir.join("fresh"));
    let run = install_verified(&doc, &emu, dir, &fresh, name, &s2, &params, &env);
    assert!(!run.success, "must fail:\n{}", run.all());
    let first = first_line(&run.stderr);
    assert!(
        first.starts_with(&format!(
            "certflow-install: error: verify failed: 127.0.0.1:{port} (no SNI) served no certificate"
        )) && first.ends_with(
            "the new files of app removed (there were none before) (no ReloadService to reload)"
        ),
        "{}",
        run.stderr
    );
    for f in fresh.files(name) {
        assert!(!f.exists(), "{} must be removed again", f.display());
    }
    assert_nothing_left_behind(dir, &fresh);
}

/// The server serves v1 by default and v2 only to clients that send the SNI name
/// `v2.example.test` (s_server's -servername/-cert2): verification without VerifyName
/// sees v1, with it v2. No ReloadService: the "service" has the new files already.
#[test]
fn verify_name_is_sent_as_sni() {
    let emu = Emulator::get();
    let doc = load_document();
    let tmp = scratch("verify-sni");
    let dir = tmp.path();
    let (v1, v2) = (ec(dir, "v1"), ec(dir, "v2"));
    let s1 = store(&emu, dir, "verify-sni-v1", &v1);
    let s2 = store(&emu, dir, "verify-sni-v2", &v2);
    let target = Target::under(&dir.join("root"));
    let name = "app";
    let run = install(&doc, &emu, dir, &target, name, &s1, "", &[]);
    assert_installed(dir, &target, name, &v1, &run);
    let before = snapshot(&target, name);

    // v2's certificate and decrypted key, for the server's SNI context.
    fs::write(dir.join("v2.pem"), &v2.certificate).unwrap();
    fs::write(dir.join("v2.enc.pem"), &v2.encrypted_key).unwrap();
    fs::write(dir.join("v2.pass"), &v2.passphrase).unwrap();
    openssl(
        dir,
        &[
            "pkey",
            "-in",
            "v2.enc.pem",
            "-passin",
            "file:v2.pass",
            "-out",
            "v2.key",
        ],
    );
    let service = Service::new(dir);
    service.start(&[
        &target.fullchain(name),
        &target.privkey(name),
        &dir.join("v2.pem"),
        &dir.join("v2.key"),
        Path::new("v2.example.test"),
    ]);
    assert_eq!(service.served_serial(dir, None), hex(&v1));
    assert_eq!(
        service.served_serial(dir, Some("v2.example.test")),
        hex(&v2)
    );

    let port = service.port.to_string();
    let env = [
        ("CERTFLOW_VERIFY_TRIES", "2"),
        ("CERTFLOW_VERIFY_INTERVAL", "0.1"),
    ];
    let run = install_verified(
        &doc,
        &emu,
        dir,
        &target,
        name,
        &s2,
        &[("VerifyPort", &port)],
        &env,
    );
    assert!(!run.success, "v1 is served without SNI:\n{}", run.all());
    assert_eq!(
        first_line(&run.stderr),
        format!(
            "certflow-install: error: verify failed: 127.0.0.1:{port} (no SNI) serves serial {}, \
             not the installed {}; previous certificate restored (no ReloadService to reload)",
            hex(&v1),
            hex(&v2)
        )
    );
    assert!(snapshot(&target, name) == before, "the v1 files are back");

    let run = install_verified(
        &doc,
        &emu,
        dir,
        &target,
        name,
        &s2,
        &[("VerifyPort", &port), ("VerifyName", "v2.example.test")],
        &env,
    );
    assert_installed(dir, &target, name, &v2, &run);
    assert_eq!(
        lines_with(&run.stdout, SERVED_PREFIX),
        [format!("{SERVED_PREFIX}{}", hex(&v2))]
    );
    for f in ["v2.pem", "v2.enc.pem", "v2.pass", "v2.key"] {
        fs::remove_file(dir.join(f)).unwrap();
    }
}

#[test]
fn bad_verify_port_and_verify_name_are_refused_by_the_pattern_and_by_the_script() {
    let doc = load_document();
    let tmp = scratch("verify-refusals");
    let dir = tmp.path();
    let target = Target::under(&dir.join("root"));
    let render = |name: &str, value: &str| {
        doc.render(&[
            ("CertName", "www"),
            ("SecretId", "certflow/x"),
            ("Region", "us-east-1"),
            (name, value),
        ])
    };
    for (name, value) in [
        ("VerifyPort", ""),
        ("VerifyPort", "1"),
        ("VerifyPort", "443"),
        ("VerifyPort", "65535"),
        ("VerifyName", ""),
        ("VerifyName", "localhost"),
        ("VerifyName", "www.example.com"),
        ("VerifyName", "xn--bcher-kva.example"),
        ("VerifyName", "a-1.B2"),
    ] {
        assert!(render(name, value).is_ok(), "{name} {value:?} is accepted");
    }

    // Refused by SSM (allowedPattern) and, should one get through, by the script
    // before the AWS CLI is called.
    let long_label = format!("{}.example.com", "a".repeat(64));
    for (name, value) in [
        ("VerifyPort", "0"),
        ("VerifyPort", "080"),
        ("VerifyPort", "123456"),
        ("VerifyPort", "80; rm -rf /"),
        ("VerifyPort", "$(id)"),
        ("VerifyPort", "443 "),
        ("VerifyName", "a b"),
        ("VerifyName", "a;id"),
        ("VerifyName", "$(id)"),
        ("VerifyName", "-servername"),
        ("VerifyName", "a..b"),
        ("VerifyName", "*.example.com"),
        ("VerifyName", "a_b.example.com"),
        ("VerifyName", "example.com."),
        ("VerifyName", long_label.as_str()),
    ] {
        let err = render(name, value).expect_err(&format!("{name}={value:?} must be refused"));
        assert_eq!(err.parameter, name, "{err}");
        let (run, log) = run_recorded(&doc, dir, &target, &[(name, value)]);
        assert_refused(&run, &log, name, "does not match");
        assert!(!target.cert_dir.exists() && !target.key_dir.exists());
    }
    // A quote would end the single-quoted assignment: only the pattern stands in its way
    // (as for every parameter), and it does.
    for (name, value) in [("VerifyName", "a'b"), ("VerifyPort", "1'2")] {
        assert_eq!(render(name, value).unwrap_err().parameter, name);
    }

    // Five digits that are not a port pass the pattern; the script refuses them.
    for port in ["65536", "70000", "99999"] {
        assert!(render("VerifyPort", port).is_ok());
        let (run, log) = run_recorded(&doc, dir, &target, &[("VerifyPort", port)]);
        assert_refused(&run, &log, "VerifyPort", "is not a TCP port (1-65535)");
        assert!(!target.cert_dir.exists() && !target.key_dir.exists());
    }
}

#[test]
fn bad_verify_tries_or_interval_in_the_environment_stop_the_script_before_any_aws_call() {
    let doc = load_document();
    let tmp = scratch("verify-env");
    let dir = tmp.path();
    let target = Target::under(&dir.join("root"));
    let script = doc.render_unchecked(&[
        ("CertName", "www"),
        ("SecretId", "certflow/x"),
        ("Region", "us-east-1"),
        ("CertDir", target.cert_dir.to_str().unwrap()),
        ("KeyDir", target.key_dir.to_str().unwrap()),
        ("VerifyPort", "443"),
    ]);
    let log = dir.join("aws-calls.log");
    let path = recording_aws(dir, &log);
    for (var, value, reason) in [
        (
            "CERTFLOW_VERIFY_TRIES",
            "0",
            "CERTFLOW_VERIFY_TRIES must be",
        ),
        (
            "CERTFLOW_VERIFY_TRIES",
            "1000",
            "CERTFLOW_VERIFY_TRIES must be",
        ),
        (
            "CERTFLOW_VERIFY_TRIES",
            "$(id)",
            "CERTFLOW_VERIFY_TRIES must be",
        ),
        (
            "CERTFLOW_VERIFY_INTERVAL",
            "-1",
            "CERTFLOW_VERIFY_INTERVAL must be",
        ),
        (
            "CERTFLOW_VERIFY_INTERVAL",
            "1e9",
            "CERTFLOW_VERIFY_INTERVAL must be",
        ),
    ] {
        let run = run_script(dir, &script, &[("PATH", &path), (var, value)]);
        assert!(!run.success, "{var}={value}:\n{}", run.all());
        assert!(
            first_line(&run.stderr).contains(reason),
            "{var}={value}:\n{}",
            run.stderr
        );
        assert_no_aws_call(&log, &run);
        assert!(!target.cert_dir.exists());
    }
}
