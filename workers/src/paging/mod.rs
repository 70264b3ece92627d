//! `jobs list` over the table's indexes: one Query stream per status (ByStatus, newest
//! update first) or one for a certificate (ByCertificateArn, newest first), merged newest
//! first, with a cursor that continues every stream where the page ended.
//!
//! The cursor is this module's own (base64 of JSON): for each stream, the engine cursor of
//! the page holding the next job and how many jobs of that page were already consumed. It
//! does not depend on how the engine encodes its cursors.
//!
//! The merge reads its pages through [`Index`], which the job store answers; the unit
//! tests answer it from memory, with pages as short as they like.

use std::collections::VecDeque;
use std::sync::Arc;

use base64::Engine as _;
use engine::backend::Page;
use engine::{JobRecord, JobStatus, JobStore, Millis};
use serde::{Deserialize, Serialize};

/// The label the jobs of a certificate are indexed by (`ByCertificateArn`, see
/// `workflows::JOB_LABELS`).
const CERTIFICATE_LABEL: &str = "CertificateArn";
/// Most jobs one index Query asks for. A page asks for one job more than the listing's
/// limit, so that it knows whether more follow without a further Query; a long listing
/// reads pages of this size rather than one huge Query.
const MAX_PAGE: usize = 100;

/// Where one index stream continues.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    /// Engine cursor of the page holding the next job (`None`: the first page).
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    start: Option<String>,
    /// Jobs of that page already consumed.
    #[serde(rename = "n", default)]
    skip: usize,
    /// Nothing left.
    #[serde(rename = "d", default)]
    done: bool,
}

/// The `--cursor` of a listing: where each of its streams continues.
#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    /// Which listing it belongs to.
    #[serde(rename = "q")]
    query: String,
    /// One position per stream, in the order of the listing's statuses.
    #[serde(rename = "s")]
    streams: Vec<Position>,
}

/// What to list.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    /// Statuses to list (every status's index is read, unless a certificate is given).
    pub(crate) statuses: Vec<JobStatus>,
    /// Only this certificate's jobs (its index is read; statuses filter).
    pub(crate) certificate_arn: Option<String>,
    /// Only jobs updated at or after this time.
    pub(crate) since: Option<Millis>,
    /// Only jobs of this workflow. No index is keyed on it: the streams are read on past
    /// other workflows' jobs, so a rare workflow costs more reads than a status does.
    pub(crate) workflow: Option<String>,
    /// At most this many jobs.
    pub(crate) limit: usize,
}

impl Query {
    fn fingerprint(&self) -> String {
        let statuses: Vec<&str> = self.statuses.iter().map(|s| s.as_str()).collect();
        let mut f = format!(
            "{}|{}",
            statuses.join(","),
            self.certificate_arn.as_deref().unwrap_or("")
        );
        // Older cursors, from before the workflow filter, still match their listing.
        if let Some(w) = &self.workflow {
            f.push('|');
            f.push_str(w);
        }
        f
    }

    /// Whether `job` is of the workflow asked for (every job, when none was).
    fn wants_workflow(&self, job: &JobRecord) -> bool {
        self.workflow.as_deref().is_none_or(|w| job.workflow == w)
    }
}

/// Jobs of other workflows one page may read past, with a workflow filter, before it
/// ends early with what it found and a cursor: a rare workflow must not make one page
/// (or a console refreshing it) read the whole table.
pub(crate) const FILTER_BUDGET: usize = 1_000;

/// A page of the listing.
#[derive(Debug)]
pub(crate) struct Listing {
    /// The jobs, newest first.
    pub(crate) jobs: Vec<JobRecord>,
    /// Where the next page starts, when there are more.
    pub(crate) next_cursor: Option<String>,
    /// Jobs read past because the filters did not want them.
    pub(crate) skipped: usize,
    /// The page ended early at [`FILTER_BUDGET`]: it may hold fewer jobs than asked for
    /// although more follow (the cursor goes on).
    pub(crate) cut: bool,
}

/// A cursor that cannot continue this listing: the caller's mistake, not the store's.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CursorError {
    /// Not a cursor this module wrote.
    #[error("invalid --cursor: pass the NextCursor of the previous page unchanged")]
    Invalid,
    /// A cursor of a listing with other filters.
    #[error("this cursor belongs to a listing with other --status, --certificate-arn or --workflow filters; repeat those filters, or drop --cursor to start again")]
    OtherListing,
}

/// One index stream: a status's jobs, or a certificate's.
enum Source {
    Status(JobStatus),
    Certificate(String),
}

/// One index Query: up to `size` jobs of `source` from `start` (`None`: the newest), newest
/// first, with the cursor of the page after, if any.
///
/// The future is `Send` by contract, so that a listing can run in a web handler (the
/// console).
trait Index {
    fn page(
        &self,
        source: &Source,
        start: Option<String>,
        size: usize,
    ) -> impl std::future::Future<Output = anyhow::Result<Page>> + Send;
}

/// The job store as an [`Index`]. A type of its own, not `Arc<dyn JobStore>`: a web
/// handler's future must be `Send` for every lifetime of its types, which the compiler
/// cannot prove through the trait object's lifetime.
struct StoreIndex(Arc<dyn JobStore>);

impl Index for StoreIndex {
    fn page(
        &self,
        source: &Source,
        start: Option<String>,
        size: usize,
    ) -> impl std::future::Future<Output = anyhow::Result<Page>> + Send {
        let store = self.0.clone();
        let source = match source {
            Source::Status(st) => Source::Status(*st),
            Source::Certificate(arn) => Source::Certificate(arn.clone()),
        };
        async move {
            Ok(match source {
                Source::Status(st) => store.list_by_status(st, size, start).await?,
                Source::Certificate(arn) => {
                    store
                        .list_by_label(CERTIFICATE_LABEL, &arn, size, start)
                        .await?
                }
            })
        }
    }
}

/// One index stream as it is read: where it is, and what is left of its loaded page.
struct Stream {
    source: Source,
    pos: Position,
    buf: VecDeque<JobRecord>,
    /// Engine cursor after the loaded page (`None` with `loaded`: the last page).
    page_next: Option<String>,
    loaded: bool,
}

impl Stream {
    fn new(source: Source, pos: Position) -> Self {
        Stream {
            source,
            pos,
            buf: VecDeque::new(),
            page_next: None,
            loaded: false,
        }
    }

    /// The next job of this stream, loading pages as needed.
    async fn peek(
        &mut self,
        index: &impl Index,
        page: usize,
    ) -> anyhow::Result<Option<&JobRecord>> {
        loop {
            if !self.buf.is_empty() {
                return Ok(self.buf.front());
            }
            if self.pos.done {
                return Ok(None);
            }
            if self.loaded {
                // The loaded page is used up: go on to the next one.
                match self.page_next.take() {
                    Some(next) => {
                        self.pos = Position {
                            start: Some(next),
                            skip: 0,
                            done: false,
                        };
                        self.loaded = false;
                    }
                    None => {
                        self.pos.done = true;
                        return Ok(None);
                    }
                }
            }
            let got = index
                .page(&self.source, self.pos.start.clone(), page)
                .await?;
            let n = got.jobs.len();
            if n <= self.pos.skip {
                // Everything on this page was consumed by an earlier listing.
                match got.cursor {
                    Some(next) => {
                        self.pos = Position {
                            start: Some(next),
                            skip: self.pos.skip - n,
                            done: false,
                        };
                        continue;
                    }
                    None => {
                        self.pos.done = true;
                        return Ok(None);
                    }
                }
            }
            self.buf = got.jobs.into_iter().skip(self.pos.skip).collect();
            self.page_next = got.cursor;
            self.loaded = true;
        }
    }

    fn consume(&mut self) -> Option<JobRecord> {
        let job = self.buf.pop_front()?;
        self.pos.skip += 1;
        Some(job)
    }

    /// Ends the stream (its remaining jobs are all older than the listing wants).
    fn finish(&mut self) {
        self.buf.clear();
        self.pos.done = true;
    }
}

/// One page of jobs, newest first.
pub(crate) async fn list(
    store: &Arc<dyn JobStore>,
    q: &Query,
    cursor: Option<&str>,
) -> anyhow::Result<Listing> {
    merge(&StoreIndex(store.clone()), q, cursor).await
}

/// [`list`] over any [`Index`].
async fn merge(index: &impl Index, q: &Query, cursor: Option<&str>) -> anyhow::Result<Listing> {
    let sources: Vec<Source> = match &q.certificate_arn {
        Some(arn) => vec![Source::Certificate(arn.clone())],
        None => q.statuses.iter().map(|s| Source::Status(*s)).collect(),
    };
    let positions = match cursor {
        None => vec![Position::default(); sources.len()],
        Some(c) => {
            let decoded = decode(c)?;
            if decoded.query != q.fingerprint() || decoded.streams.len() != sources.len() {
                return Err(CursorError::OtherListing.into());
            }
            decoded.streams
        }
    };
    let mut streams: Vec<Stream> = sources
        .into_iter()
        .zip(positions)
        .map(|(s, p)| Stream::new(s, p))
        .collect();
    // A filter reads past jobs it does not want: in pages as large as they come.
    let page = if q.workflow.is_some() {
        MAX_PAGE
    } else {
        (q.limit + 1).clamp(1, MAX_PAGE)
    };
    let by_certificate = q.certificate_arn.is_some();
    let mut jobs = Vec::new();
    let mut skipped = 0usize;
    let mut cut = false;
    'page: loop {
        // The newest job any stream offers, after the filters.
        let mut best: Option<(usize, Millis)> = None;
        for (i, s) in streams.iter_mut().enumerate() {
            loop {
                let Some(job) = s.peek(index, page).await? else {
                    break;
                };
                let old = q.since.is_some_and(|t| job.updated_at < t);
                let unwanted = (!old && !q.wants_workflow(job))
                    || (by_certificate && (old || !q.statuses.contains(&job.status)));
                if unwanted {
                    s.consume();
                    skipped += 1;
                    if q.workflow.is_some() && skipped >= FILTER_BUDGET {
                        cut = true;
                        break 'page;
                    }
                    continue;
                }
                if by_certificate {
                    // Ordered by creation: filtered above, and read on.
                    let key = job.created_at;
                    if best.is_none_or(|(_, k)| key > k) {
                        best = Some((i, key));
                    }
                } else {
                    // Ordered by update: the first job too old ends the stream.
                    if old {
                        s.finish();
                        break;
                    }
                    let key = job.updated_at;
                    if best.is_none_or(|(_, k)| key > k) {
                        best = Some((i, key));
                    }
                }
                break;
            }
        }
        let Some((i, _)) = best else {
            break;
        };
        if jobs.len() >= q.limit {
            break;
        }
        if let Some(job) = streams[i].consume() {
            jobs.push(job);
        }
    }
    let more = streams.iter().any(|s| !s.buf.is_empty() || !s.pos.done);
    let next_cursor = if more {
        Some(encode(&Cursor {
            query: q.fingerprint(),
            streams: streams.iter().map(|s| s.pos.clone()).collect(),
        })?)
    } else {
        None
    };
    Ok(Listing {
        jobs,
        next_cursor,
        skipped,
        cut,
    })
}

fn encode(c: &Cursor) -> anyhow::Result<String> {
    let json = serde_json::to_vec(c)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json))
}

fn decode(s: &str) -> Result<Cursor, CursorError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim())
        .map_err(|_| CursorError::Invalid)?;
    serde_json::from_slice(&bytes).map_err(|_| CursorError::Invalid)
}

#[cfg(test)]
mod tests;
