//! A moto server of a benchmark's own, on a free loopback port: not the one
//! `deploy/local/emulator.sh start` shares through `.local/` (that one may be another
//! session's, and `emulator.sh stop` would stop it), and fresh, since moto grows to several
//! GB under load. The report and `console-bench` start theirs with [`Emulator::start`].

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A moto server of its own, on a free loopback port; stopped when dropped.
pub struct Emulator {
    child: Child,
    pub port: u16,
}

impl Emulator {
    /// Makes sure the venv is set up (`deploy/local/emulator.sh setup`), then starts
    /// `.venv/bin/moto_server` on a free port and waits until it answers. Its own process,
    /// not the one `emulator.sh start` shares through `.local/`: that one may be another
    /// session's, and `emulator.sh stop` would stop it.
    pub fn start(root: &Path, log: &Path) -> Result<Emulator, String> {
        let status = Command::new(root.join("deploy/local/emulator.sh"))
            .arg("setup")
            .current_dir(root)
            .status()
            .map_err(|e| format!("deploy/local/emulator.sh setup: {e}"))?;
        if !status.success() {
            return Err(format!("deploy/local/emulator.sh setup failed: {status}"));
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("a free port: {e}"))?;
        let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err_file = log_file
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(root.join(".venv/bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // As deploy/local/test.sh runs it: certificates are ISSUED after 3 s.
            .env(
                "MOTO_ACM_VALIDATION_WAIT",
                std::env::var("MOTO_ACM_VALIDATION_WAIT").unwrap_or_else(|_| "3".into()),
            )
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .map_err(|e| format!("starting moto_server: {e}"))?;
        let mut emulator = Emulator { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !answering(port) {
            if let Ok(Some(status)) = emulator.child.try_wait() {
                return Err(format!(
                    "moto_server exited during startup ({status}); see {}",
                    log.display()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "moto_server did not answer on port {port} within 60 s; see {}",
                    log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(emulator)
    }

    /// What `.local/emulator.env` would say for this emulator.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ]
    }

    pub fn stop(mut self) {
        self.kill();
    }

    /// The server's process id (for its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// True if an HTTP server answers on the port (any answer).
fn answering(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(s.read(&mut buf), Ok(n) if n > 0 && buf.starts_with(b"HTTP/"))
}
