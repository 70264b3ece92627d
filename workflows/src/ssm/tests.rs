//! Unit tests of `ssm`.

use super::*;
use serde_json::json;

const WIRE: [(InstanceStatus, &str); 8] = [
    (InstanceStatus::Pending, "Pending"),
    (InstanceStatus::InProgress, "InProgress"),
    (InstanceStatus::Delayed, "Delayed"),
    (InstanceStatus::Success, "Success"),
    (InstanceStatus::Cancelled, "Cancelled"),
    (InstanceStatus::TimedOut, "TimedOut"),
    (InstanceStatus::Failed, "Failed"),
    (InstanceStatus::Cancelling, "Cancelling"),
];

#[test]
fn instance_statuses_keep_ssm_names_on_the_wire() {
    for (status, wire) in WIRE {
        assert_eq!(serde_json::to_value(&status).unwrap(), json!(wire));
        assert_eq!(status.to_string(), wire);
        assert_eq!(InstanceStatus::from(wire), status);
        let back: InstanceStatus = serde_json::from_value(json!(wire)).unwrap();
        assert_eq!(back, status);
    }
}

#[test]
fn an_unknown_status_is_kept_verbatim_and_is_final() {
    let s: InstanceStatus = serde_json::from_value(json!("Undeliverable")).unwrap();
    assert_eq!(s, InstanceStatus::Other("Undeliverable".into()));
    assert_eq!(serde_json::to_value(&s).unwrap(), json!("Undeliverable"));
    assert_eq!(s.to_string(), "Undeliverable");
    assert!(s.is_final());
}

#[test]
fn limits_are_counts_or_percentages() {
    for ok in ["0", "1", "25", "0%", "10%", "100%"] {
        assert!(valid_max_errors(ok), "{ok}");
    }
    for ok in ["1", "50", "1%", "10%", "100%"] {
        assert!(valid_max_concurrency(ok), "{ok}");
    }
    for bad in [
        "", "%", "-1", "101%", "01", "1.5", "ten", "10 %", "99999999",
    ] {
        assert!(!valid_max_errors(bad), "{bad}");
        assert!(!valid_max_concurrency(bad), "{bad}");
    }
    assert!(!valid_max_concurrency("0"));
    assert!(!valid_max_concurrency("0%"));
}

#[test]
fn plugin_output_splits_at_the_aws_error_separator() {
    let out = "CERTFLOW_INSTALLED_SERIAL=0A\n\n----------ERROR-------\ncertflow-install: bad\n";
    let (o, e) = split_output(out);
    assert!(o.contains("CERTFLOW_INSTALLED_SERIAL=0A"));
    assert_eq!(e.trim(), "certflow-install: bad");
    assert_eq!(split_output("only out"), ("only out", ""));
}

#[test]
fn limits_resolve_against_the_fleet() {
    assert_eq!(of_fleet("10%", 1000, true), 100);
    assert_eq!(of_fleet("10%", 5, true), 1);
    assert_eq!(of_fleet("10%", 5, false), 0);
    assert_eq!(of_fleet("3", 1000, true), 3);
    assert_eq!(of_fleet("0", 1000, false), 0);
    assert_eq!(of_fleet("100%", 7, false), 7);
}

#[test]
fn final_statuses() {
    let finals: Vec<&str> = WIRE
        .iter()
        .filter(|(s, _)| s.is_final())
        .map(|(_, w)| *w)
        .collect();
    assert_eq!(finals, ["Success", "Cancelled", "TimedOut", "Failed"]);
}
