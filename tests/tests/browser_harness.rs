//! The console tests' browser harness (`certflow_tests::browser`) against a page this test
//! serves itself on 127.0.0.1 (no emulator): text of one and of all matches (a hidden
//! element has none), attributes, the page's HTML, a script's value, a wait for text a
//! script writes 300 ms after load, a click that follows a link, and a full-page PNG.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use certflow_tests::browser::{Browser, WINDOW_SIZE};
use serde_json::json;

const PAGE: &str = r#"<!doctype html>
<html><head><title>harness page</title></head>
<body>
<h1 id="title">Jobs <small>(3)</small></h1>
<ul>
  <li class="job">job-one</li>
  <li class="job">job-two</li>
  <li class="job" hidden>job-three</li>
</ul>
<a id="next" href="/other" data-state="ok">other page</a>
<p id="status">PENDING</p>
<div style="height: 2400px">tall</div>
<script>
  setTimeout(() => { document.getElementById("status").textContent = "SUCCEEDED at last"; }, 300);
</script>
</body></html>"#;

const OTHER: &str = r#"<!doctype html><html><head><title>other</title></head>
<body><h1>Other</h1></body></html>"#;

/// Serves `PAGE` at every path but `/other`, one connection at a time, until the process ends.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the page server");
    let addr = listener.local_addr().expect("the page server's address");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&req);
            let body = if line.starts_with("GET /other ") {
                OTHER
            } else {
                PAGE
            };
            let _ = conn.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn drives_a_served_page() {
    let base = serve();
    let browser = Browser::start().await;
    browser.goto(&format!("{base}/jobs")).await;

    assert_eq!(browser.text("#title").await, "Jobs (3)");
    assert_eq!(
        browser.texts("li.job").await,
        ["job-one", "job-two", ""],
        "visible text, in document order; a hidden element has none"
    );
    assert!(browser.exists("a#next").await);
    assert!(!browser.exists("table").await);
    assert_eq!(
        browser.attr("#next", "data-state").await.as_deref(),
        Some("ok")
    );
    assert_eq!(browser.attr("#next", "title").await, None);
    assert!(browser
        .source()
        .await
        .contains(r#"<li class="job" hidden="">job-three</li>"#));
    assert_eq!(
        browser.eval("return [document.title, 1 + 2]").await,
        json!(["harness page", 3])
    );

    let started = Instant::now();
    let text = browser
        .wait_for_text("#status", "SUCCEEDED", Duration::from_secs(5))
        .await;
    assert_eq!(text, "SUCCEEDED at last");
    assert!(started.elapsed() < Duration::from_secs(5));

    let path = browser.screenshot("browser-harness").await;
    assert!(path.ends_with("browser-harness.png"), "{}", path.display());
    let png = std::fs::read(&path).expect("read the screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    // IHDR: width and height, big-endian, at bytes 16..24. The page is taller than the
    // window, and the screenshot has all of it.
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(width > 0 && width <= WINDOW_SIZE.0, "width {width}");
    assert!(height > 2400, "height {height}: not the whole page");

    browser.click("#next").await;
    assert_eq!(browser.current_url().await, format!("{base}/other"));
    assert_eq!(browser.text("h1").await, "Other");

    browser.close().await;
}

#[tokio::test]
#[should_panic(expected = "to contain \"never\"")]
async fn wait_for_text_names_what_it_saw() {
    let base = serve();
    let browser = Browser::start().await;
    browser.goto(&base).await;
    browser
        .wait_for_text("#title", "never", Duration::from_millis(300))
        .await;
}
