//! What a reconcile reads: a page of inventory rows, ACM's view of each certificate, the
//! servers carrying each target, and whether a row's export job is still running. Each
//! certificate and target is read once per page, however many rows share it. Only
//! reads: a dry run uses it as it is.

use std::collections::HashMap;

use aws_sdk_acm::types::CertificateStatus;
use aws_sdk_dynamodb::types::AttributeValue;
use engine::{JobId, Jobs, StepError};
use serde::{Deserialize, Serialize};

use super::assess::{assess, Assessment, Certificate, Rules, Server};
use crate::aws::{classify, Clients};
use crate::inventory::{self, InventoryRow, Item, PK, SK};
use crate::ssm;

/// Where the next page of the inventory starts: the last row read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Cursor {
    /// Its `TagKeyValue`.
    pub tag_key_value: String,
    /// Its `CertificateArnCertName`.
    pub sort_key: String,
}

impl Cursor {
    fn item(&self) -> Item {
        HashMap::from([
            (
                PK.to_string(),
                AttributeValue::S(self.tag_key_value.clone()),
            ),
            (SK.to_string(), AttributeValue::S(self.sort_key.clone())),
        ])
    }

    fn of(item: &Item) -> Option<Cursor> {
        Some(Cursor {
            tag_key_value: item.get(PK)?.as_s().ok()?.clone(),
            sort_key: item.get(SK)?.as_s().ok()?.clone(),
        })
    }
}

/// One page of assessments.
#[derive(Debug, Clone)]
pub struct Page {
    /// Each row read, with what the reconcile decides for it.
    pub rows: Vec<(InventoryRow, Assessment)>,
    /// Items of the table that are not rows certflow wrote: `<key>: <why>`.
    pub unreadable: Vec<String>,
    /// Where the next page starts; `None` after the last.
    pub next: Option<Cursor>,
}

/// Reads and assesses the inventory, a page at a time.
#[derive(Clone)]
pub struct Planner {
    clients: Clients,
    table: String,
    rules: Rules,
    jobs: Jobs,
}

impl Planner {
    /// A planner over `table`, deciding by `rules`, that asks `jobs` whether a row's
    /// export job is still running.
    pub fn new(clients: Clients, table: impl Into<String>, rules: Rules, jobs: Jobs) -> Self {
        Planner {
            clients,
            table: table.into(),
            rules,
            jobs,
        }
    }

    /// Assesses at most `limit` rows from `start`, at `now` (epoch ms).
    pub async fn page(
        &self,
        start: Option<&Cursor>,
        limit: i32,
        now: i64,
    ) -> Result<Page, StepError> {
        let (items, last) = inventory::scan_page(
            &self.clients.dynamodb,
            &self.table,
            start.map(Cursor::item),
            limit,
        )
        .await?;
        let mut certs: HashMap<String, Certificate> = HashMap::new();
        let mut targets: HashMap<(String, String), Vec<Server>> = HashMap::new();
        let mut page = Page {
            rows: Vec::new(),
            unreadable: Vec::new(),
            next: last.as_ref().and_then(Cursor::of),
        };
        for item in items {
            let row = match item {
                Ok(row) => row,
                Err((item, e)) => {
                    let key = Cursor::of(&item).map_or_else(
                        || "(no key)".to_string(),
                        |c| format!("{} {}", c.tag_key_value, c.sort_key),
                    );
                    page.unreadable.push(format!("{key}: {e}"));
                    continue;
                }
            };
            let cert = match certs.get(&row.certificate_arn) {
                Some(c) => c.clone(),
                None => {
                    let c = certificate(&self.clients.acm, &row.certificate_arn).await?;
                    certs.insert(row.certificate_arn.clone(), c.clone());
                    c
                }
            };
            let target = (row.target_tag_key.clone(), row.target_tag_value.clone());
            let servers = match targets.get(&target) {
                Some(s) => s.clone(),
                None => {
                    let s: Vec<Server> = ssm::servers(&self.clients.ssm, &target.0, &target.1)
                        .await?
                        .into_iter()
                        .map(|m| Server {
                            id: m.id,
                            online: m.online,
                        })
                        .collect();
                    targets.insert(target, s.clone());
                    s
                }
            };
            let busy = self.busy(&row).await?;
            let a = assess(&row, &cert, &servers, busy.as_deref(), now, self.rules);
            page.rows.push((row, a));
        }
        Ok(page)
    }

    /// The row's last export job, when it has not ended.
    async fn busy(&self, row: &InventoryRow) -> Result<Option<String>, StepError> {
        let Some(id) = &row.last_job_id else {
            return Ok(None);
        };
        match self.jobs.get(&JobId::new(id.clone())).await {
            Ok(rec) if !rec.status.is_terminal() => Ok(Some(id.clone())),
            Ok(_) | Err(engine::JobsError::NotFound(_)) => Ok(None),
            Err(e) => Err(StepError::retry(format!("reading job {id}: {e}"))),
        }
    }
}

/// ACM's view of certificate `arn`.
pub async fn certificate(acm: &aws_sdk_acm::Client, arn: &str) -> Result<Certificate, StepError> {
    let out = match acm.describe_certificate().certificate_arn(arn).send().await {
        Ok(out) => out,
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            return Ok(Certificate::default())
        }
        Err(e) => return Err(classify("DescribeCertificate", &e)),
    };
    let Some(c) = out.certificate() else {
        return Err(StepError::retry("DescribeCertificate: empty answer"));
    };
    Ok(Certificate {
        found: true,
        status: c.status().map(|s| match s {
            CertificateStatus::Issued => "ISSUED".to_string(),
            other => other.as_str().to_string(),
        }),
        serial: c.serial().filter(|s| !s.is_empty()).map(str::to_string),
        not_after: c.not_after().map(|t| t.to_millis().unwrap_or(i64::MAX)),
        renewal_status: c
            .renewal_summary()
            .map(|r| r.renewal_status().as_str().to_string()),
        renewal_eligibility: c.renewal_eligibility().map(|e| e.as_str().to_string()),
    })
}
