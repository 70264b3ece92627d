//! How long each AWS call takes in the benchmarks: a median per service (or per
//! operation), drawn with jitter and a small tail.
//!
//! The medians are AWS's typical figures, in-region, from a client in the same region:
//!
//! | call | median | source |
//! |---|---|---|
//! | DynamoDB reads and single-item writes (`GetItem`, `UpdateItem`, `Query`, …) | 5 ms | "single-digit millisecond performance at any scale" (DynamoDB product page and Developer Guide, *What is Amazon DynamoDB?*) |
//! | DynamoDB transactions (`TransactWriteItems`) | 10 ms | two-phase: twice the work of a write (DynamoDB Developer Guide, *Transactions*: each item is read and written twice) |
//! | SQS `SendMessage`, `ReceiveMessage` (a message waiting), `DeleteMessage`, `ChangeMessageVisibility` | 15 ms | AWS publishes no figure; 10–20 ms is what in-region clients commonly measure |
//! | ACM, Secrets Manager, SSM control plane | 40–50 ms | no published figure; control-plane APIs commonly answer in 30–80 ms |
//! | ACM `ExportCertificate`, SSM `SendCommand` | 80 ms | the slower of those (key encryption; command fan-out) |
//! | EventBridge `PutEvents` | 30 ms | no published figure |
//! | EventBridge rule → SQS delivery of SSM's status-change event | 500 ms | no published figure (AWS says "near real time"); an assumption |
//!
//! Each draw is the median times a factor uniform in [0.7, 1.3]; one draw in a hundred is
//! three times the median instead (the tail a p99 sees).

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;

/// Medians per `"<service> <Operation>"`, with `"<service> *"` for the rest of a service.
#[derive(Clone, Debug, Default)]
pub struct LatencyModel {
    medians: BTreeMap<String, f64>,
    scale: f64,
}

/// Where the default figures come from, for the benchmarks' output.
pub const SOURCES: &str = "DynamoDB: single-digit ms (AWS product page, Developer Guide) -> 5 ms, transactions 10 ms; \
SQS: no published figure, 10-20 ms commonly measured in-region -> 15 ms; \
ACM / Secrets Manager / SSM control plane: no published figure, 30-80 ms commonly measured -> 40-50 ms, ExportCertificate and SendCommand 80 ms; \
EventBridge PutEvents 30 ms; EventBridge rule to SQS delivery 500 ms (assumed; AWS says near real time). \
Each draw: median x U[0.7, 1.3], 1 % of draws 3 x median.";

impl LatencyModel {
    /// AWS's typical figures (see the module's table).
    pub fn aws_typical() -> LatencyModel {
        let mut m = LatencyModel {
            medians: BTreeMap::new(),
            scale: 1.0,
        };
        for (k, ms) in [
            ("dynamodb *", 5.0),
            ("dynamodb TransactWriteItems", 10.0),
            ("sqs *", 15.0),
            ("acm *", 50.0),
            ("acm ExportCertificate", 80.0),
            ("secretsmanager *", 40.0),
            ("ssm *", 50.0),
            ("ssm SendCommand", 80.0),
            ("events PutEvents", 30.0),
            ("events delivery", 500.0),
        ] {
            m.medians.insert(k.to_string(), ms);
        }
        m
    }

    /// No latency at all.
    pub fn none() -> LatencyModel {
        LatencyModel {
            medians: BTreeMap::new(),
            scale: 0.0,
        }
    }

    /// Every median multiplied by `factor` (0: no latency).
    pub fn scaled(mut self, factor: f64) -> LatencyModel {
        self.scale = factor.max(0.0);
        self
    }

    /// Sets the median of `key` (`"<service> <Operation>"` or `"<service> *"`), in ms.
    pub fn set(&mut self, key: &str, ms: f64) {
        self.medians.insert(key.to_string(), ms.max(0.0));
    }

    /// The median of a call, in ms (scaled).
    pub fn median(&self, service: &str, op: &str) -> f64 {
        let m = self
            .medians
            .get(&format!("{service} {op}"))
            .or_else(|| self.medians.get(&format!("{service} *")))
            .copied()
            .unwrap_or(0.0);
        m * self.scale
    }

    /// A latency drawn for one call.
    pub fn draw(&self, service: &str, op: &str) -> Duration {
        let median = self.median(service, op);
        if median <= 0.0 {
            return Duration::ZERO;
        }
        let mut rng = rand::rng();
        let factor = if rng.random_bool(0.01) {
            3.0
        } else {
            rng.random_range(0.7..1.3)
        };
        Duration::from_secs_f64(median * factor / 1e3)
    }

    /// Every median, scaled, by key (for the report).
    pub fn entries(&self) -> BTreeMap<String, f64> {
        self.medians
            .iter()
            .map(|(k, v)| (k.clone(), v * self.scale))
            .collect()
    }
}
