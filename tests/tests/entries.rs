//! A job's entries on DynamoDB (the emulator, through the real SDK): written in batches
//! beyond BatchWriteItem's 25, replaced by key, paged in key order, filtered by group,
//! kept apart from the history and the status index, and bad names refused.

use std::time::Duration;

use certflow_tests::Stack;
use engine::{Entry, Groups, JobStatus, NewJob, Outcome, Registry, Workflow};
use serde_json::json;

fn registry() -> Registry {
    Registry::new().register(
        Workflow::new("entries")
            .deadline(Duration::from_secs(600))
            .step(
                "only",
                |_ctx, s: u32| async move { Ok(Outcome::succeed(s)) },
            ),
    )
}

fn server(i: usize, group: &str) -> Entry {
    Entry::new(
        format!("i-{i:04}"),
        group,
        json!({"Status": group, "Serial": format!("0{i}")}),
    )
}

#[tokio::test]
async fn entries_page_in_key_order_filter_by_group_and_stay_out_of_the_history() {
    let stack = Stack::new("entries", registry()).await;
    let jobs = &stack.jobs;
    let id = jobs
        .create(NewJob::new("entries", None, &1u32).unwrap())
        .await
        .unwrap()
        .record
        .job_id;
    let deadline = jobs.get(&id).await.unwrap().deadline_at;

    // 120 entries (five BatchWriteItem calls), every tenth one failed, written out of order.
    let mut all: Vec<Entry> = (0..120)
        .rev()
        .map(|i| server(i, if i % 10 == 3 { "failed" } else { "ok" }))
        .collect();
    jobs.put_entries(&id, "servers", &all, deadline)
        .await
        .unwrap();
    // Written again, one replaced: still 120, the replacement wins.
    all[0] = server(119, "failed");
    jobs.put_entries(&id, "servers", &all, deadline)
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = jobs
            .entries(&id, "servers", &Groups::All, after.as_deref(), 50)
            .await
            .unwrap();
        pages += 1;
        assert!(page.entries.len() <= 50);
        seen.extend(page.entries);
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert!(
        pages >= 3,
        "120 entries in pages of 50 take 3 pages, got {pages}"
    );
    let keys: Vec<&str> = seen.iter().map(|e| e.key.as_str()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "key order");
    assert_eq!(seen.len(), 120);
    assert_eq!(seen[119].group, "failed", "the later write replaced i-0119");
    assert_eq!(seen[119].data["Status"], "failed");
    assert!(seen.iter().all(|e| e.at > 0));

    let failed = jobs
        .all_entries(&id, "servers", &Groups::Only(vec!["failed".into()]))
        .await
        .unwrap();
    assert_eq!(failed.len(), 13, "12 tenth ones and the replaced i-0119");
    assert!(failed.iter().all(|e| e.group == "failed"));
    let rest = jobs
        .all_entries(&id, "servers", &Groups::Except(vec!["failed".into()]))
        .await
        .unwrap();
    assert_eq!(rest.len(), 107);
    // A filtered page still stops at its limit and says where to go on.
    let first = jobs
        .entries(
            &id,
            "servers",
            &Groups::Only(vec!["failed".into()]),
            None,
            5,
        )
        .await
        .unwrap();
    assert_eq!(first.entries.len(), 5);
    assert_eq!(first.next.as_deref(), Some(first.entries[4].key.as_str()));

    // Other collections, the history and the listings by status do not see them.
    assert!(jobs
        .all_entries(&id, "children", &Groups::All)
        .await
        .unwrap()
        .is_empty());
    let history = jobs.history(&id).await.unwrap();
    assert_eq!(history.len(), 1, "only the creation event: {history:?}");
    let listed = jobs.list(JobStatus::Pending, 100, None).await.unwrap();
    assert!(listed.jobs.iter().filter(|r| r.job_id == id).count() <= 1);

    // Bad names are refused with a reason, and nothing is written.
    let err = jobs
        .put_entries(&id, "no#way", &all[..1], deadline)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("collection"), "{err}");
    let err = jobs
        .put_entries(
            &id,
            "servers",
            &[Entry::new("a\nb", "ok", json!({}))],
            deadline,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("key"), "{err}");
    assert_eq!(
        jobs.all_entries(&id, "servers", &Groups::All)
            .await
            .unwrap()
            .len(),
        120
    );
}
