//! `certflow console`: a read-only web console over the same tables and queues the CLI
//! reads, with the operator's own AWS credentials, served where the operator is.
//!
//! The pages ([`jobs`], [`job`], [`certificates`], [`dead_letters`]) are askama
//! templates (`workers/templates/console/`) compiled into the binary; the stylesheet and
//! the one small script ([`assets`]) are embedded too. Every page works without
//! JavaScript; the script only swaps in a fresh copy of a page's live part when it
//! changed (the job's record version, or the listing's ids and versions).
//!
//! What keeps it safe, each enforced in one place:
//!
//! 1. **Loopback only** unless `--allow-non-loopback` ([`guard::check_bind`]): the
//!    console has no login; whoever reaches it reads with the operator's credentials.
//! 2. **Read-only**: only `GET` and `HEAD` routes exist, and nothing behind them writes
//!    (the dead letters are read with a zero visibility timeout, so they stay where they
//!    are). Retry, cancel and redrive are shown as CLI command lines to copy.
//! 3. **Host checked** ([`guard::Hosts`]): a request must name this machine's loopback,
//!    the address served on, or a host given with `--allowed-host`; a page another site
//!    loads through DNS rebinding names that site's host, and is refused. A request the
//!    browser says another site made (`Sec-Fetch-Site`) is refused too.
//! 4. **Escaped**: askama escapes every value for HTML; the Content-Security-Policy
//!    allows only the console's own script and stylesheet, so a request field holding
//!    `<script>` is shown as text and could not run even if it were not.
//! 5. **No secret material**: the pages show what the tables hold, which is never a key,
//!    certificate or passphrase (the workflows keep those in Secrets Manager), and no
//!    page reads Secrets Manager.

mod assets;
mod certificates;
mod dead_letters;
mod guard;
mod job;
mod jobs;
mod page;
mod timeline;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use engine::JobStore;

use crate::cli::{ConsoleArgs, Global, Names};

/// What every page reads from.
#[derive(Clone)]
pub(crate) struct Console {
    pub(crate) sdk: aws_config::SdkConfig,
    pub(crate) names: Names,
    pub(crate) store: Arc<dyn JobStore>,
}

/// The console's routes over `console` (all `GET`: see rule 2 in the module doc).
pub(crate) fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(jobs::page))
        .route("/jobs", get(jobs::page))
        .route("/jobs/live", get(jobs::live))
        .route("/jobs/{id}", get(job::page))
        .route("/jobs/{id}/live", get(job::live))
        .route("/certificates", get(certificates::page))
        .route("/dead-letters", get(dead_letters::page))
        .route("/assets/{name}", get(assets::asset))
        .fallback(page::not_found)
        .with_state(console)
}

/// Runs `certflow console` until Ctrl-C or SIGTERM.
pub(crate) async fn run(
    sdk: &aws_config::SdkConfig,
    global: &Global,
    store: Arc<dyn JobStore>,
    args: &ConsoleArgs,
) -> anyhow::Result<()> {
    let want = SocketAddr::new(args.address, args.port);
    if let Some(warning) = guard::check_bind(want, args.allow_non_loopback)? {
        eprintln!("{warning}");
    }
    let listener = tokio::net::TcpListener::bind(want)
        .await
        .with_context(|| format!("cannot serve the console on {want}: is another program using port {}? choose another with --port", args.port))?;
    let bound = listener.local_addr()?;
    let console = Console {
        sdk: sdk.clone(),
        names: global.names.clone(),
        store,
    };
    let app = guard::layer(
        router(console),
        guard::Hosts::new(bound.ip(), &args.allowed_host),
    );
    // Tests and scripts read the address from this line (with --port 0 it is the only
    // place that says which port). A reader that closes the pipe after it (`| head -1`)
    // must not stop the console: nothing else goes to stdout, and a failed write is
    // ignored rather than a panic.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "certflow console: http://{bound}/");
        let _ = out.flush();
    }
    eprintln!("read-only; stop it with Ctrl-C");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
        .context("the console's server stopped")?;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests;
