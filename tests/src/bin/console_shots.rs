//! Screenshots of a running console's pages, for the README: the jobs list, the newest
//! failed job, the newest succeeded job, the certificates and the dead letters.
//!
//!     console-shots http://127.0.0.1:8080 docs/img
//!
//! `CONSOLE=1 SCREENSHOTS=docs/img deploy/local/demo.sh` runs it over the demo's jobs.
//! Each page is opened in headless Chromium (`certflow_tests::browser`) and its first
//! screenful (1280×900: what a reader of the README takes in) saved as
//! `console-<page>.png` in the directory given.

use std::path::{Path, PathBuf};

use certflow_tests::browser::Browser;

async fn shot(b: &Browser, dir: &Path, name: &str) -> PathBuf {
    let png = b
        .client()
        .screenshot()
        .await
        .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(dir)) = (args.next(), args.next()) else {
        eprintln!("usage: console-shots CONSOLE_URL OUT_DIR");
        std::process::exit(2);
    };
    let url = url.trim_end_matches('/').to_string();
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let b = Browser::start().await;
    b.goto(&format!("{url}/jobs")).await;
    println!("{}", shot(&b, &dir, "console-jobs").await.display());
    for (status, name) in [
        ("FAILED", "console-job-failed"),
        ("SUCCEEDED", "console-job"),
    ] {
        b.goto(&format!("{url}/jobs?status={status}")).await;
        let first = "#jobs tbody tr td.job a";
        if !b.exists(first).await {
            continue;
        }
        if let Some(href) = b.attr(first, "href").await {
            b.goto(&format!("{url}{href}")).await;
            println!("{}", shot(&b, &dir, name).await.display());
        }
    }
    for page in ["certificates", "dead-letters"] {
        b.goto(&format!("{url}/{page}")).await;
        println!(
            "{}",
            shot(&b, &dir, &format!("console-{page}")).await.display()
        );
    }
    b.close().await;
}
