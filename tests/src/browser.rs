//! Headless Chromium for the console's end-to-end tests: a [`Browser`] starts Debian's
//! `chromedriver` on a free loopback port, opens one Chromium session through it (a
//! [`fantoccini`] WebDriver client) with a fresh profile, and gives a test the few
//! read-only questions it asks a page — text, attributes, HTML, a script's value — plus a
//! wait for text to appear and a screenshot to look at afterwards.
//!
//! ```no_run
//! # async fn example() {
//! use std::time::Duration;
//! use certflow_tests::browser::Browser;
//!
//! let browser = Browser::start().await;
//! browser.goto("http://127.0.0.1:8080/jobs").await;
//! assert_eq!(browser.text("h1").await, "Jobs");
//! browser
//!     .wait_for_text("#status", "SUCCEEDED", Duration::from_secs(10))
//!     .await;
//! let png = browser.screenshot("jobs-page").await;
//! browser.close().await;
//! # }
//! ```
//!
//! `deploy/local/test.sh` installs `chromium` and `chromium-driver` when they are missing.
//! Chromium runs with its background networking, component updates and sync off: on a
//! closed network its connections are refused otherwise. chromedriver's output goes to
//! `target/chromedriver/<port>.log` under the workspace root; a failure to start names it.
//!
//! Every method panics, with what it was asked and the page it was on, when WebDriver
//! answers with an error: this is test support, and that fails the test. Call
//! [`Browser::close`] at the end of a test; a `Browser` dropped without it (a test that
//! panicked) still kills chromedriver and its Chromium, by process id, and removes the
//! profile.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where Debian's `chromium-driver` installs chromedriver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Where Debian's `chromium` installs the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The window (and so viewport) size every session starts with.
pub const WINDOW_SIZE: (u32, u32) = (1280, 900);

/// How long chromedriver has to answer `GET /status`, and Chromium to open a session.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One headless Chromium session, with the chromedriver that runs it.
pub struct Browser {
    /// `None` once [`Browser::close`] has ended the session.
    client: Option<Client>,
    driver: Child,
    /// Chromium's `--user-data-dir`, removed when the `Browser` goes.
    profile: tempfile::TempDir,
    log: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free loopback port, waits until it is ready and opens a
    /// headless Chromium session with a fresh profile and a 1280×900 window.
    ///
    /// # Panics
    /// When chromedriver or Chromium is not installed (run `deploy/local/test.sh`, which
    /// installs them), or either fails to start (the panic names chromedriver's log).
    pub async fn start() -> Browser {
        for (path, package) in [(CHROMEDRIVER, "chromium-driver"), (CHROMIUM, "chromium")] {
            assert!(
                Path::new(path).exists(),
                "{path} not found (Debian package {package}): run deploy/local/test.sh, which \
                 installs it, or `apt-get install --no-install-recommends chromium chromium-driver`"
            );
        }
        let profile = tempfile::Builder::new()
            .prefix("certflow-chromium-")
            .tempdir()
            .expect("create a temporary Chromium profile directory");
        let log_dir = workspace_root().join("target/chromedriver");
        std::fs::create_dir_all(&log_dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", log_dir.display()));

        // The port is free when asked; another process may take it before chromedriver
        // binds it, so a driver that exits at once is started again on another port.
        let mut attempt = 0;
        let (driver, port, log) = loop {
            attempt += 1;
            let port = free_port();
            let log = log_dir.join(format!("{port}.log"));
            let out = File::create(&log)
                .unwrap_or_else(|e| panic!("create chromedriver's log {}: {e}", log.display()));
            let err = out.try_clone().expect("clone chromedriver's log handle");
            let mut cmd = Command::new(CHROMEDRIVER);
            cmd.arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            // A process group of its own, so that Drop can kill the driver and the browser
            // it started together.
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let mut driver = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("start {CHROMEDRIVER}: {e}"));
            match wait_ready(&mut driver, port).await {
                Ok(()) => break (driver, port, log),
                Err(why) if attempt < 3 && why.starts_with("exited") => {
                    let _ = driver.wait();
                    continue;
                }
                Err(why) => {
                    kill_group(&mut driver);
                    panic!(
                        "chromedriver on 127.0.0.1:{port} {why}; its log:\n{}",
                        log_tail(&log)
                    );
                }
            }
        };

        let mut browser = Browser {
            client: None,
            driver,
            profile,
            log,
        };
        let chrome_options = json!({
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                format!("--window-size={},{}", WINDOW_SIZE.0, WINDOW_SIZE.1),
                format!("--user-data-dir={}", browser.profile.path().display()),
            ],
        });
        let mut caps = Capabilities::new();
        caps.insert("goog:chromeOptions".into(), chrome_options);
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(caps);
        let url = format!("http://127.0.0.1:{port}");
        let connect = builder.connect(&url);
        match tokio::time::timeout(START_TIMEOUT, connect).await {
            Ok(Ok(client)) => browser.client = Some(client),
            Ok(Err(e)) => panic!(
                "open a Chromium session through chromedriver: {e}; its log ({}):\n{}",
                browser.log.display(),
                log_tail(&browser.log)
            ),
            Err(_) => panic!(
                "Chromium did not open a session within {START_TIMEOUT:?}; chromedriver's log ({}):\n{}",
                browser.log.display(),
                log_tail(&browser.log)
            ),
        }
        browser
    }

    /// The WebDriver client, for anything the helpers here do not cover.
    pub fn client(&self) -> &Client {
        self.client
            .as_ref()
            .expect("the browser session was closed")
    }

    /// Opens `url` and waits for it to load (WebDriver's normal page-load strategy).
    pub async fn goto(&self, url: &str) {
        self.client()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The URL of the page now open.
    pub async fn current_url(&self) -> String {
        self.client()
            .current_url()
            .await
            .unwrap_or_else(|e| panic!("read the current URL: {e}"))
            .to_string()
    }

    /// The visible (rendered) text of the first element matching the CSS selector `css`.
    ///
    /// # Panics
    /// When nothing matches: the page is loaded when [`Browser::goto`] returns, so use
    /// [`Browser::wait_for_text`] for text a script puts there later.
    pub async fn text(&self, css: &str) -> String {
        let el = self.find(css).await;
        el.text()
            .await
            .unwrap_or_else(|e| panic!("text of {css:?}: {e}"))
    }

    /// The visible text of every element matching `css`, in document order (empty when
    /// nothing matches).
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for el in self.find_all(css).await {
            out.push(
                el.text()
                    .await
                    .unwrap_or_else(|e| panic!("text of an element matching {css:?}: {e}")),
            );
        }
        out
    }

    /// Whether any element matches `css`.
    pub async fn exists(&self, css: &str) -> bool {
        !self.find_all(css).await.is_empty()
    }

    /// The attribute `name` of the first element matching `css` (`None` when the element
    /// has no such attribute).
    ///
    /// # Panics
    /// When nothing matches `css`.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.find(css)
            .await
            .attr(name)
            .await
            .unwrap_or_else(|e| panic!("attribute {name:?} of {css:?}: {e}"))
    }

    /// Clicks the first element matching `css` (a link, say) and waits for any page it
    /// opens to load.
    ///
    /// # Panics
    /// When nothing matches `css`, or the element cannot be clicked.
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css:?}: {e}"));
    }

    /// The page's HTML as the browser has it now (after scripts ran).
    pub async fn source(&self) -> String {
        self.client()
            .source()
            .await
            .unwrap_or_else(|e| panic!("read the page source: {e}"))
    }

    /// Runs `js` in the page as the body of a function and returns what it `return`s
    /// (`Value::Null` without a `return`): `browser.eval("return document.title")`.
    pub async fn eval(&self, js: &str) -> Value {
        self.client()
            .execute(js, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("run script {js:?}: {e}"))
    }

    /// Polls the text of the first element matching `css` until it contains `needle`, and
    /// returns that text.
    ///
    /// # Panics
    /// After `timeout`, with the last text seen (or that nothing matched).
    pub async fn wait_for_text(&self, css: &str, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut last: Option<String> = None;
        loop {
            // An element the page replaces between the find and the read is stale: that
            // is "not yet", and the next poll finds its successor.
            if let Some(el) = self.find_all(css).await.into_iter().next() {
                if let Ok(text) = el.text().await {
                    if text.contains(needle) {
                        return text;
                    }
                    last = Some(text);
                }
            }
            if Instant::now() >= deadline {
                let seen = match last {
                    Some(t) => format!("its text was {t:?}"),
                    None => "nothing matched".to_string(),
                };
                panic!(
                    "waited {timeout:?} for {css:?} to contain {needle:?} on {}: {seen}",
                    self.current_url().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a PNG of the page as `<name>.png` in `$CERTFLOW_SCREENSHOTS`, else in
    /// `target/console-screenshots/` under the workspace root (created if need be), and
    /// returns its path. The whole page, beyond the viewport, where Chromium's DevTools
    /// command for it answers; the viewport otherwise.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        assert!(
            !name.is_empty() && !name.contains(['/', '\\']),
            "a screenshot's name is a file name without a directory, got {name:?}"
        );
        let dir = match std::env::var_os("CERTFLOW_SCREENSHOTS") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => workspace_root().join("target/console-screenshots"),
        };
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let file = if name.ends_with(".png") {
            name.to_string()
        } else {
            format!("{name}.png")
        };
        let path = dir.join(file);
        let png = match self.full_page_png().await {
            Some(png) => png,
            None => self
                .client()
                .screenshot()
                .await
                .unwrap_or_else(|e| panic!("take a screenshot: {e}")),
        };
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Ends the session (Chromium quits) and stops chromedriver.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            client
                .close()
                .await
                .unwrap_or_else(|e| panic!("close the browser session: {e}"));
        }
        // Drop stops chromedriver and removes the profile.
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self.client().find(Locator::Css(css)).await {
            Ok(el) => el,
            Err(e) => panic!(
                "find {css:?} on {}: {e}",
                self.client()
                    .current_url()
                    .await
                    .map(|u| u.to_string())
                    .unwrap_or_default()
            ),
        }
    }

    async fn find_all(&self, css: &str) -> Vec<fantoccini::elements::Element> {
        self.client()
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css:?}: {e}"))
    }

    /// The whole page through DevTools (`Page.captureScreenshot` beyond the viewport), or
    /// `None` when chromedriver does not pass the command on.
    async fn full_page_png(&self) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let metrics = self
            .client()
            .issue_cmd(Cdp::new("Page.getLayoutMetrics", json!({})))
            .await
            .ok()?;
        let size = metrics.get("cssContentSize")?;
        let width = size.get("width")?.as_f64()?.ceil().max(1.0);
        let height = size.get("height")?.as_f64()?.ceil().max(1.0);
        let shot = self
            .client()
            .issue_cmd(Cdp::new(
                "Page.captureScreenshot",
                json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
                }),
            ))
            .await
            .ok()?;
        base64::engine::general_purpose::STANDARD
            .decode(shot.get("data")?.as_str()?)
            .ok()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // After close() the session is over and Chromium gone; otherwise (a test that
        // panicked) this kills it: with chromedriver's process group, and by the profile
        // on its command line should it have left that group.
        kill_group(&mut self.driver);
        kill_profile_processes(self.profile.path());
        // `profile` is removed when the fields drop, after this.
    }
}

/// A chromedriver command that runs a Chrome DevTools Protocol command
/// (`POST /session/{id}/goog/cdp/execute`).
#[derive(Debug)]
struct Cdp {
    body: String,
}

impl Cdp {
    fn new(cmd: &str, params: Value) -> Cdp {
        Cdp {
            body: json!({ "cmd": cmd, "params": params }).to_string(),
        }
    }
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.body.clone()))
    }
}

/// The workspace root (this crate's parent).
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
        .port()
}

/// Waits until chromedriver answers `GET /status` with `"ready": true`. `Err` says why
/// not, starting with "exited" when the process ended.
async fn wait_ready(driver: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = driver.try_wait() {
            return Err(format!("exited ({status}) before it was ready"));
        }
        if let Some(body) = get_status(port).await {
            if body.contains("\"ready\":true") || body.contains("\"ready\": true") {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "did not answer GET /status ready within {START_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The response to `GET /status` on 127.0.0.1:`port`, if anything answers.
async fn get_status(port: u16) -> Option<String> {
    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        conn.write_all(
            format!("GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
        // chromedriver keeps the connection open whatever the request says: read the
        // headers, then Content-Length bytes of body.
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = conn.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&response);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .unwrap_or(usize::MAX);
                if body.len() >= length {
                    break;
                }
            }
        }
        Some(String::from_utf8_lossy(&response).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

/// SIGKILLs the process group `driver` leads (chromedriver and what it started there),
/// then reaps chromedriver.
fn kill_group(driver: &mut Child) {
    if let Ok(None) = driver.try_wait() {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", driver.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = driver.kill();
    }
    let _ = driver.wait();
}

/// SIGKILLs every process whose command line names `profile` (the Chromium this
/// `Browser` started, and only it: the directory is unique).
fn kill_profile_processes(profile: &Path) {
    let needle = format!("--user-data-dir={}", profile.display());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == needle.as_bytes())
        {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The last lines of chromedriver's log, for a panic message.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
