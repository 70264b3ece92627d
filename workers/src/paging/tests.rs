//! The merge of index pages: order, filters, limit and cursor, against an index in memory
//! whose Queries return as few jobs as a test likes (as DynamoDB does when a page reaches
//! its size limit).

use std::cell::RefCell;

use engine::JobStatus::{self, Cancelled, Failed, Pending, Running, Succeeded, Waiting};

use super::*;
use crate::testing::{job_at, T0};

const ARN: &str = "arn:aws:acm:eu-west-1:111122223333:certificate/c-1";

/// The indexes in memory. Each Query returns at most `max_page` jobs, and a cursor when it
/// returned a full page (DynamoDB's LastEvaluatedKey: present when the page is full, even
/// if nothing follows).
struct Memory {
    jobs: RefCell<Vec<JobRecord>>,
    max_page: usize,
    /// The page sizes asked for, in order.
    asked: RefCell<Vec<usize>>,
}

impl Memory {
    fn new(jobs: Vec<JobRecord>, max_page: usize) -> Self {
        Memory {
            jobs: RefCell::new(jobs),
            max_page,
            asked: RefCell::new(Vec::new()),
        }
    }
}

impl Index for Memory {
    // Answered before the future is made: a future holding `&RefCell` would not be Send.
    fn page(
        &self,
        source: &Source,
        start: Option<String>,
        size: usize,
    ) -> impl std::future::Future<Output = anyhow::Result<Page>> + Send {
        self.asked.borrow_mut().push(size);
        let mut found: Vec<JobRecord> = self
            .jobs
            .borrow()
            .iter()
            .filter(|j| match source {
                Source::Status(st) => j.status == *st,
                Source::Certificate(arn) => {
                    j.labels.get(CERTIFICATE_LABEL).map(String::as_str) == Some(arn.as_str())
                }
            })
            .cloned()
            .collect();
        // ByStatus is sorted by update, ByCertificateArn by creation; newest first.
        found.sort_by_key(|j| {
            std::cmp::Reverse(match source {
                Source::Status(_) => j.updated_at,
                Source::Certificate(_) => j.created_at,
            })
        });
        let from: usize = start.map_or(0, |c| c.parse().unwrap());
        let n = size.min(self.max_page);
        let jobs: Vec<JobRecord> = found.into_iter().skip(from).take(n).collect();
        let cursor = (jobs.len() == n).then(|| (from + n).to_string());
        std::future::ready(Ok(Page { jobs, cursor }))
    }
}

fn query(statuses: &[JobStatus], limit: usize) -> Query {
    Query {
        statuses: statuses.to_vec(),
        certificate_arn: None,
        since: None,
        workflow: None,
        limit,
    }
}

fn ids(listing: &Listing) -> Vec<String> {
    listing.jobs.iter().map(|j| j.job_id.to_string()).collect()
}

/// Every page of a listing, following the cursor to the end.
async fn pages(index: &Memory, q: &Query) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = merge(index, q, cursor.as_deref()).await.unwrap();
        out.push(ids(&page));
        assert!(out.len() < 50, "the cursor does not end: {out:?}");
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

/// Unfinished jobs in three statuses (seconds after T0 in the name), and two finished.
fn unfinished() -> Vec<JobRecord> {
    vec![
        job_at("p5", Pending, 5_000),
        job_at("p2", Pending, 2_000),
        job_at("r4", Running, 4_000),
        job_at("w3", Waiting, 3_000),
        job_at("w1", Waiting, 1_000),
        job_at("f6", Failed, 6_000),
        job_at("s7", Succeeded, 7_000),
    ]
}

#[tokio::test]
async fn statuses_merge_newest_update_first() {
    for max_page in [1, 2, 100] {
        let index = Memory::new(unfinished(), max_page);
        let page = merge(&index, &query(&JobStatus::ACTIVE, 50), None)
            .await
            .unwrap();
        assert_eq!(
            ids(&page),
            ["p5", "r4", "w3", "p2", "w1"],
            "pages of {max_page}"
        );
        assert_eq!(page.next_cursor, None, "pages of {max_page}");
    }
}

#[tokio::test]
async fn the_cursor_continues_every_status_without_gaps_or_repeats() {
    let all = ["p5", "r4", "w3", "p2", "w1"];
    for max_page in [1, 2, 3, 100] {
        for limit in 1..=6 {
            let index = Memory::new(unfinished(), max_page);
            let got = pages(&index, &query(&JobStatus::ACTIVE, limit)).await;
            assert_eq!(got.concat(), all, "limit {limit}, pages of {max_page}");
            // Pages are full but the last, and there is no empty page at the end.
            assert_eq!(got.len(), all.len().div_ceil(limit), "{got:?}");
            assert!(
                got.iter().all(|p| p.len() <= limit && !p.is_empty()),
                "{got:?}"
            );
        }
    }
}

#[tokio::test]
async fn each_page_asks_one_job_more_than_the_limit_up_to_a_maximum() {
    let index = Memory::new(unfinished(), 100);
    merge(&index, &query(&[Pending, Running], 2), None)
        .await
        .unwrap();
    assert_eq!(*index.asked.borrow(), [3, 3]);
    let index = Memory::new(unfinished(), 100);
    merge(&index, &query(&[Pending], 5_000), None)
        .await
        .unwrap();
    assert_eq!(*index.asked.borrow(), [MAX_PAGE]);
}

#[tokio::test]
async fn equal_update_times_follow_the_order_the_statuses_were_given() {
    let jobs = vec![job_at("p", Pending, 1_000), job_at("r", Running, 1_000)];
    let index = Memory::new(jobs, 100);
    let page = merge(&index, &query(&[Running, Pending], 10), None)
        .await
        .unwrap();
    assert_eq!(ids(&page), ["r", "p"]);
    let page = merge(&index, &query(&[Pending, Running], 10), None)
        .await
        .unwrap();
    assert_eq!(ids(&page), ["p", "r"]);
}

#[tokio::test]
async fn since_ends_each_status_at_its_first_older_job() {
    let jobs = vec![
        job_at("p5", Pending, 5_000),
        job_at("p1", Pending, 1_000),
        job_at("r4", Running, 4_000),
        job_at("r0", Running, 0),
    ];
    let mut q = query(&[Pending, Running], 10);
    q.since = Some(T0 + 2_000);
    let index = Memory::new(jobs.clone(), 1);
    let page = merge(&index, &q, None).await.unwrap();
    assert_eq!(ids(&page), ["p5", "r4"]);
    assert_eq!(page.next_cursor, None, "older jobs are not more jobs");
    q.limit = 1;
    let index = Memory::new(jobs, 1);
    assert_eq!(pages(&index, &q).await, [["p5"], ["r4"]]);
}

#[tokio::test]
async fn a_certificates_jobs_are_newest_created_first_filtered_by_status_and_since() {
    let at = |id: &str, status, created: i64, updated: i64| {
        let mut j = job_at(id, status, created);
        j.updated_at = T0 + updated;
        j.labels.insert(CERTIFICATE_LABEL.into(), ARN.into());
        j
    };
    let mut other = job_at("other", Failed, 10_000);
    other
        .labels
        .insert(CERTIFICATE_LABEL.into(), format!("{ARN}-2"));
    let jobs = vec![
        at("a", Failed, 9_000, 9_000),
        at("b", Succeeded, 8_000, 8_000),
        at("c", Failed, 7_000, 7_000),
        // Updated before --since: skipped, and the stream reads on...
        at("d", Failed, 2_000, 3_000),
        // ...because an older job may have been updated since (ordered by creation).
        at("e", Failed, 1_000, 20_000),
        other,
    ];
    let q = Query {
        statuses: vec![Failed],
        certificate_arn: Some(ARN.into()),
        since: Some(T0 + 6_000),
        workflow: None,
        limit: 10,
    };
    for max_page in [1, 2, 100] {
        let index = Memory::new(jobs.clone(), max_page);
        let page = merge(&index, &q, None).await.unwrap();
        assert_eq!(ids(&page), ["a", "c", "e"], "pages of {max_page}");
        assert_eq!(page.next_cursor, None);
        let q1 = Query {
            limit: 1,
            ..q.clone()
        };
        assert_eq!(pages(&index, &q1).await, [["a"], ["c"], ["e"]]);
    }
}

#[tokio::test]
async fn a_certificate_listing_reads_one_index_whatever_the_statuses() {
    let mut j = job_at("a", Cancelled, 1_000);
    j.labels.insert(CERTIFICATE_LABEL.into(), ARN.into());
    let index = Memory::new(vec![j], 100);
    let q = Query {
        statuses: JobStatus::ALL.to_vec(),
        certificate_arn: Some(ARN.into()),
        since: None,
        workflow: None,
        limit: 5,
    };
    let page = merge(&index, &q, None).await.unwrap();
    assert_eq!(ids(&page), ["a"]);
    assert_eq!(
        index.asked.borrow().len(),
        1,
        "one Query, not one per status"
    );
}

#[tokio::test]
async fn a_cursor_may_change_the_limit_and_since_but_not_the_filters() {
    let index = Memory::new(unfinished(), 100);
    let first = merge(&index, &query(&JobStatus::ACTIVE, 1), None)
        .await
        .unwrap();
    let cursor = first.next_cursor.unwrap();
    let rest = merge(&index, &query(&JobStatus::ACTIVE, 10), Some(&cursor))
        .await
        .unwrap();
    assert_eq!(ids(&rest), ["r4", "w3", "p2", "w1"]);

    let refused = "this cursor belongs to a listing with other --status, --certificate-arn or --workflow filters; repeat those filters, or drop --cursor to start again";
    for other in [
        query(&[Pending, Running], 1),
        query(&[Waiting, Running, Pending], 1),
        Query {
            certificate_arn: Some(ARN.into()),
            ..query(&JobStatus::ACTIVE, 1)
        },
        Query {
            workflow: Some("reconcile".into()),
            ..query(&JobStatus::ACTIVE, 1)
        },
    ] {
        let e = merge(&index, &other, Some(&cursor)).await.unwrap_err();
        assert_eq!(e.to_string(), refused, "{other:?}");
    }
}

#[tokio::test]
async fn a_cursor_that_is_not_one_is_refused() {
    let index = Memory::new(unfinished(), 100);
    let q = query(&JobStatus::ACTIVE, 1);
    let not_json = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("not json");
    for bad in ["!!!", "", not_json.as_str()] {
        let e = merge(&index, &q, Some(bad)).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid --cursor: pass the NextCursor of the previous page unchanged",
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn nothing_to_list_is_an_empty_page_without_cursor() {
    let index = Memory::new(unfinished(), 100);
    let page = merge(&index, &query(&[Cancelled], 10), None).await.unwrap();
    assert!(page.jobs.is_empty());
    assert_eq!(page.next_cursor, None);
}

#[tokio::test]
async fn a_workflow_filter_reads_on_past_other_workflows_and_pages_on() {
    let mut jobs = unfinished();
    for j in jobs.iter_mut() {
        if ["p5", "w3", "w1"].contains(&j.job_id.as_str()) {
            j.workflow = "reconcile".into();
        }
    }
    let q = Query {
        workflow: Some("reconcile".into()),
        ..query(&JobStatus::ACTIVE, 2)
    };
    for max_page in [1, 2, 100] {
        let index = Memory::new(jobs.clone(), max_page);
        assert_eq!(
            pages(&index, &q).await,
            [vec!["p5", "w3"], vec!["w1"]],
            "pages of {max_page}"
        );
    }
}

#[tokio::test]
async fn a_rare_workflow_ends_a_page_early_at_the_budget_and_the_cursor_goes_on() {
    let mut jobs: Vec<JobRecord> = (0..FILTER_BUDGET as i64 + 500)
        .map(|i| job_at(&format!("x{i}"), Succeeded, 10_000 + i))
        .collect();
    let mut rare = job_at("rare", Succeeded, 1_000);
    rare.workflow = "reconcile".into();
    jobs.push(rare);
    let index = Memory::new(jobs, 100);
    let q = Query {
        workflow: Some("reconcile".into()),
        ..query(&[Succeeded], 10)
    };
    let first = merge(&index, &q, None).await.unwrap();
    assert!(first.jobs.is_empty() && first.cut, "{first:?}");
    assert_eq!(first.skipped, FILTER_BUDGET);
    let asked = index.asked.borrow().len();
    assert!(
        asked <= FILTER_BUDGET / 100 + 1,
        "{asked} Queries of 100 for the budget"
    );
    let second = merge(&index, &q, first.next_cursor.as_deref())
        .await
        .unwrap();
    assert_eq!(ids(&second), ["rare"]);
    assert!(!second.cut && second.next_cursor.is_none(), "{second:?}");
}
