//! The stylesheet and the script, compiled into the binary (no build chain, nothing to
//! install beside it). Pages name them with the release (`?v=`, [`VERSION`]), so that
//! an upgraded console is not served a cached copy of the old ones.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use super::page::PageError;

const CSS: &str = include_str!("../../assets/console.css");
const JS: &str = include_str!("../../assets/live.js");
/// The release, in the assets' URLs.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `GET /assets/{name}`.
pub(crate) async fn asset(Path(name): Path<String>) -> Result<Response, PageError> {
    let (body, kind) = match name.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "live.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return Err(PageError::NotFound(format!("no asset {name:?}"))),
    };
    // An hour: the URLs change with the release.
    Ok((
        [(CONTENT_TYPE, kind), (CACHE_CONTROL, "max-age=3600")],
        body,
    )
        .into_response())
}
