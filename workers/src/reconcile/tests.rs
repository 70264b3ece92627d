//! Unit tests of `reconcile`.

use engine::JobStatus;

use super::*;
use crate::testing::job;

const ARN: &str =
    "arn:aws:acm:us-east-1:111122223333:certificate/3f6c1e2a-9b1d-4c2e-8f00-0123456789ab";

fn assessment(action: Action, why: &str) -> Assessment {
    Assessment {
        target: "Tier=web".into(),
        cert_name: "shop".into(),
        certificate_arn: ARN.into(),
        acm_serial: Some("0a:1b:2c:3d:4e:5f:60:71".into()),
        acm_status: Some("ISSUED".into()),
        exported_serial: Some("0a:1b:2c:3d:4e:5f:60:71".into()),
        days_to_expiry: Some(200),
        not_after: None,
        servers: 2,
        current: 2,
        lagging: Vec::new(),
        offline_lagging: Vec::new(),
        departed: Vec::new(),
        action,
        why: why.into(),
        alert: None,
    }
}

fn renewed() -> Assessment {
    Assessment {
        exported_serial: Some("0".into()),
        current: 0,
        ..assessment(
            Action::Export {
                serial: "0a:1b:2c:3d:4e:5f:60:71".into(),
            },
            "ACM's certificate is serial 0a:1b:2c:3d:4e:5f:60:71, the target was last sent serial 0: a renewal that was not exported",
        )
    }
}

fn joined() -> Assessment {
    Assessment {
        servers: 3,
        lagging: vec!["i-03".into()],
        ..assessment(
            Action::Install {
                servers: vec!["i-03".into()],
            },
            "1 of 3 server(s) carrying Tier=web do not run serial 0a (new, replaced, or offline at the last install)",
        )
    }
}

fn planned(id: &str, status: Option<JobStatus>) -> PlannedJob {
    let rec = status.map(|s| JobRecord {
        last_error: (s == JobStatus::Failed).then(|| "disk full".to_string()),
        ..job(id, s)
    });
    PlannedJob::of(&JobId::new(id), rec.as_ref())
}

#[test]
fn rows_are_grouped_and_counted_as_a_run_records_them() {
    let in_sync = plan_row(
        assessment(Action::None, "in sync: serial 0a on all 2 server(s)"),
        None,
    );
    assert_eq!(in_sync.group, reconcile::IN_SYNC);
    let export = plan_row(renewed(), Some(planned("j-new", None)));
    assert_eq!(
        (export.group, export.unfixed.as_deref()),
        (reconcile::FIXING, None)
    );
    let running = plan_row(joined(), Some(planned("j-run", Some(JobStatus::Running))));
    assert_eq!(running.group, reconcile::FIXING, "a run finds it and waits");
    let failed = plan_row(joined(), Some(planned("j-bad", Some(JobStatus::Failed))));
    assert_eq!(failed.group, reconcile::UNFIXED);
    assert_eq!(
        failed.unfixed.as_deref(),
        Some("job j-bad FAILED: disk full; certflow does not run it again: retry it with `certflow jobs retry j-bad`")
    );
    let done = plan_row(joined(), Some(planned("j-ok", Some(JobStatus::Succeeded))));
    assert!(done
        .unfixed
        .unwrap_or_default()
        .contains("succeeded, yet the row still differs"));
    let mut alerting = assessment(Action::None, "in sync");
    alerting.alert = Some("expires in 12 day(s)".into());
    let alert = plan_row(alerting.clone(), None);
    assert_eq!(alert.group, reconcile::ALERT);
    let mut offline = assessment(Action::None, "1 offline server(s)");
    offline.offline_lagging = vec!["i-09".into()];
    let waiting = plan_row(offline, None);
    assert_eq!(waiting.group, reconcile::WAITING);
    let busy = plan_row(
        assessment(
            Action::Busy {
                job_id: "j-exp".into(),
            },
            "its export job j-exp is still running",
        ),
        None,
    );
    assert_eq!(busy.group, reconcile::BUSY);
    // A second row of the alerting certificate: one alert, as a run raises one.
    let rows = [
        in_sync,
        export,
        running,
        failed,
        alert.clone(),
        alert,
        waiting,
        busy,
    ];
    let c = tally(&rows, 1);
    assert_eq!(
        (
            c.rows,
            c.in_sync,
            c.exports,
            c.installs,
            c.unfixed,
            c.alerts,
            c.waiting,
            c.busy,
            c.unreadable
        ),
        (8, 1, 1, 1, 1, 1, 1, 1, 1)
    );
    assert_eq!(
        c.summary(),
        "8 row(s): 1 in sync, 1 export(s), 1 install(s), 1 alert(s), 1 unfixed, 1 busy with their export, 1 waiting for offline servers, 1 item(s) not rows certflow wrote"
    );
}

#[test]
fn the_plan_shows_each_row_its_servers_action_job_and_why() {
    let rows = [
        plan_row(
            assessment(Action::None, "in sync: serial 0a on all 2 server(s)"),
            None,
        ),
        plan_row(renewed(), Some(planned("5d1c9a0e-aaaa-bbbb", None))),
        plan_row(
            joined(),
            Some(planned("77aa0b1c-cccc-dddd", Some(JobStatus::Failed))),
        ),
    ];
    let c = tally(&rows, 0);
    let text = plan_text(&rows, &[], &c);
    assert_eq!(
        text,
        "\
TARGET    NAME  CERTIFICATE  ACM SERIAL    EXPORTED SERIAL  SERVERS  CURRENT  LAGGING  ACTION   JOB                        WHY
Tier=web  shop  3f6c1e2a…    0a:1b:2c:3d…  0a:1b:2c:3d…     2        2        0        none     -                          in sync: serial 0a on all 2 server(s)
Tier=web  shop  3f6c1e2a…    0a:1b:2c:3d…  0                2        0        0        export   5d1c9a0e… new              ACM's certificate is serial 0a:1b:2c:3d:4e:5f:60:71, the ta…
Tier=web  shop  3f6c1e2a…    0a:1b:2c:3d…  0a:1b:2c:3d…     3        2        1: i-03  install  77aa0b1c… FAILED: unfixed  1 of 3 server(s) carrying Tier=web do not run serial 0a (ne…

Not in sync
Tier=web shop  arn:aws:acm:us-east-1:111122223333:certificate/3f6c1e2a-9b1d-4c2e-8f00-0123456789ab
  export: ACM's certificate is serial 0a:1b:2c:3d:4e:5f:60:71, the target was last sent serial 0: a renewal that was not exported
  servers: 2 carry the target, 0 run the exported serial
  job 5d1c9a0e-aaaa-bbbb: not started yet; a run starts it
Tier=web shop  arn:aws:acm:us-east-1:111122223333:certificate/3f6c1e2a-9b1d-4c2e-8f00-0123456789ab
  install: 1 of 3 server(s) carrying Tier=web do not run serial 0a (new, replaced, or offline at the last install)
  servers: 3 carry the target, 2 run the exported serial; lagging: i-03
  unfixed: job 77aa0b1c-cccc-dddd FAILED: disk full; certflow does not run it again: retry it with `certflow jobs retry 77aa0b1c-cccc-dddd`

3 row(s): 1 in sync, 1 export(s), 0 install(s), 0 alert(s), 1 unfixed
Dry run: no job was started and nothing was written; `certflow reconcile --wait` runs it.
"
    );
}

#[test]
fn long_lists_of_servers_are_cut_and_counted() {
    let mut a = joined();
    a.lagging = (0..13).map(|i| format!("i-{i:02}")).collect();
    a.offline_lagging = vec!["i-99".into()];
    assert_eq!(lagging_cell(&a), "13: i-00 … +1 offline");
    let block = row_block(&a, None, None);
    assert!(
        block.contains("lagging: i-00, i-01, i-02, i-03, i-04, i-05, i-06, i-07, i-08, i-09 and 3 more; offline, lagging: i-99\n"),
        "{block}"
    );
}

#[test]
fn hostile_text_in_a_row_is_escaped_in_the_plan() {
    let mut a = renewed();
    a.cert_name = "web\u{1b}[2J".into();
    a.alert = Some("line\none".into());
    let rows = [plan_row(a, None)];
    let text = plan_text(&rows, &["k\u{1b}: bad".into()], &tally(&rows, 1));
    assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text}");
    assert!(text.contains("web\\x1b[2J"), "{text}");
    assert!(text.contains("  alert: line one\n"), "{text}");
}

#[test]
fn the_plan_as_json_has_the_assessment_fields_the_group_and_the_job() {
    let row = plan_row(joined(), Some(planned("j-1", Some(JobStatus::Failed))));
    let v = serde_json::to_value(&row).unwrap();
    assert_eq!(v["Target"], "Tier=web");
    assert_eq!(v["Action"]["Kind"], "Install");
    assert_eq!(v["Lagging"][0], "i-03");
    assert_eq!(v["Group"], "unfixed");
    assert_eq!(v["Job"]["Id"], "j-1");
    assert_eq!(v["Job"]["Exists"], true);
    assert_eq!(v["Job"]["Status"], "FAILED");
    let none = serde_json::to_value(plan_row(assessment(Action::None, "in sync"), None)).unwrap();
    assert_eq!(none["Job"], Value::Null);
    assert_eq!(none.get("Unfixed"), None);
}

#[test]
fn a_followed_run_says_what_it_did_and_names_its_alerts() {
    let mut rec = job("r-1", JobStatus::Succeeded);
    rec.workflow = reconcile::NAME.into();
    rec.step = "collect".into();
    rec.updated_at = rec.created_at + 4_200;
    let mut alerting = assessment(Action::None, "in sync");
    alerting.alert = Some("certificate gone".into());
    let rows = [
        RunRow {
            result: RowResult {
                assessment: renewed(),
                job_id: Some("j-1".into()),
                job_status: Some("PENDING".into()),
                unfixed: None,
            },
            group: reconcile::FIXING.into(),
            job_status_now: Some("SUCCEEDED".into()),
        },
        RunRow {
            result: RowResult {
                assessment: alerting,
                job_id: None,
                job_status: None,
                unfixed: None,
            },
            group: reconcile::ALERT.into(),
            job_status_now: None,
        },
    ];
    let state = ReconcileState {
        counts: Counts {
            rows: 3,
            in_sync: 1,
            exports: 1,
            alerts: 1,
            ..Counts::default()
        },
        ..ReconcileState::default()
    };
    let text = run_text(&rec, Some("3 row(s): 1 in sync"), &rows, 2, Some(&state));
    assert!(text.starts_with("\njob r-1 SUCCEEDED at step collect after 4.2s\n3 row(s): 1 in sync\n\nNot in sync when the run looked\nTier=web shop  arn:"), "{text}");
    assert!(text.contains("\n  job j-1: SUCCEEDED\n"), "{text}");
    assert!(text.contains("\n  alert: certificate gone\n"), "{text}");
    assert!(text.contains("\n1 alert(s) need a person"), "{text}");
    assert!(
        text.ends_with("details: certflow jobs show r-1\n"),
        "{text}"
    );
    let more = run_text(&rec, None, &rows[..1], 40, None);
    assert!(
        more.contains("\nNot in sync when the run looked (1 of 40 shown)\n"),
        "{more}"
    );
}
