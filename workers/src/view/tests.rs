//! What an operator sees: each view of a fixed job compared with its text in full.

use engine::{EventKind, JobStatus};
use serde_json::json;

use super::*;
use crate::testing::{event, job, T0};

/// An export job that failed in its `wait` step after 14.2 s, one server of two failing.
fn failed_export() -> JobRecord {
    let mut rec = job("j-1", JobStatus::Failed);
    rec.step = "wait".into();
    rec.attempt = 2;
    rec.updated_at = T0 + 14_200;
    rec.labels.insert("CertName".into(), "web".into());
    rec.labels
        .insert("Target".into(), "Environment=Production".into());
    rec.last_error = Some("install failed on 1 of 2 instances".into());
    // A lease left behind by a finished job is not the operator's business.
    rec.lease_owner = Some("w-9".into());
    rec.data = json!({
        "serial": "0a:1b",
        "instances": {
            "i-0ddd": {"status": "Failed", "detail": "key does not match certificate"},
            "i-0aaa": {"status": "Success", "detail": "Success", "serial": "0a1b"},
        },
    });
    rec
}

/// An export job's history: created, a poll, a step done, a retry, success.
fn history() -> Vec<HistoryEvent> {
    let created = HistoryEvent {
        attempt: 0,
        to_status: JobStatus::Pending,
        ..event(1, 0, EventKind::Created, "check")
    };
    let polled = HistoryEvent {
        duration_ms: Some(40),
        note: Some("certificate pending validation".into()),
        to_status: JobStatus::Waiting,
        ..event(2, 120, EventKind::Polled, "check")
    };
    let done = HistoryEvent {
        duration_ms: Some(35),
        to_step: "export".into(),
        ..event(3, 3_150, EventKind::StepCompleted, "check")
    };
    let retry = HistoryEvent {
        duration_ms: Some(1_500),
        error: Some("CreateSecret: ThrottlingException".into()),
        note: Some("attempt 1 of 5".into()),
        to_status: JobStatus::Waiting,
        ..event(4, 4_000, EventKind::RetryScheduled, "export")
    };
    let succeeded = HistoryEvent {
        attempt: 2,
        duration_ms: Some(61_000),
        note: Some("bundle stored".into()),
        to_status: JobStatus::Succeeded,
        ..event(5, 75_000, EventKind::Succeeded, "export")
    };
    vec![created, polled, done, retry, succeeded]
}

#[test]
fn a_job_row_shows_status_step_target_and_last_error() {
    let mut rec = failed_export();
    rec.step = "install".into();
    rec.last_error = Some("SendCommand: ThrottlingException".into());
    // A job of a workflow without labels leaves those cells empty.
    let demo = JobRecord {
        workflow: "demo".into(),
        step: "work".into(),
        attempt: 0,
        ..job("j-22", JobStatus::Waiting)
    };
    assert_eq!(
        jobs_table(&[rec, demo]),
        "\
JOB   STATUS   WORKFLOW            STEP (TRY)   TARGET                  CERT NAME  UPDATED                   LAST ERROR
j-1   FAILED   export-certificate  install (2)  Environment=Production  web        2026-01-01T00:00:14.200Z  SendCommand: ThrottlingException
j-22  WAITING  demo                work (0)                                        2026-01-01T00:00:00.000Z
"
    );
}

#[test]
fn a_long_or_multi_line_last_error_stays_on_its_row_and_is_cut() {
    let mut rec = job("j-1", JobStatus::Failed);
    let long = format!("line one\nline\ttwo {}", "x".repeat(100));
    rec.last_error = Some(long);
    let text = jobs_table(&[rec]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let cell = lines[1].split("  ").last().unwrap_or_default().to_string();
    assert!(cell.starts_with("line one line two xxx"), "{cell}");
    assert!(cell.ends_with('…'), "{cell}");
    assert_eq!(cell.chars().count(), LIST_ERROR_CHARS);
}

#[test]
fn an_empty_list_says_which_jobs_there_are_none_of() {
    assert_eq!(
        job_list_text(&[], None, &JobStatus::ACTIVE, None),
        "no PENDING/RUNNING/WAITING jobs\n"
    );
    assert_eq!(
        job_list_text(
            &[],
            None,
            &[JobStatus::Failed],
            Some("arn:aws:acm:eu-west-1:1:certificate/c")
        ),
        "no FAILED jobs for arn:aws:acm:eu-west-1:1:certificate/c\n"
    );
    // A page can come out empty (every job filtered) while more remain.
    assert_eq!(
        job_list_text(&[], Some("CUR"), &[JobStatus::Failed], None),
        "no FAILED jobs\nmore: repeat the command with --cursor CUR\n"
    );
    // The bare table of no jobs is its header.
    assert_eq!(
        jobs_table(&[]),
        "JOB  STATUS  WORKFLOW  STEP (TRY)  TARGET  CERT NAME  UPDATED  LAST ERROR\n"
    );
}

#[test]
fn a_page_with_more_ends_with_how_to_continue() {
    let jobs = [job("j-1", JobStatus::Running)];
    let text = job_list_text(&jobs, Some("eyJxIjoiIn0"), &JobStatus::ACTIVE, None);
    assert_eq!(
        text,
        format!(
            "{}more: repeat the command with --cursor eyJxIjoiIn0\n",
            jobs_table(&jobs)
        )
    );
    assert_eq!(
        job_list_text(&jobs, None, &JobStatus::ACTIVE, None),
        jobs_table(&jobs)
    );
}

#[test]
fn the_timeline_shows_each_attempt_when_it_started_and_how_it_ended() {
    assert_eq!(
        timeline(&history()),
        "\
#  STEP    TRY  STARTED                   TOOK   OUTCOME                 ERROR / NOTE
1  check   -    2026-01-01T00:00:00.000Z  -      created
2  check   1    2026-01-01T00:00:00.080Z  40ms   not ready, polls again  certificate pending validation
3  check   1    2026-01-01T00:00:03.115Z  35ms   done → export
4  export  1    2026-01-01T00:00:02.500Z  1.5s   error, will retry       CreateSecret: ThrottlingException (attempt 1 of 5)
5  export  2    2026-01-01T00:00:14.000Z  1m01s  SUCCEEDED               bundle stored
"
    );
    assert_eq!(
        timeline(&[]),
        "#  STEP  TRY  STARTED  TOOK  OUTCOME  ERROR / NOTE\n"
    );
}

#[test]
fn a_followed_job_prints_one_line_per_event() {
    let lines: Vec<String> = history().iter().map(event_line).collect();
    assert_eq!(
        lines,
        [
            "2026-01-01T00:00:00.000Z  check            created",
            "2026-01-01T00:00:00.120Z  check      try 1  not ready, polls again        40ms  certificate pending validation",
            "2026-01-01T00:00:03.150Z  check      try 1  done → export                 35ms",
            "2026-01-01T00:00:04.000Z  export     try 1  error, will retry             1.5s  CreateSecret: ThrottlingException (attempt 1 of 5)",
            "2026-01-01T00:01:15.000Z  export     try 2  SUCCEEDED                    1m01s  bundle stored",
        ]
    );
    let retried = HistoryEvent {
        worker: "operator".into(),
        to_step: "install".into(),
        ..event(9, 0, EventKind::Retried, "install")
    };
    assert_eq!(outcome(&retried), "retried by operator → install");
}

#[test]
fn a_failed_job_shows_where_it_failed_and_how_to_resume() {
    let rec = failed_export();
    let created = HistoryEvent {
        attempt: 0,
        ..event(1, 0, EventKind::Created, "check")
    };
    assert_eq!(
        job_text(&rec, &[created], &[]),
        "\
Job             j-1
Workflow        export-certificate
Status          FAILED
Step            wait (attempt 2)
CertName        web
Target          Environment=Production
Created         2026-01-01T00:00:00.000Z
Updated         2026-01-01T00:00:14.200Z
Took            14.2s
Serial          0a:1b
Last error      install failed on 1 of 2 instances

Timeline
#  STEP   TRY  STARTED                   TOOK  OUTCOME  ERROR / NOTE
1  check  -    2026-01-01T00:00:00.000Z  -     created

Install results
INSTANCE  STATUS   SERIAL  DETAIL
i-0aaa    Success  0a1b
i-0ddd    Failed   -       key does not match certificate

Fix the cause above, then resume it at step wait: certflow jobs retry j-1 --wait
"
    );
}

#[test]
fn a_running_job_shows_when_it_wakes_who_holds_it_and_how_to_stop_it() {
    let rec = JobRecord {
        step: "export".into(),
        next_wake_at: T0 + 5_000,
        lease_owner: Some("w-7".into()),
        lease_until: Some(T0 + 60_000),
        cancel_requested: true,
        ..job("j-2", JobStatus::Running)
    };
    assert_eq!(
        job_text(&rec, &[], &[]),
        "\
Job             j-2
Workflow        export-certificate
Status          RUNNING
Step            export (attempt 1)
Created         2026-01-01T00:00:00.000Z
Updated         2026-01-01T00:00:00.000Z
Next wake       2026-01-01T00:00:05.000Z
Deadline        2026-01-02T00:00:00.000Z
Leased by       w-7
Cancel          requested

Timeline
#  STEP  TRY  STARTED  TOOK  OUTCOME  ERROR / NOTE

Follow it: certflow jobs watch j-2    Stop it: certflow jobs cancel j-2
"
    );
}

#[test]
fn finished_jobs_that_did_not_fail_have_no_next_step() {
    for status in [JobStatus::Succeeded, JobStatus::Cancelled] {
        let rec = job("j-3", status);
        assert_eq!(next_step_hint(&rec), None, "{status}");
        assert!(
            job_text(&rec, &[], &[]).ends_with("ERROR / NOTE\n"),
            "{status}"
        );
    }
}

#[test]
fn a_renewal_lists_its_children_with_their_status_now() {
    let mut rec = job("r-1", JobStatus::Succeeded);
    rec.workflow = "renew-certificate".into();
    rec.data = json!({"children": [
        {"job_id": "c-1", "target": "Env=Prod", "cert_name": "web"},
        {"job_id": "c-2", "target": "Env=Staging", "cert_name": "web", "status": "FAILED"},
    ]});
    let found = children_of(&rec);
    assert_eq!(
        found
            .iter()
            .map(|c| (c.job_id.as_str(), c.target.as_str()))
            .collect::<Vec<_>>(),
        [("c-1", "Env=Prod"), ("c-2", "Env=Staging")]
    );
    let kids = [
        ChildView {
            job_id: "c-1".into(),
            target: "Env=Prod".into(),
            cert_name: "web".into(),
            status: "SUCCEEDED".into(),
            step: Some("wait".into()),
            last_error: None,
        },
        ChildView {
            job_id: "c-2".into(),
            target: "Env=Staging".into(),
            cert_name: "web".into(),
            status: "NOT FOUND".into(),
            step: None,
            last_error: Some(format!("throttled\n{}", "y".repeat(80))),
        },
    ];
    let text = job_text(&rec, &[], &kids);
    let section = text
        .split("\nChild jobs\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let error = format!("throttled {}…", "y".repeat(CHILD_ERROR_CHARS - 11));
    assert_eq!(
        section,
        format!(
            "\
JOB  TARGET       CERT NAME  STATUS     STEP  LAST ERROR
c-1  Env=Prod     web        SUCCEEDED  wait
c-2  Env=Staging  web        NOT FOUND        {error}
"
        )
    );
}

#[test]
fn data_that_is_not_what_the_views_expect_shows_nothing() {
    let mut rec = job("j-1", JobStatus::Succeeded);
    rec.data = json!({"instances": "not a map", "children": 7, "serial": 42});
    assert!(instances(&rec).is_empty());
    assert!(instances_table(&rec).is_none());
    assert!(children_of(&rec).is_empty());
    assert!(!job_text(&rec, &[], &[]).contains("Serial"));
}

#[test]
fn a_job_as_json_has_the_tables_attribute_names() {
    let rec = failed_export();
    let v = job_json(&rec);
    let mut keys: Vec<&str> = v
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "Attempt",
            "CancelRequested",
            "CertName",
            "CertificateArn",
            "CreatedAt",
            "Data",
            "DeadlineAt",
            "JobId",
            "Labels",
            "LastError",
            "LeaseOwner",
            "LeaseUntil",
            "NextWakeAt",
            "SenderId",
            "Status",
            "Step",
            "Target",
            "UpdatedAt",
            "Version",
            "Workflow",
        ],
        "DrivenBy, HistoryCount, ExpiresAt and TraceParent stay internal"
    );
    assert_eq!(v["JobId"], "j-1");
    assert_eq!(v["Status"], "FAILED");
    assert_eq!(v["Step"], "wait");
    assert_eq!(v["Attempt"], 2);
    assert_eq!(v["UpdatedAt"], "2026-01-01T00:00:14.200Z");
    assert_eq!(v["LeaseUntil"], Value::Null);
    assert_eq!(v["LastError"], "install failed on 1 of 2 instances");
    // Labels appear both as a map and, for the well-known ones, at the top level.
    assert_eq!(v["Target"], "Environment=Production");
    assert_eq!(v["Labels"]["CertName"], "web");
    assert_eq!(v["CertificateArn"], Value::Null, "a missing label is null");
    assert_eq!(v["Data"]["serial"], "0a:1b");
}

#[test]
fn a_shown_job_as_json_adds_history_instances_and_children() {
    let rec = failed_export();
    let kids = [ChildView {
        job_id: "c-1".into(),
        target: "Env=Prod".into(),
        cert_name: "web".into(),
        status: "FAILED".into(),
        step: Some("install".into()),
        last_error: Some("boom".into()),
    }];
    let v = job_detail_json(&rec, &history(), &kids);
    assert_eq!(v["JobId"], "j-1");
    assert_eq!(
        v["History"][3],
        json!({
            "Seq": 4,
            "At": "2026-01-01T00:00:04.000Z",
            "StartedAt": "2026-01-01T00:00:02.500Z",
            "Event": "retry-scheduled",
            "Step": "export",
            "Attempt": 1,
            "DurationMs": 1500,
            "ToStep": "export",
            "ToStatus": "WAITING",
            "Error": "CreateSecret: ThrottlingException",
            "Note": "attempt 1 of 5",
            "Worker": "w-1",
        })
    );
    assert_eq!(v["History"][0]["DurationMs"], Value::Null);
    assert_eq!(v["History"][0]["StartedAt"], v["History"][0]["At"]);
    assert_eq!(
        v["Instances"],
        json!([
            {"InstanceId": "i-0aaa", "Status": "Success", "Detail": "Success", "Serial": "0a1b"},
            {"InstanceId": "i-0ddd", "Status": "Failed", "Detail": "key does not match certificate", "Serial": null},
        ])
    );
    assert_eq!(
        v["Children"],
        json!([{
            "JobId": "c-1", "Target": "Env=Prod", "CertName": "web",
            "Status": "FAILED", "Step": "install", "LastError": "boom",
        }])
    );
    let bare = job_detail_json(&job("j-9", JobStatus::Pending), &[], &[]);
    assert_eq!(bare["History"], json!([]));
    assert_eq!(bare["Instances"], json!([]));
    assert_eq!(bare["Children"], json!([]));
}

#[test]
fn a_listing_as_json_is_the_jobs_and_the_next_cursor() {
    let jobs = [
        job("j-1", JobStatus::Running),
        job("j-2", JobStatus::Pending),
    ];
    let v = job_list_json(&jobs, Some("CUR"));
    assert_eq!(v["NextCursor"], "CUR");
    assert_eq!(v["Jobs"][0], job_json(&jobs[0]));
    assert_eq!(v["Jobs"][1]["JobId"], "j-2");
    assert_eq!(
        job_list_json(&[], None),
        json!({"Jobs": [], "NextCursor": null})
    );
}

#[test]
fn durations_read_well() {
    assert_eq!(duration(0), "0ms");
    assert_eq!(duration(840), "840ms");
    assert_eq!(duration(999), "999ms");
    assert_eq!(duration(1_000), "1.0s");
    assert_eq!(duration(3_240), "3.2s");
    assert_eq!(duration(60_000), "1m00s");
    assert_eq!(duration(245_000), "4m05s");
    assert_eq!(duration(3_600_000), "1h00m");
    assert_eq!(duration(7_380_000), "2h03m");
}

#[test]
fn tables_align_on_characters_not_bytes_and_clip_cuts_with_an_ellipsis() {
    let t = table(
        &["A", "BB", "C"],
        &[vec!["xyz".into(), "1".into(), "é".into()]],
    );
    assert_eq!(t, "A    BB  C\nxyz  1   é\n");
    let t = table(
        &["NAME", "N"],
        &[vec!["café".into(), "1".into()], vec!["x".into(), "".into()]],
    );
    assert_eq!(t, "NAME  N\ncafé  1\nx\n");
    assert_eq!(clip("abcdef", 4), "abc…");
    assert_eq!(clip("abcd", 4), "abcd");
    assert_eq!(clip("ééééé", 3), "éé…");
    assert_eq!(clip("a\nb\r\tc", 10), "a b  c");
}

#[test]
fn serials_and_certificate_ids_are_clipped_for_tables() {
    assert_eq!(serial_cell(None), "-");
    assert_eq!(serial_cell(Some("0a:1b")), "0a:1b");
    assert_eq!(serial_cell(Some("0a:1b:2c:3d:4e:5f:60:71")), "0a:1b:2c:3d…");
    assert_eq!(
        certificate_id("arn:aws:acm:us-east-1:111122223333:certificate/3f6c1e2a-9b1d-4c2e"),
        "3f6c1e2a…"
    );
    assert_eq!(certificate_id("c-1"), "c-1");
}
