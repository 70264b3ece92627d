//! One inventory row as a type, and its codec to and from DynamoDB attributes: the
//! attribute names and formats (see [`super::attr`]) are a contract with the people and
//! tools that read the table.

use std::collections::BTreeSet;
use std::fmt;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{attr, key, Item, PK, SK};

/// How the last export of a row's certificate to its target went (`LastStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LastStatus {
    /// Exported; the install has not ended yet.
    Exported,
    /// Installed on every targeted server.
    Installed,
    /// The install failed on at least one server.
    InstallFailed,
}

impl LastStatus {
    /// The attribute value, e.g. `"INSTALL_FAILED"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LastStatus::Exported => "EXPORTED",
            LastStatus::Installed => "INSTALLED",
            LastStatus::InstallFailed => "INSTALL_FAILED",
        }
    }

    /// Parses an attribute value.
    pub fn parse(s: &str) -> Option<LastStatus> {
        [
            LastStatus::Exported,
            LastStatus::Installed,
            LastStatus::InstallFailed,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

impl fmt::Display for LastStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an item is not an inventory row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    /// A required attribute is absent.
    #[error("inventory row has no {0} attribute")]
    Missing(&'static str),
    /// An attribute has the wrong DynamoDB type.
    #[error("inventory row attribute {name} is not {expected}")]
    WrongType {
        /// The attribute.
        name: &'static str,
        /// `a string` or `a number`.
        expected: &'static str,
    },
    /// An attribute has the right type but a value certflow does not write.
    #[error("inventory row attribute {name} has value {value:?}, which is not {expected}")]
    BadValue {
        /// The attribute.
        name: &'static str,
        /// What it holds.
        value: String,
        /// What it should hold.
        expected: &'static str,
    },
}

/// One row of the inventory table: a certificate, the servers it goes to, and how its
/// last export and install went. Its key is derived from the target and the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryRow {
    /// `TargetTagKey`.
    pub target_tag_key: String,
    /// `TargetTagValue`.
    pub target_tag_value: String,
    /// `CertificateArn`.
    pub certificate_arn: String,
    /// `CertName`.
    pub cert_name: String,
    /// `LastExportedDate`, RFC 3339.
    pub last_exported_date: Option<String>,
    /// `LastJobId`.
    pub last_job_id: Option<String>,
    /// `LastStatus`.
    pub last_status: Option<LastStatus>,
    /// `SecretName`: the secret holding passphrase and bundle.
    pub secret_name: Option<String>,
    /// `PassphraseSecretName`, in rows of the old two-secret layout (read, never written).
    pub passphrase_secret_name: Option<String>,
    /// `BundleSecretName`, in rows of the old two-secret layout (read, never written).
    pub bundle_secret_name: Option<String>,
    /// `CertExpiryDate`, RFC 3339.
    pub cert_expiry_date: Option<String>,
    /// `Serial`.
    pub serial: Option<String>,
    /// `Fingerprint`.
    pub fingerprint: Option<String>,
    /// `LastInstalledDate`, RFC 3339.
    pub last_installed_date: Option<String>,
    /// `InstalledInstances`.
    pub installed_instances: Option<u64>,
    /// `VerifiedInstances`.
    pub verified_instances: Option<u64>,
    /// `InstancesSerial`: the serial [`InventoryRow::instances_at_serial`] is about.
    /// Written by the install steps, never by [`InventoryRow::attributes`].
    pub instances_serial: Option<String>,
    /// `InstancesAtSerial`: the servers that installed `instances_serial`.
    pub instances_at_serial: BTreeSet<String>,
    /// `TargetInstances`: servers carrying the target when certflow last looked.
    pub target_instances: Option<u64>,
    /// `TargetSeenDate`: when that was, RFC 3339.
    pub target_seen_date: Option<String>,
}

impl InventoryRow {
    /// A row with the identity attributes only.
    pub fn new(
        target_tag_key: impl Into<String>,
        target_tag_value: impl Into<String>,
        certificate_arn: impl Into<String>,
        cert_name: impl Into<String>,
    ) -> Self {
        InventoryRow {
            target_tag_key: target_tag_key.into(),
            target_tag_value: target_tag_value.into(),
            certificate_arn: certificate_arn.into(),
            cert_name: cert_name.into(),
            last_exported_date: None,
            last_job_id: None,
            last_status: None,
            secret_name: None,
            passphrase_secret_name: None,
            bundle_secret_name: None,
            cert_expiry_date: None,
            serial: None,
            fingerprint: None,
            last_installed_date: None,
            installed_instances: None,
            verified_instances: None,
            instances_serial: None,
            instances_at_serial: BTreeSet::new(),
            target_instances: None,
            target_seen_date: None,
        }
    }

    /// The servers known to run the row's certificate (`Serial`): none when the recorded
    /// set is about another serial (a new export has not reached them yet).
    pub fn current_servers(&self) -> &BTreeSet<String> {
        static NONE: BTreeSet<String> = BTreeSet::new();
        match (&self.serial, &self.instances_serial) {
            (Some(serial), Some(of)) if serial == of => &self.instances_at_serial,
            _ => &NONE,
        }
    }

    /// How many servers carrying the target (when certflow last looked) are not known to
    /// run the row's certificate; `None` when certflow has not looked yet.
    pub fn lagging(&self) -> Option<u64> {
        self.target_instances
            .map(|n| n.saturating_sub(self.current_servers().len() as u64))
    }

    /// The value of the partition key [`PK`]: `<TargetTagKey>#<TargetTagValue>`.
    pub fn tag_key_value(&self) -> String {
        format!("{}#{}", self.target_tag_key, self.target_tag_value)
    }

    /// The target as people write it: `<TargetTagKey>=<TargetTagValue>`.
    pub fn target(&self) -> String {
        format!("{}={}", self.target_tag_key, self.target_tag_value)
    }

    /// The value of the sort key [`SK`]: `<CertificateArn>#<CertName>`.
    pub fn certificate_arn_cert_name(&self) -> String {
        format!("{}#{}", self.certificate_arn, self.cert_name)
    }

    /// The row's key.
    pub fn key(&self) -> Item {
        key(
            &self.target_tag_key,
            &self.target_tag_value,
            &self.certificate_arn,
            &self.cert_name,
        )
    }

    /// Every attribute but the key, in a fixed order; absent values are left out (so
    /// setting them leaves what the table holds).
    pub fn attributes(&self) -> Vec<(&'static str, AttributeValue)> {
        let s = |v: &str| AttributeValue::S(v.to_string());
        let mut out = vec![
            (attr::CERTIFICATE_ARN, s(&self.certificate_arn)),
            (attr::CERT_NAME, s(&self.cert_name)),
            (attr::TARGET_TAG_KEY, s(&self.target_tag_key)),
            (attr::TARGET_TAG_VALUE, s(&self.target_tag_value)),
        ];
        let optional = [
            (attr::LAST_EXPORTED_DATE, self.last_exported_date.as_deref()),
            (attr::LAST_JOB_ID, self.last_job_id.as_deref()),
            (attr::LAST_STATUS, self.last_status.map(LastStatus::as_str)),
            (attr::SECRET_NAME, self.secret_name.as_deref()),
            (
                attr::PASSPHRASE_SECRET_NAME,
                self.passphrase_secret_name.as_deref(),
            ),
            (attr::BUNDLE_SECRET_NAME, self.bundle_secret_name.as_deref()),
            (attr::CERT_EXPIRY_DATE, self.cert_expiry_date.as_deref()),
            (attr::SERIAL, self.serial.as_deref()),
            (attr::FINGERPRINT, self.fingerprint.as_deref()),
            (
                attr::LAST_INSTALLED_DATE,
                self.last_installed_date.as_deref(),
            ),
        ];
        out.extend(
            optional
                .into_iter()
                .filter_map(|(name, v)| v.map(|v| (name, s(v)))),
        );
        if let Some(n) = self.installed_instances {
            out.push((attr::INSTALLED_INSTANCES, AttributeValue::N(n.to_string())));
        }
        out
    }

    /// The whole item: key and attributes.
    pub fn to_item(&self) -> Item {
        let mut item = self.key();
        item.extend(
            self.attributes()
                .into_iter()
                .map(|(name, v)| (name.to_string(), v)),
        );
        item
    }

    /// Reads a row. The key and the four identity attributes are required and must agree;
    /// every other attribute, when present, must have its type and format.
    pub fn from_item(item: &Item) -> Result<InventoryRow, RowError> {
        let required = |name: &'static str| string(item, name)?.ok_or(RowError::Missing(name));
        let mut row = InventoryRow::new(
            required(attr::TARGET_TAG_KEY)?,
            required(attr::TARGET_TAG_VALUE)?,
            required(attr::CERTIFICATE_ARN)?,
            required(attr::CERT_NAME)?,
        );
        for (name, expected) in [
            (PK, row.tag_key_value()),
            (SK, row.certificate_arn_cert_name()),
        ] {
            let found = required(name)?;
            if found != expected {
                return Err(RowError::BadValue {
                    name,
                    value: found,
                    expected: "made of the row's target and certificate",
                });
            }
        }
        row.last_exported_date = string(item, attr::LAST_EXPORTED_DATE)?;
        row.last_job_id = string(item, attr::LAST_JOB_ID)?;
        row.last_status = match string(item, attr::LAST_STATUS)? {
            None => None,
            Some(v) => Some(LastStatus::parse(&v).ok_or(RowError::BadValue {
                name: attr::LAST_STATUS,
                value: v,
                expected: "EXPORTED, INSTALLED or INSTALL_FAILED",
            })?),
        };
        row.secret_name = string(item, attr::SECRET_NAME)?;
        row.passphrase_secret_name = string(item, attr::PASSPHRASE_SECRET_NAME)?;
        row.bundle_secret_name = string(item, attr::BUNDLE_SECRET_NAME)?;
        row.cert_expiry_date = string(item, attr::CERT_EXPIRY_DATE)?;
        row.serial = string(item, attr::SERIAL)?;
        row.fingerprint = string(item, attr::FINGERPRINT)?;
        row.last_installed_date = string(item, attr::LAST_INSTALLED_DATE)?;
        row.installed_instances = number(item, attr::INSTALLED_INSTANCES)?;
        row.verified_instances = number(item, attr::VERIFIED_INSTANCES)?;
        row.instances_serial = string(item, attr::INSTANCES_SERIAL)?;
        row.instances_at_serial = match item.get(attr::INSTANCES_AT_SERIAL) {
            None => BTreeSet::new(),
            Some(v) => v
                .as_ss()
                .map_err(|_| RowError::WrongType {
                    name: attr::INSTANCES_AT_SERIAL,
                    expected: "a string set",
                })?
                .iter()
                .cloned()
                .collect(),
        };
        row.target_instances = number(item, attr::TARGET_INSTANCES)?;
        row.target_seen_date = string(item, attr::TARGET_SEEN_DATE)?;
        Ok(row)
    }
}

/// The whole-number attribute `name`, if present.
fn number(item: &Item, name: &'static str) -> Result<Option<u64>, RowError> {
    let Some(v) = item.get(name) else {
        return Ok(None);
    };
    let n = v.as_n().map_err(|_| RowError::WrongType {
        name,
        expected: "a number",
    })?;
    n.parse().map(Some).map_err(|_| RowError::BadValue {
        name,
        value: n.clone(),
        expected: "a whole number",
    })
}

/// The string attribute `name`, if present.
fn string(item: &Item, name: &'static str) -> Result<Option<String>, RowError> {
    item.get(name)
        .map(|v| {
            v.as_s().cloned().map_err(|_| RowError::WrongType {
                name,
                expected: "a string",
            })
        })
        .transpose()
}

/// What the `wait` step sets on the row the `inventory` step wrote, once the install has
/// ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallEnd {
    /// Every targeted server installed the certificate.
    Installed {
        /// When, RFC 3339.
        date: String,
        /// How many servers.
        instances: u64,
        /// How many of them were verified serving the installed serial.
        verified: u64,
    },
    /// At least one server failed.
    Failed,
    /// An install-only job installed the row's certificate on more servers: the date only
    /// (`LastStatus` and the counts describe the export's own install).
    Added {
        /// When, RFC 3339.
        date: String,
    },
}

impl InstallEnd {
    /// The attributes to set.
    pub fn attributes(&self) -> Vec<(&'static str, AttributeValue)> {
        match self {
            InstallEnd::Installed {
                date,
                instances,
                verified,
            } => vec![
                (
                    attr::LAST_STATUS,
                    AttributeValue::S(LastStatus::Installed.as_str().into()),
                ),
                (attr::LAST_INSTALLED_DATE, AttributeValue::S(date.clone())),
                (
                    attr::INSTALLED_INSTANCES,
                    AttributeValue::N(instances.to_string()),
                ),
                (
                    attr::VERIFIED_INSTANCES,
                    AttributeValue::N(verified.to_string()),
                ),
            ],
            InstallEnd::Added { date } => {
                vec![(attr::LAST_INSTALLED_DATE, AttributeValue::S(date.clone()))]
            }
            InstallEnd::Failed => vec![(
                attr::LAST_STATUS,
                AttributeValue::S(LastStatus::InstallFailed.as_str().into()),
            )],
        }
    }
}

#[cfg(test)]
mod tests;
