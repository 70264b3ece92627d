//! The CloudFormation template (`deploy/cloudformation/certflow.yaml`) against the code it
//! deploys:
//!
//! - its install document is `deploy/ssm/Install-ACMCertificate.yaml`, verbatim
//!   (`CERTFLOW_SYNC_TEMPLATE=1 cargo test -p certflow-tests --test cloudformation` copies
//!   the file into the template when it changed);
//! - its tables, queues, rules and worker settings are the ones `engine::schema`,
//!   `workflows::inventory`, `workflows::events` and `workers/src/cli/` define;
//! - its IAM policies grant no `*` action or resource beyond a listed, justified few;
//! - deployed to the emulator's CloudFormation, the stack's own queues and tables (found
//!   through the stack's outputs) run an export and a renewal end to end, and look like
//!   the ones the code creates.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_cloudformation::types::{Capability, Parameter, StackStatus};
use aws_sdk_dynamodb::types::TableDescription;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_sqs::types::QueueAttributeName;
use certflow_tests::certflow::{Env, Names};
use certflow_tests::{emulator, unique};
use engine::schema;
use engine::{JobId, JobStatus};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// The template, as JSON with long-form intrinsic functions.

fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

const TEMPLATE_PATH: &str = "deploy/cloudformation/certflow.yaml";
const DOCUMENT_PATH: &str = "deploy/ssm/Install-ACMCertificate.yaml";

fn template_text() -> String {
    std::fs::read_to_string(repo_path(TEMPLATE_PATH)).expect("read the template")
}

fn document_text() -> String {
    std::fs::read_to_string(repo_path(DOCUMENT_PATH)).expect("read the install document")
}

/// The template as JSON (`!Ref x` → `{"Ref": x}`, `!Sub s` → `{"Fn::Sub": s}`, …), the
/// form CloudFormation itself accepts.
fn template() -> Value {
    to_json(serde_yaml_ng::from_str(&template_text()).expect("the template is YAML"))
}

fn to_json(v: serde_yaml_ng::Value) -> Value {
    use serde_yaml_ng::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(u) = n.as_u64() {
                json!(u)
            } else {
                json!(n.as_f64())
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(s) => Value::Array(s.into_iter().map(to_json).collect()),
        Y::Mapping(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let k = match k {
                        Y::String(s) => s,
                        other => serde_yaml_ng::to_string(&other).unwrap().trim().to_string(),
                    };
                    (k, to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(t) => {
            let tag = t.tag.to_string();
            let tag = tag.trim_start_matches('!').to_string();
            let value = to_json(t.value);
            match tag.as_str() {
                "Ref" => json!({ "Ref": value }),
                "Condition" => json!({ "Condition": value }),
                "GetAtt" => match value {
                    Value::String(s) => {
                        let (resource, attribute) = s.split_once('.').expect("!GetAtt A.B");
                        json!({ "Fn::GetAtt": [resource, attribute] })
                    }
                    other => json!({ "Fn::GetAtt": other }),
                },
                other => json!({ format!("Fn::{other}"): value }),
            }
        }
    }
}

fn resource<'a>(t: &'a Value, id: &str) -> &'a Value {
    t["Resources"]
        .get(id)
        .unwrap_or_else(|| panic!("the template has no resource {id}"))
}

fn props<'a>(t: &'a Value, id: &str) -> &'a Value {
    &resource(t, id)["Properties"]
}

fn sub(s: &str) -> Value {
    json!({ "Fn::Sub": s })
}

fn get_att(id: &str, attribute: &str) -> Value {
    json!({ "Fn::GetAtt": [id, attribute] })
}

// ---------------------------------------------------------------------------------------
// 1. The install document is the file in deploy/ssm/, verbatim.

const DOC_BEGIN: &str = "      # BEGIN deploy/ssm/Install-ACMCertificate.yaml";
const DOC_END: &str = "      # END deploy/ssm/Install-ACMCertificate.yaml";

/// The `ReloadService` allow-list as the template computes it from `ReloadServices`.
const ALLOW_LIST_EXPR: &str =
    r#"!Join ["|", !Split [",", !Join ["[.]", !Split [".", !Ref ReloadServices]]]]"#;

/// The template lines that embed `doc` as the document's `Content`: the file cut at the
/// two allow-list markers (`workflows::document::MARKER`) into three literal blocks,
/// joined with the list computed from `ReloadServices`.
fn embedded(doc: &str) -> String {
    let parts: Vec<&str> = doc.split(workflows::document::MARKER).collect();
    assert_eq!(parts.len(), 3, "the marker is in the document twice");
    let block = |out: &mut String, part: &str, header: &str| {
        assert!(
            !part.starts_with([' ', '\n']),
            "a block must not start with blanks"
        );
        out.push_str(header);
        for line in part.trim_end_matches('\n').split('\n') {
            if !line.is_empty() {
                out.push_str("            ");
                out.push_str(line);
            }
            out.push('\n');
        }
    };
    let mut out = String::from("      Content: !Join\n        - \"\"\n");
    block(&mut out, parts[0], "        - - |-\n");
    out.push_str(&format!("          - {ALLOW_LIST_EXPR}\n"));
    block(&mut out, parts[1], "          - |-\n");
    out.push_str(&format!("          - {ALLOW_LIST_EXPR}\n"));
    assert!(parts[2].ends_with('\n') && !parts[2].ends_with("\n\n"));
    block(&mut out, parts[2], "          - |\n");
    out
}

/// Evaluates `Fn::Join`, `Fn::Split` and `Ref` (to a parameter in `params`) as
/// CloudFormation does.
fn evaluate(v: &Value, params: &BTreeMap<&str, &str>) -> Value {
    let Some(obj) = v.as_object().filter(|o| o.len() == 1) else {
        return match v {
            Value::Array(items) => {
                Value::Array(items.iter().map(|i| evaluate(i, params)).collect())
            }
            other => other.clone(),
        };
    };
    let (f, args) = obj.iter().next().unwrap();
    match f.as_str() {
        "Ref" => json!(params[args.as_str().unwrap()]),
        "Fn::Join" => {
            let delimiter = args[0]
                .as_str()
                .expect("a Join delimiter is a literal string");
            let items = evaluate(&args[1], params);
            let items: Vec<&str> = items
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_str().unwrap())
                .collect();
            json!(items.join(delimiter))
        }
        "Fn::Split" => {
            let delimiter = args[0]
                .as_str()
                .expect("a Split delimiter is a literal string");
            let text = evaluate(&args[1], params);
            json!(text.as_str().unwrap().split(delimiter).collect::<Vec<_>>())
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn the_install_document_is_the_ssm_file_verbatim() {
    let text = template_text();
    let doc = document_text();
    let begin = text.find(DOC_BEGIN).expect("BEGIN marker in the template");
    let begin = begin + text[begin..].find('\n').unwrap() + 1;
    let end = text.find(DOC_END).expect("END marker in the template");
    let want = embedded(&doc);
    if text[begin..end] != want {
        if std::env::var("CERTFLOW_SYNC_TEMPLATE").as_deref() == Ok("1") {
            let synced = format!("{}{}{}", &text[..begin], want, &text[end..]);
            std::fs::write(repo_path(TEMPLATE_PATH), synced).unwrap();
            eprintln!("copied {DOCUMENT_PATH} into {TEMPLATE_PATH}");
        } else {
            panic!(
                "{TEMPLATE_PATH} does not embed {DOCUMENT_PATH} as it is now; run \
                 CERTFLOW_SYNC_TEMPLATE=1 cargo test -p certflow-tests --test cloudformation \
                 the_install_document and commit both files"
            );
        }
    }
    // And the Content evaluates to exactly the file with the default list, and to what
    // `certflow bootstrap --reload-services` deploys with another.
    let t = template();
    let content = &props(&t, "InstallDocument")["Content"];
    let default = workflows::document::DEFAULT_RELOAD_SERVICES.join(",");
    assert_eq!(t["Parameters"]["ReloadServices"]["Default"], json!(default));
    let with = |list: &str| evaluate(content, &BTreeMap::from([("ReloadServices", list)]));
    assert_eq!(with(&default), json!(doc));
    assert_eq!(
        with("nginx,php8.2-fpm"),
        json!(workflows::document::content(&["nginx", "php8.2-fpm"]).unwrap())
    );
    assert_eq!(
        with(""),
        json!(workflows::document::content::<&str>(&[]).unwrap())
    );
    assert_eq!(
        props(&t, "InstallDocument")["DocumentFormat"],
        json!("YAML")
    );
}

// ---------------------------------------------------------------------------------------
// 2. Names, key schemas, patterns and settings are the code's.

fn key_schema(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["AttributeName"].as_str().unwrap().to_string(),
                k["KeyType"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn hash_range(hash: &str, range: &str) -> Vec<(String, String)> {
    vec![(hash.into(), "HASH".into()), (range.into(), "RANGE".into())]
}

/// Index name → key schema, every index projecting ALL.
fn indexes(table: &Value) -> BTreeMap<String, Vec<(String, String)>> {
    table["GlobalSecondaryIndexes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["Projection"]["ProjectionType"], json!("ALL"), "{i}");
            (
                i["IndexName"].as_str().unwrap().to_string(),
                key_schema(&i["KeySchema"]),
            )
        })
        .collect()
}

fn string_attributes(table: &Value) -> BTreeSet<String> {
    table["AttributeDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["AttributeType"], json!("S"), "{a}");
            a["AttributeName"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn tables_queues_rules_and_settings_are_the_codes() {
    let t = template();

    // The jobs table: engine/src/schema.rs, with the workflows' label indexes.
    let jobs = props(&t, "JobsTable");
    assert_eq!(jobs["TableName"], sub("${NamePrefix}-jobs"));
    assert_eq!(
        key_schema(&jobs["KeySchema"]),
        hash_range(schema::PK, schema::SK)
    );
    let mut want = BTreeMap::from([(
        schema::STATUS_INDEX.to_string(),
        hash_range(schema::STATUS_ATTR, schema::UPDATED_AT_ATTR),
    )]);
    let mut attrs: BTreeSet<String> = [
        schema::PK,
        schema::SK,
        schema::STATUS_ATTR,
        schema::UPDATED_AT_ATTR,
        schema::CREATED_AT_ATTR,
    ]
    .map(String::from)
    .into();
    for label in workflows::JOB_LABELS {
        want.insert(
            schema::label_index(label),
            hash_range(label, schema::CREATED_AT_ATTR),
        );
        attrs.insert(label.to_string());
    }
    assert_eq!(indexes(jobs), want);
    assert_eq!(string_attributes(jobs), attrs);
    assert_eq!(
        jobs["TimeToLiveSpecification"],
        json!({ "AttributeName": schema::TTL_ATTR, "Enabled": true })
    );

    // The inventory table: workflows/src/inventory.rs.
    let inventory = props(&t, "InventoryTable");
    assert_eq!(inventory["TableName"], sub("${NamePrefix}-inventory"));
    assert_eq!(
        key_schema(&inventory["KeySchema"]),
        hash_range(workflows::inventory::PK, workflows::inventory::SK)
    );
    assert_eq!(
        indexes(inventory),
        BTreeMap::from([(
            workflows::inventory::BY_CERTIFICATE.to_string(),
            hash_range("CertificateArn", workflows::inventory::PK)
        )])
    );
    for table in [jobs, inventory] {
        assert_eq!(table["BillingMode"], json!("PAY_PER_REQUEST"));
        assert_eq!(
            table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
            json!(true)
        );
        assert_eq!(table["SSESpecification"]["SSEType"], json!("KMS"));
    }

    // Queues: the worker finds each DLQ as the queue's name + "-dlq".
    for (queue, dlq, name) in [
        ("IntakeQueue", "IntakeDeadLetterQueue", "intake"),
        ("EventsQueue", "EventsDeadLetterQueue", "events"),
        ("TasksQueue", "TasksDeadLetterQueue", "tasks"),
    ] {
        let q = props(&t, queue);
        let queue_name = format!("${{NamePrefix}}-{name}");
        assert_eq!(q["QueueName"], sub(&queue_name));
        assert_eq!(
            props(&t, dlq)["QueueName"],
            sub(&schema::dlq_name(&queue_name))
        );
        assert_eq!(
            q["RedrivePolicy"],
            json!({ "deadLetterTargetArn": get_att(dlq, "Arn"), "maxReceiveCount": schema::MAX_RECEIVES })
        );
        assert!(!q["KmsMasterKeyId"].is_null() && !props(&t, dlq)["KmsMasterKeyId"].is_null());
    }

    // EventBridge rules: workflows::events::rules, named <prefix>-<suffix>.
    let sources = vec!["SOURCES".to_string()];
    let mut settings = workflows::events::RuleSettings::new("PREFIX", sources.clone());
    settings.reconcile_schedule = "rate(2 hours)".parse().unwrap();
    for spec in workflows::events::rules(&settings) {
        let suffix = spec.name.strip_prefix("PREFIX-").unwrap();
        let id = rule_id(suffix);
        let rule = props(&t, id);
        assert_eq!(rule["Name"], sub(&format!("${{NamePrefix}}-{suffix}")));
        assert_eq!(rule["Description"], json!(spec.description), "{id}");
        assert_eq!(rule["State"], json!("ENABLED"), "{id}");
        match spec.trigger {
            workflows::events::Trigger::Pattern(pattern) => {
                let mut in_template = rule["EventPattern"].clone();
                if id == "NewServersRule" || id == "CommandsRule" {
                    // aws.ec2 (aws.ssm), then the sources: a list parameter cannot be
                    // prefixed in place, so the template joins and splits it again.
                    let native = if id == "NewServersRule" {
                        workflows::events::EC2_SOURCE
                    } else {
                        workflows::events::SSM_SOURCE
                    };
                    assert_eq!(
                        in_template["source"],
                        json!({ "Fn::Split": [",", { "Fn::Join": [",", [native, { "Fn::Join": [",", { "Ref": "EventSources" }] }]] }] })
                    );
                    in_template["source"] = json!([native, "SOURCES"]);
                    if id == "CommandsRule" {
                        // The stack's own document.
                        assert_eq!(
                            in_template["detail"]["document-name"],
                            json!([{ "Ref": "DocumentName" }])
                        );
                        in_template["detail"]["document-name"] =
                            json!([settings.document_name.clone()]);
                    }
                } else {
                    assert_eq!(in_template["source"], json!({ "Ref": "EventSources" }));
                    in_template["source"] = json!(sources);
                }
                assert_eq!(in_template, pattern, "{id}");
                assert!(rule.get("ScheduleExpression").is_none(), "{id}");
            }
            workflows::events::Trigger::Schedule(_) => {
                assert_eq!(
                    rule["ScheduleExpression"],
                    json!({ "Ref": "ReconcileSchedule" })
                );
                assert!(rule.get("EventPattern").is_none(), "{id}");
            }
        }
        assert_eq!(
            rule["Targets"],
            json!([{ "Id": workflows::events::TARGET_ID, "Arn": get_att("EventsQueue", "Arn") }]),
            "{id}: the rules send to the events queue only"
        );
    }
    reconcile_schedule_parameter_is_the_codes(&t);
    queue_policies_let_only_the_rules_and_the_producers_send(&t);
    alerts_are_certflows_events_that_need_a_person(&t);

    // The worker's settings: every CERTFLOW_* variable is one the binary reads, and every
    // resource name it needs points at this stack.
    let cli: String = std::fs::read_dir(repo_path("workers/src/cli"))
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect();
    let read: BTreeSet<String> = regex::Regex::new(r#"env = "(CERTFLOW_[A-Z0-9_]+)""#)
        .unwrap()
        .captures_iter(&cli)
        .map(|c| c[1].to_string())
        .collect();
    let container = &props(&t, "TaskDefinition")["ContainerDefinitions"][0];
    let mut env = BTreeMap::new();
    for e in container["Environment"].as_array().unwrap() {
        // `!If [HasX, {Name, Value}, !Ref AWS::NoValue]` entries: the named branch.
        let e = e.get("Fn::If").map(|branches| &branches[1]).unwrap_or(e);
        env.insert(e["Name"].as_str().unwrap().to_string(), e["Value"].clone());
    }
    for name in env.keys().filter(|n| n.starts_with("CERTFLOW_")) {
        assert!(
            read.contains(name),
            "{name} is not read by workers/src/cli/"
        );
    }
    let points_at = [
        ("CERTFLOW_JOBS_TABLE", json!({ "Ref": "JobsTable" })),
        // The bus PublishOutcomes lets the task role put events on (checked below).
        ("CERTFLOW_EVENT_BUS", json!("default")),
        ("CERTFLOW_TASKS_QUEUE", get_att("TasksQueue", "QueueName")),
        ("CERTFLOW_INTAKE_QUEUE", get_att("IntakeQueue", "QueueName")),
        ("CERTFLOW_EVENTS_QUEUE", get_att("EventsQueue", "QueueName")),
        (
            "CERTFLOW_INVENTORY_TABLE",
            json!({ "Ref": "InventoryTable" }),
        ),
        (
            "CERTFLOW_DOCUMENT_NAME",
            json!({ "Ref": "InstallDocument" }),
        ),
        ("CERTFLOW_SECRET_PREFIX", json!({ "Ref": "SecretPrefix" })),
        (
            "CERTFLOW_KMS_KEY_ID",
            json!({ "Fn::If": ["CreateKey", get_att("Key", "Arn"), { "Ref": "KmsKeyArn" }] }),
        ),
        (
            "CERTFLOW_EVENT_SOURCES",
            json!({ "Fn::Join": [",", { "Ref": "EventSources" }] }),
        ),
        ("CERTFLOW_RULE_PREFIX", json!({ "Ref": "NamePrefix" })),
    ];
    for (name, value) in points_at {
        assert!(
            read.contains(name),
            "workers/src/cli/ no longer reads {name}"
        );
        assert_eq!(env.get(name), Some(&value), "{name}");
    }
    // ECS waits StopTimeout after SIGTERM: the worker's drain must fit in it.
    let budget: u64 = env["CERTFLOW_SHUTDOWN_BUDGET_SECS"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let stop = container["StopTimeout"].as_u64().unwrap();
    assert!(
        budget < stop,
        "shutdown budget {budget}s must be below stopTimeout {stop}s"
    );
    assert_eq!(container["ReadonlyRootFilesystem"], json!(true));
    let user = container["User"].as_str().unwrap();
    assert!(
        !user.starts_with("0") && !user.starts_with("root"),
        "{user}"
    );

    // The REST endpoint refuses a CertName the install document would refuse.
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&document_text()).unwrap();
    let allowed = doc["parameters"]["CertName"]["allowedPattern"].as_str();
    let model = &props(&t, "ApiRequestModel")["Schema"]["properties"]["CertName"];
    assert_eq!(model["pattern"].as_str(), allowed);
}

// ---------------------------------------------------------------------------------------
// 3. No wildcard in IAM beyond the listed few.

/// (resource, statement Sid, the wildcard action/resource/principal, why AWS needs it).
const ALLOWED_WILDCARDS: &[(&str, &str, &str, &str)] = &[
    (
        "Key",
        "AccountIam",
        "kms:*",
        "AWS's default key policy statement: the account's IAM policies decide who uses \
         the key; without it the key could not be managed at all",
    ),
    (
        "Key",
        "AccountIam",
        "*",
        "in a key policy, Resource \"*\" means this key",
    ),
    (
        "Key",
        "EventBridge",
        "*",
        "in a key policy, \"*\" is this key",
    ),
    (
        "Key",
        "CloudWatchLogs",
        "*",
        "in a key policy, \"*\" is this key",
    ),
    (
        "TaskRole",
        "Certificates",
        "arn:<AWS::Partition>:acm:<AWS::Region>:<AWS::AccountId>:certificate/*",
        "only when CertificateArns is empty: the certificates of this account and region",
    ),
    (
        "TaskRole",
        "DescribeSecrets",
        "arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:secret:<SecretPrefix>*",
        "one secret per CertName and target under the prefix, and Secrets Manager ends \
         every secret ARN with a random suffix; metadata and tags only",
    ),
    (
        "ManagedSecretsPolicy",
        "CreateManagedSecrets",
        "arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:secret:<SecretPrefix>*",
        "as DescribeSecrets; only with the certflow:managed and target request tags",
    ),
    (
        "ManagedSecretsPolicy",
        "TagAtCreationOnly",
        "arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:secret:<SecretPrefix>*",
        "as DescribeSecrets; only while the secret has no certflow:managed tag (creation)",
    ),
    (
        "ManagedSecretsPolicy",
        "UseManagedSecrets",
        "arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:secret:<SecretPrefix>*",
        "as DescribeSecrets; the certflow:managed and target tag conditions apply",
    ),
    (
        "TaskRole",
        "FollowCommands",
        "*",
        "ssm:ListCommands, ListCommandInvocations, GetCommandInvocation and CancelCommand \
         have no resource-level permissions",
    ),
    (
        "SendInstallCommandPolicy",
        "TaggedServers",
        "arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:instance/*",
        "servers are chosen by tag at run time; the condition admits only instances \
         carrying TargetTagKey",
    ),
    (
        "SendInstallCommandPolicy",
        "TaggedServers",
        "arn:<AWS::Partition>:ssm:<AWS::Region>:<AWS::AccountId>:managed-instance/*",
        "the same for on-premises servers",
    ),
    (
        "ExecutionRole",
        "EcrToken",
        "*",
        "ecr:GetAuthorizationToken has no resource-level permissions",
    ),
    (
        "ExecutionRole",
        "WriteLogs",
        "arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:<LogGroup>:*",
        "the streams ECS creates (one per task) in this stack's log group",
    ),
    (
        "InstanceSecretsPolicy",
        "OwnTagSecrets",
        "arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:secret:<SecretPrefix>*",
        "as CreateManagedSecrets; the tag conditions pick the secrets",
    ),
];

/// A string the way it reads once deployed, references shown as `<Name>`.
fn render(t: &Value, v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) if o.contains_key("Ref") => format!("<{}>", o["Ref"].as_str().unwrap()),
        Value::Object(o) if o.contains_key("Fn::GetAtt") => {
            let a = &o["Fn::GetAtt"];
            let (id, attribute) = (a[0].as_str().unwrap(), a[1].as_str().unwrap());
            if resource(t, id)["Type"] == json!("AWS::Logs::LogGroup") && attribute == "Arn" {
                // CloudFormation's Arn of a log group ends with ":*".
                format!(
                    "arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:<{id}>:*"
                )
            } else {
                format!("<{id}.{attribute}>")
            }
        }
        Value::Object(o) if o.contains_key("Fn::Sub") => {
            let (text, vars) = match &o["Fn::Sub"] {
                Value::String(s) => (s.clone(), None),
                Value::Array(a) => (a[0].as_str().unwrap().to_string(), Some(&a[1])),
                other => panic!("Fn::Sub {other}"),
            };
            let re = regex::Regex::new(r"\$\{(!?)([^}]+)\}").unwrap();
            re.replace_all(&text, |c: &regex::Captures| {
                if &c[1] == "!" {
                    format!("${{{}}}", &c[2])
                } else if let Some(v) = vars.and_then(|v| v.get(&c[2])) {
                    render(t, v)
                } else {
                    format!("<{}>", &c[2])
                }
            })
            .into_owned()
        }
        Value::Object(o) if o.contains_key("Fn::Join") => {
            let j = &o["Fn::Join"];
            let parts: Vec<String> = j[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| render(t, p))
                .collect();
            parts.join(j[0].as_str().unwrap())
        }
        // In text, the first branch stands for both (only the key's ARN is chosen so).
        Value::Object(o) if o.contains_key("Fn::If") => render(t, &o["Fn::If"][1]),
        other => panic!("cannot render {other}"),
    }
}

/// Every value a Resource/Action/Principal element may take (both branches of an If).
fn values(t: &Value, v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().flat_map(|x| values(t, x)).collect(),
        Value::Object(o) if o.contains_key("Fn::If") => {
            let b = &o["Fn::If"];
            let mut out = values(t, &b[1]);
            out.extend(values(t, &b[2]));
            out
        }
        Value::Object(o) if o.contains_key("Ref") && o["Ref"] == json!("AWS::NoValue") => vec![],
        other => vec![render(t, other)],
    }
}

/// Every policy document in the template: (resource, where, document as JSON).
fn policies(t: &Value) -> Vec<(String, String, Value)> {
    fn walk(t: &Value, id: &str, path: &str, v: &Value, out: &mut Vec<(String, String, Value)>) {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    let here = format!("{path}/{k}");
                    if matches!(
                        k.as_str(),
                        "PolicyDocument" | "KeyPolicy" | "AssumeRolePolicyDocument"
                    ) {
                        let doc = if x.get("Statement").is_some() {
                            x.clone()
                        } else {
                            let text = render(t, x);
                            serde_json::from_str(&text)
                                .unwrap_or_else(|e| panic!("{id}{here}: not JSON ({e}): {text}"))
                        };
                        out.push((id.to_string(), here, doc));
                    } else {
                        walk(t, id, &here, x, out);
                    }
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(t, id, &format!("{path}/{i}"), x, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (id, r) in t["Resources"].as_object().unwrap() {
        walk(t, id, "", &r["Properties"], &mut out);
    }
    out
}

/// The statements of queue policy `id` that apply to `queue` (a resource id).
fn statements_on<'a>(t: &'a Value, id: &str, queue: &str) -> Vec<&'a Value> {
    let arn = get_att(queue, "Arn");
    props(t, id)["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap_or_else(|| panic!("{id} has no statements"))
        .iter()
        .filter(|s| match &s["Resource"] {
            Value::Array(a) => a.contains(&arn),
            one => *one == arn,
        })
        .collect()
}

/// The events queue: EventBridge may send for the five rules, everyone else is denied. The
/// intake queue: nothing is allowed by the queue policy, and everyone but the producers
/// (and the API's role) is denied.
fn queue_policies_let_only_the_rules_and_the_producers_send(t: &Value) {
    let rules = json!([
        get_att("RenewalRule", "Arn"),
        get_att("AttentionRule", "Arn"),
        get_att("NewServersRule", "Arn"),
        get_att("ReconcileRule", "Arn"),
        get_att("CommandsRule", "Arn")
    ]);
    let queues = |id: &str| props(t, id)["Queues"].clone();
    assert_eq!(
        queues("EventsQueuePolicy"),
        json!([{ "Ref": "EventsQueue" }, { "Ref": "EventsDeadLetterQueue" }])
    );
    let on_queue = |s: &Value| s["Condition"]["Bool"].is_null(); // not TLS-only
    let events: Vec<_> = statements_on(t, "EventsQueuePolicy", "EventsQueue")
        .into_iter()
        .filter(|s| on_queue(s))
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    let allow = events
        .iter()
        .find(|s| s["Effect"] == "Allow")
        .expect("an Allow");
    assert_eq!(
        allow["Principal"],
        json!({ "Service": "events.amazonaws.com" })
    );
    assert_eq!(allow["Action"], "sqs:SendMessage");
    assert_eq!(
        allow["Condition"],
        json!({ "ArnEquals": { "aws:SourceArn": rules } })
    );
    let deny = events
        .iter()
        .find(|s| s["Effect"] == "Deny")
        .expect("a Deny");
    assert_eq!(deny["Principal"], "*");
    assert_eq!(deny["Action"], "sqs:SendMessage");
    assert_eq!(
        deny["Condition"],
        json!({ "ArnNotEquals": { "aws:SourceArn": rules } })
    );
    // Nobody's Allow reaches the events queue through the other queue policy.
    assert!(statements_on(t, "QueuePolicy", "EventsQueue").is_empty());

    let intake: Vec<_> = statements_on(t, "QueuePolicy", "IntakeQueue")
        .into_iter()
        .filter(|s| on_queue(s))
        .collect();
    assert_eq!(intake.len(), 1, "{intake:?}");
    let deny = intake[0];
    assert_eq!(
        deny["Effect"], "Deny",
        "the intake queue's policy allows nothing"
    );
    assert_eq!(deny["Principal"], "*");
    assert_eq!(deny["Action"], "sqs:SendMessage");
    let excepted = serde_json::to_string(&deny["Condition"]["ArnNotLike"]["aws:PrincipalArn"])
        .unwrap_or_default();
    for who in [
        json!({ "Ref": "ProducerPrincipalArns" }),
        json!({ "Fn::If": ["ApiEnabled", get_att("ApiRole", "Arn"), sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root")] }),
    ] {
        assert!(
            excepted.contains(&who.to_string()),
            "{who} is not excepted from the intake Deny: {excepted}"
        );
    }
    assert_eq!(
        t["Parameters"]["ProducerPrincipalArns"]["Type"],
        "CommaDelimitedList"
    );
}

/// The resource id of the rule `<prefix>-<suffix>`.
fn rule_id(suffix: &str) -> &'static str {
    use workflows::events::suffix;
    match suffix {
        suffix::RENEWAL => "RenewalRule",
        suffix::ATTENTION => "AttentionRule",
        suffix::NEW_SERVERS => "NewServersRule",
        suffix::RECONCILE => "ReconcileRule",
        suffix::COMMANDS => "CommandsRule",
        other => panic!("a rule {other} the template lacks"),
    }
}

/// `ReconcileSchedule` defaults to the code's schedule, and its AllowedPattern accepts what
/// `workflows::events::Schedule` accepts (but for the day-of-month/day-of-week rule of
/// cron, which EventBridge itself checks when the stack creates the rule) and refuses what
/// it refuses.
fn reconcile_schedule_parameter_is_the_codes(t: &Value) {
    use workflows::events::Schedule;
    let p = &t["Parameters"]["ReconcileSchedule"];
    assert_eq!(
        p["Default"],
        json!(workflows::events::DEFAULT_RECONCILE_SCHEDULE)
    );
    let pattern = regex::Regex::new(p["AllowedPattern"].as_str().unwrap()).unwrap();
    for good in [
        "rate(6 hours)",
        "rate(1 hour)",
        "rate(1 minute)",
        "rate(1 day)",
        "rate(15 minutes)",
        "rate(30 days)",
        "cron(0 */6 * * ? *)",
        "cron(0 6 ? * MON-FRI *)",
        "cron(15 10 ? * 6L 2030)",
        "cron(0/30 8-17 ? * MON#1 *)",
    ] {
        assert!(good.parse::<Schedule>().is_ok(), "{good}");
        assert!(pattern.is_match(good), "the parameter refuses {good}");
    }
    for bad in [
        "6h",
        "rate(1 hours)",
        "rate(6 hour)",
        "rate(0 hours)",
        "rate(06 hours)",
        "rate(6 weeks)",
        "rate(6  hours)",
        "cron(0 6 * * ?)",
        "cron(0 6 * * ? * *)",
        "cron(0 6 * * ? $(x))",
        " rate(6 hours)",
    ] {
        assert!(!pattern.is_match(bad), "the parameter accepts {bad}");
        if bad.trim() == bad {
            assert!(bad.parse::<Schedule>().is_err(), "{bad}");
        }
    }
}

/// With `AlertEmail`, an encrypted topic e-mails it certflow's events that need a person
/// (workflows::notify's detail types), published only by the alerts rule; without it,
/// none of that exists.
fn alerts_are_certflows_events_that_need_a_person(t: &Value) {
    use workflows::notify;
    assert_eq!(t["Parameters"]["AlertEmail"]["Default"], json!(""));
    assert_eq!(
        t["Conditions"]["HasAlertEmail"],
        json!({ "Fn::Not": [{ "Fn::Equals": [{ "Ref": "AlertEmail" }, ""] }] })
    );
    for id in ["AlertsTopic", "AlertsTopicPolicy", "AlertsRule"] {
        assert_eq!(resource(t, id)["Condition"], json!("HasAlertEmail"), "{id}");
    }
    assert_eq!(
        t["Outputs"]["AlertsTopicArn"],
        json!({ "Condition": "HasAlertEmail", "Value": { "Ref": "AlertsTopic" } })
    );
    let topic = props(t, "AlertsTopic");
    assert_eq!(
        topic["KmsMasterKeyId"],
        json!({ "Fn::If": ["CreateKey", get_att("Key", "Arn"), { "Ref": "KmsKeyArn" }] })
    );
    assert_eq!(
        topic["Subscription"],
        json!([{ "Protocol": "email", "Endpoint": { "Ref": "AlertEmail" } }])
    );
    let rule = props(t, "AlertsRule");
    assert_eq!(
        rule["EventPattern"],
        json!({
            "source": [notify::SOURCE],
            "detail-type": [notify::JOB_FAILED, notify::RENEWAL_FAILED, notify::CERTIFICATE_EXPIRING]
        })
    );
    assert_eq!(
        rule["Targets"],
        json!([{ "Id": "certflow-alerts", "Arn": { "Ref": "AlertsTopic" } }])
    );
    let policy = props(t, "AlertsTopicPolicy");
    assert_eq!(policy["Topics"], json!([{ "Ref": "AlertsTopic" }]));
    assert_eq!(
        policy["PolicyDocument"]["Statement"],
        json!([{
            "Sid": "AlertsRule",
            "Effect": "Allow",
            "Principal": { "Service": "events.amazonaws.com" },
            "Action": "sns:Publish",
            "Resource": { "Ref": "AlertsTopic" },
            "Condition": { "ArnEquals": { "aws:SourceArn": get_att("AlertsRule", "Arn") } }
        }])
    );
    // The key lets EventBridge encrypt for the topic (and the events queue).
    let key = &props(t, "Key")["KeyPolicy"]["Statement"];
    let eventbridge = key
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == json!("EventBridge"))
        .expect("the key's EventBridge statement");
    assert_eq!(
        eventbridge["Action"],
        json!(["kms:GenerateDataKey", "kms:Decrypt"])
    );
}

#[test]
fn iam_policies_grant_no_wildcard_beyond_the_allow_list() {
    let t = template();
    let docs = policies(&t);
    let holders: BTreeSet<&str> = docs.iter().map(|(id, _, _)| id.as_str()).collect();
    for id in [
        "Key",
        "QueuePolicy",
        "EventsQueuePolicy",
        "TaskRole",
        "SendInstallCommandPolicy",
        "ManagedSecretsPolicy",
        "ExecutionRole",
        "InstanceSecretsPolicy",
        "ApiRole",
        "AlertsTopicPolicy",
    ] {
        assert!(holders.contains(id), "no policy found in {id}");
    }
    let mut found = Vec::new();
    let mut used = BTreeSet::new();
    for (id, path, doc) in &docs {
        let statements = match &doc["Statement"] {
            Value::Array(a) => a.clone(),
            one => vec![one.clone()],
        };
        for (i, s) in statements.iter().enumerate() {
            let sid = s["Sid"]
                .as_str()
                .map(str::to_string)
                .unwrap_or(format!("#{i}"));
            if s["Effect"] == json!("Deny") {
                continue; // a Deny grants nothing (the queues' TLS-only statement)
            }
            assert_eq!(s["Effect"], json!("Allow"), "{id}{path} {sid}");
            for not in ["NotAction", "NotResource", "NotPrincipal"] {
                assert!(s.get(not).is_none(), "{id}{path} {sid}: {not} in an Allow");
            }
            let mut wild = Vec::new();
            for element in ["Action", "Resource"] {
                if let Some(v) = s.get(element) {
                    wild.extend(values(&t, v).into_iter().filter(|x| x.contains('*')));
                }
            }
            match s.get("Principal") {
                Some(Value::String(p)) if p == "*" => wild.push("*".into()),
                Some(Value::Object(p)) => {
                    for v in p.values() {
                        wild.extend(values(&t, v).into_iter().filter(|x| x.contains('*')));
                    }
                }
                _ => {}
            }
            for w in wild {
                match ALLOWED_WILDCARDS
                    .iter()
                    .position(|(r, s, v, _)| *r == id && *s == sid && *v == w)
                {
                    Some(k) => {
                        used.insert(k);
                    }
                    None => found.push(format!("{id}{path} {sid}: {w}")),
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "wildcards not in ALLOWED_WILDCARDS (narrow them, or list them with the reason AWS \
         requires them):\n  {}",
        found.join("\n  ")
    );
    let stale: Vec<_> = ALLOWED_WILDCARDS
        .iter()
        .enumerate()
        .filter(|(k, _)| !used.contains(k))
        .map(|(_, (r, s, v, _))| format!("{r} {s}: {v}"))
        .collect();
    assert!(
        stale.is_empty(),
        "ALLOWED_WILDCARDS lists what the template no longer has: {stale:?}"
    );
}

/// The statement `sid` of the policy held by resource `id`.
fn statement(docs: &[(String, String, Value)], id: &str, sid: &str) -> Value {
    docs.iter()
        .filter(|(r, _, _)| r == id)
        .flat_map(|(_, _, d)| match &d["Statement"] {
            Value::Array(a) => a.clone(),
            one => vec![one.clone()],
        })
        .find(|s| s["Sid"] == json!(sid))
        .unwrap_or_else(|| panic!("no statement {sid} in {id}"))
}

/// Issue 12: the worker reads and writes only secrets tagged as managed and for a target
/// (no IfExists), tags a secret only as it creates it, and the servers read only the
/// AWSCURRENT version of their own target's secrets.
#[test]
fn secrets_policies_bind_secrets_to_their_target() {
    let t = template();
    let docs = policies(&t);
    let text = |v: &Value| v.to_string();
    for (id, doc) in docs.iter().map(|(id, _, d)| (id, d)) {
        assert!(
            !text(doc).contains("IfExists"),
            "{id}: an IfExists condition lets untagged resources through: {doc}"
        );
    }
    let use_ = statement(&docs, "ManagedSecretsPolicy", "UseManagedSecrets");
    assert_eq!(
        use_["Condition"]["StringEquals"]["secretsmanager:ResourceTag/certflow:managed"],
        "true"
    );
    assert_eq!(
        use_["Condition"]["Null"]["secretsmanager:ResourceTag/<TargetTagKey>"],
        "false"
    );
    let create = statement(&docs, "ManagedSecretsPolicy", "CreateManagedSecrets");
    assert_eq!(create["Action"], "secretsmanager:CreateSecret");
    assert_eq!(
        create["Condition"]["StringEquals"]["aws:RequestTag/certflow:managed"],
        "true"
    );
    assert_eq!(
        create["Condition"]["Null"]["aws:RequestTag/<TargetTagKey>"],
        "false"
    );
    // TagResource only at creation: the resource has no certflow:managed tag yet.
    let mut tagging = Vec::new();
    for (id, _, doc) in &docs {
        for s in doc["Statement"].as_array().cloned().unwrap_or_default() {
            if text(&s["Action"]).contains("TagResource") {
                tagging.push((id.clone(), s));
            }
        }
    }
    assert_eq!(tagging.len(), 1, "{tagging:?}");
    let (id, tag) = &tagging[0];
    assert_eq!(
        (id.as_str(), &tag["Sid"]),
        ("ManagedSecretsPolicy", &json!("TagAtCreationOnly"))
    );
    assert_eq!(
        tag["Condition"]["Null"]["secretsmanager:ResourceTag/certflow:managed"],
        "true"
    );
    assert_eq!(
        tag["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"],
        json!(["certflow:managed", "<TargetTagKey>"])
    );
    let certs = statement(&docs, "TaskRole", "Certificates");
    assert!(text(&certs["Action"]).contains("acm:ListTagsForCertificate"));
    let servers = statement(&docs, "InstanceSecretsPolicy", "OwnTagSecrets");
    assert_eq!(
        servers["Condition"]["StringEquals"]["secretsmanager:VersionStage"],
        "AWSCURRENT"
    );
    assert_eq!(
        servers["Condition"]["StringEquals"]["secretsmanager:ResourceTag/<TargetTagKey>"],
        "${aws:PrincipalTag/<TargetTagKey>}"
    );
}

/// Issue 14: the worker publishes its outcome events on the default bus (the container's
/// CERTFLOW_EVENT_BUS), reads the whole inventory for the reconcile, and has what the
/// reconcile's exports and installs need.
/// No task at rest by default, and scaling that needs no paid metric: the two alarms read
/// only the queues' own (free) metrics, and set exactly the tasks the backlog wants.
#[test]
fn the_service_scales_to_zero_on_the_queues_own_metrics() {
    let t = template();
    let param = |name: &str| t["Parameters"][name]["Default"].clone();
    assert_eq!(param("MinTasks"), json!(0));
    assert_eq!(param("ContainerInsights"), json!("disabled"));
    assert_eq!(
        props(&t, "Cluster")["ClusterSettings"],
        json!([{ "Name": "containerInsights", "Value": { "Ref": "ContainerInsights" } }])
    );
    assert_eq!(
        props(&t, "ScalableTarget")["MinCapacity"],
        json!({ "Ref": "MinTasks" })
    );
    for (alarm, policy, comparison) in [
        (
            "WorkQueuedAlarm",
            "ScaleToBacklogPolicy",
            "GreaterThanOrEqualToThreshold",
        ),
        ("QuietAlarm", "ScaleInPolicy", "LessThanThreshold"),
    ] {
        let a = props(&t, alarm);
        assert_eq!(a["ComparisonOperator"], json!(comparison), "{alarm}");
        assert_eq!(a["AlarmActions"], json!([{ "Ref": policy }]), "{alarm}");
        let metrics = a["Metrics"].as_array().unwrap();
        let namespaces: Vec<&Value> = metrics
            .iter()
            .filter_map(|m| m.get("MetricStat"))
            .map(|m| &m["Metric"]["Namespace"])
            .collect();
        assert_eq!(
            namespaces.len(),
            6,
            "{alarm}: visible and in flight, three queues"
        );
        assert!(
            namespaces.iter().all(|n| **n == json!("AWS/SQS")),
            "{alarm}"
        );
        let wanted = metrics
            .iter()
            .find(|m| m["ReturnData"] == json!(true))
            .unwrap();
        assert_eq!(
            wanted["Expression"],
            json!({ "Fn::Sub": "CEIL((FILL(iv,0)+FILL(ii,0)+FILL(ev,0)+FILL(ei,0)+FILL(tv,0)+FILL(ti,0)) / ${BacklogPerTask})" })
        );
        let p = &props(&t, policy)["StepScalingPolicyConfiguration"];
        assert_eq!(p["AdjustmentType"], json!("ExactCapacity"), "{policy}");
    }
    assert_eq!(props(&t, "QuietAlarm")["EvaluationPeriods"], json!(15));
    assert_eq!(
        props(&t, "QuietAlarm")["TreatMissingData"],
        json!("breaching")
    );
    assert!(
        !template_text().contains("ECS/ContainerInsights"),
        "no alarm or policy depends on Container Insights"
    );
}

#[test]
fn the_task_role_can_publish_outcomes_and_reconcile() {
    let t = template();
    let docs = policies(&t);
    let publish = statement(&docs, "TaskRole", "PublishOutcomes");
    assert_eq!(publish["Action"], json!("events:PutEvents"));
    assert_eq!(
        render(&t, &publish["Resource"]),
        "arn:<AWS::Partition>:events:<AWS::Region>:<AWS::AccountId>:event-bus/default"
    );
    let inventory = statement(&docs, "TaskRole", "InventoryTable");
    assert!(
        inventory["Action"]
            .as_array()
            .unwrap()
            .contains(&json!("dynamodb:Scan")),
        "{inventory}"
    );
    let certs = statement(&docs, "TaskRole", "Certificates");
    assert!(certs["Action"]
        .to_string()
        .contains("acm:DescribeCertificate"));
    let follow = statement(&docs, "TaskRole", "FollowCommands");
    assert!(follow["Action"]
        .to_string()
        .contains("ssm:DescribeInstanceInformation"));
    let send = statement(&docs, "SendInstallCommandPolicy", "TaggedServers");
    assert_eq!(send["Action"], json!("ssm:SendCommand"));
    assert!(send["Resource"].to_string().contains(":instance/*"));
}

// ---------------------------------------------------------------------------------------
// 4. The stack on the emulator runs certflow.

/// The venv's AWS CLI against the emulator, `--output json`.
fn cli(args: &[&str]) -> Value {
    certflow_tests::aws_cli(args)
}

struct Stack {
    name: String,
    outputs: HashMap<String, String>,
}

/// Creates the stack from the template with these parameters; returns its outputs.
async fn create_stack(sdk: &aws_config::SdkConfig, parameters: &[(&str, String)]) -> Stack {
    let mut t = template();
    // The emulator's AWS::IAM::ManagedPolicy encodes a PolicyDocument given as text a
    // second time and then refuses it; that example policy is attached to nothing, and the
    // IAM test above reads it.
    t["Resources"]
        .as_object_mut()
        .unwrap()
        .remove("InstanceSecretsPolicy");
    t["Outputs"]
        .as_object_mut()
        .unwrap()
        .remove("InstanceSecretsPolicyArn");
    // It also stores a table's DeletionProtectionEnabled as the parameter's text ("false")
    // where CloudFormation converts it to a boolean, and then no SDK can read the table's
    // description: give it the boolean.
    for table in ["JobsTable", "InventoryTable"] {
        assert_eq!(
            t["Resources"][table]["Properties"]["DeletionProtectionEnabled"],
            json!({ "Ref": "DeletionProtection" })
        );
        t["Resources"][table]["Properties"]["DeletionProtectionEnabled"] = json!(false);
    }
    let cf = aws_sdk_cloudformation::Client::new(sdk);
    let name = unique("certflow-stack");
    cf.create_stack()
        .stack_name(&name)
        .template_body(t.to_string())
        .set_parameters(Some(
            parameters
                .iter()
                .map(|(k, v)| {
                    Parameter::builder()
                        .parameter_key(*k)
                        .parameter_value(v)
                        .build()
                })
                .collect(),
        ))
        .capabilities(Capability::CapabilityIam)
        .send()
        .await
        .expect("create the stack");
    let until = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let out = cf.describe_stacks().stack_name(&name).send().await.unwrap();
        let stack = &out.stacks()[0];
        let status = stack.stack_status().cloned().unwrap();
        if status == StackStatus::CreateComplete {
            let outputs = stack
                .outputs()
                .iter()
                .map(|o| {
                    (
                        o.output_key().unwrap().to_string(),
                        o.output_value().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            return Stack { name, outputs };
        }
        assert_eq!(
            status,
            StackStatus::CreateInProgress,
            "{:?}",
            stack.stack_status_reason()
        );
        assert!(tokio::time::Instant::now() < until, "stack not created");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn describe_table(ddb: &aws_sdk_dynamodb::Client, name: &str) -> TableDescription {
    ddb.describe_table()
        .table_name(name)
        .send()
        .await
        .unwrap()
        .table
        .unwrap()
}

/// What the code relies on in a table: keys, attribute types, indexes, billing.
fn table_shape(t: &TableDescription) -> Value {
    let keys = |k: &[aws_sdk_dynamodb::types::KeySchemaElement]| -> Vec<(String, String)> {
        k.iter()
            .map(|e| {
                (
                    e.attribute_name().to_string(),
                    e.key_type().as_str().to_string(),
                )
            })
            .collect()
    };
    let attrs: BTreeMap<String, String> = t
        .attribute_definitions()
        .iter()
        .map(|a| {
            (
                a.attribute_name().to_string(),
                a.attribute_type().as_str().to_string(),
            )
        })
        .collect();
    let gsis: BTreeMap<String, Value> = t
        .global_secondary_indexes()
        .iter()
        .map(|i| {
            (
                i.index_name().unwrap().to_string(),
                json!({
                    "keys": keys(i.key_schema()),
                    "projection": i.projection().and_then(|p| p.projection_type()).map(|p| p.as_str().to_string()),
                }),
            )
        })
        .collect();
    json!({
        "keys": keys(t.key_schema()),
        "attributes": attrs,
        "indexes": gsis,
        "billing": t.billing_mode_summary().and_then(|b| b.billing_mode()).map(|b| b.as_str().to_string()),
    })
}

async fn queue_attributes(sqs: &aws_sdk_sqs::Client, name: &str) -> HashMap<String, String> {
    let url = sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("queue {name}: {e:?}"))
        .queue_url
        .unwrap();
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.as_str().to_string(), v))
        .collect()
}

/// The emulator's default VPC and one of its subnets, for the stack's tasks.
fn default_network() -> (String, String) {
    let vpc = cli(&[
        "ec2",
        "describe-vpcs",
        "--filters",
        "Name=isDefault,Values=true",
    ])["Vpcs"][0]["VpcId"]
        .as_str()
        .unwrap()
        .to_string();
    let subnet = cli(&[
        "ec2",
        "describe-subnets",
        "--filters",
        &format!("Name=vpc-id,Values={vpc}"),
    ])["Subnets"][0]["SubnetId"]
        .as_str()
        .unwrap()
        .to_string();
    (vpc, subnet)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_runs_an_export_and_a_renewal_end_to_end() {
    let sdk = emulator().await;
    let (vpc, subnet) = default_network();
    let prefix = unique("cf");
    let source = format!("custom.aws.acm.{}", unique("cf"));
    let stack = create_stack(
        &sdk,
        &[
            ("NamePrefix", prefix.clone()),
            ("ImageTag", "test".into()),
            ("VpcId", vpc),
            ("SubnetIds", subnet),
            ("SecretPrefix", format!("{}/", unique("certflow-cf"))),
            ("DocumentName", unique("Install-ACMCertificate")),
            // The emulator does not split a list parameter's default: pass it.
            ("EventSources", format!("aws.acm,{source}")),
            ("DeletionProtection", "false".into()),
            ("EnableApi", "true".into()),
            ("ReconcileSchedule", "rate(2 hours)".into()),
            ("AlertEmail", "certflow-ops@example.com".into()),
        ],
    )
    .await;
    let out = &stack.outputs;
    let o = |k: &str| -> String {
        out.get(k)
            .unwrap_or_else(|| panic!("no output {k} in {out:?}"))
            .clone()
    };
    assert_eq!(o("JobsTableName"), format!("{prefix}-jobs"));
    assert_eq!(o("EventSources"), format!("aws.acm,{source}"));
    assert!(o("ApiEndpoint").ends_with("/v1/export-cert"));

    // The stack's tables are the ones the code creates (bootstrap's functions).
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let reference = unique("cf-ref-jobs");
    engine::backend::dynamodb::create_job_table(
        &ddb,
        &schema::JobTableSpec::new(&reference, workflows::JOB_LABELS),
    )
    .await
    .unwrap();
    assert_eq!(
        table_shape(&describe_table(&ddb, &o("JobsTableName")).await),
        table_shape(&describe_table(&ddb, &reference).await)
    );
    let reference = unique("cf-ref-inventory");
    workflows::inventory::create_table(&ddb, &reference)
        .await
        .unwrap();
    assert_eq!(
        table_shape(&describe_table(&ddb, &o("InventoryTableName")).await),
        table_shape(&describe_table(&ddb, &reference).await)
    );

    // The queues too, as `certflow bootstrap` makes them (workers/src/aws.rs: visibility
    // 60 s; schema::MAX_RECEIVES receives of a task or a request), plus the stack's key.
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    for output in ["TasksQueueName", "IntakeQueueName", "EventsQueueName"] {
        let name = o(output);
        let reference = unique("cf-ref-queue");
        engine::backend::sqs::create_queue_with_dlq(
            &sqs,
            &reference,
            Duration::from_secs(60),
            schema::MAX_RECEIVES,
        )
        .await
        .unwrap();
        let (ours, theirs) = (
            queue_attributes(&sqs, &name).await,
            queue_attributes(&sqs, &reference).await,
        );
        for attribute in ["VisibilityTimeout", "ReceiveMessageWaitTimeSeconds"] {
            assert_eq!(
                ours.get(attribute),
                theirs.get(attribute),
                "{name} {attribute}"
            );
        }
        let redrive = |a: &HashMap<String, String>| -> Value {
            serde_json::from_str(&a["RedrivePolicy"]).unwrap()
        };
        assert_eq!(
            redrive(&ours)["maxReceiveCount"].as_u64(),
            redrive(&theirs)["maxReceiveCount"].as_u64(),
            "{name}"
        );
        let dlq = queue_attributes(&sqs, &schema::dlq_name(&name)).await;
        assert_eq!(
            redrive(&ours)["deadLetterTargetArn"].as_str(),
            Some(dlq["QueueArn"].as_str())
        );
        let reference_dlq = queue_attributes(&sqs, &schema::dlq_name(&reference)).await;
        assert_eq!(
            dlq.get("MessageRetentionPeriod"),
            reference_dlq.get("MessageRetentionPeriod")
        );
        for q in [&ours, &dlq] {
            assert_eq!(q.get("KmsMasterKeyId"), Some(&o("KmsKeyArn")), "{name}");
        }
    }
    assert_eq!(
        queue_attributes(&sqs, &o("IntakeQueueName")).await["QueueArn"],
        o("IntakeQueueArn")
    );

    // The rules carry the code's patterns (the new-servers rule: aws.ec2 and the stack's
    // sources) and schedule, and target the events queue.
    let eb = aws_sdk_eventbridge::Client::new(&sdk);
    let sources: Vec<String> = o("EventSources").split(',').map(String::from).collect();
    let mut settings = workflows::events::RuleSettings::new(o("RulePrefix"), sources);
    settings.reconcile_schedule = "rate(2 hours)".parse().unwrap();
    settings.document_name = o("DocumentName");
    for spec in workflows::events::rules(&settings) {
        let rule = &spec.name;
        let got = eb.describe_rule().name(rule).send().await.unwrap();
        match &spec.trigger {
            workflows::events::Trigger::Pattern(pattern) => {
                let deployed: Value = serde_json::from_str(got.event_pattern().unwrap()).unwrap();
                assert_eq!(&deployed, pattern, "{rule}");
            }
            workflows::events::Trigger::Schedule(schedule) => {
                assert_eq!(got.schedule_expression(), Some(schedule.as_str()), "{rule}");
                assert_eq!(got.arn(), Some(o("ReconcileRuleArn").as_str()));
            }
        }
        if rule.ends_with(workflows::events::suffix::NEW_SERVERS) {
            assert_eq!(got.arn(), Some(o("NewServersRuleArn").as_str()));
        }
        if rule.ends_with(workflows::events::suffix::COMMANDS) {
            assert_eq!(got.arn(), Some(o("CommandsRuleArn").as_str()));
        }
        let targets = eb.list_targets_by_rule().rule(rule).send().await.unwrap();
        assert_eq!(targets.targets().len(), 1, "{rule}");
        assert_eq!(targets.targets()[0].arn(), o("EventsQueueArn"), "{rule}");
    }

    // With AlertEmail: the topic, encrypted with the stack's key, e-mails that address,
    // and the alerts rule sends it certflow's Job Failed, Renewal Failed and Certificate
    // Expiring events. (The emulator's CloudFormation does not create
    // AWS::SNS::TopicPolicy resources; the template test checks that policy.)
    let topic = o("AlertsTopicArn");
    let attributes = &cli(&["sns", "get-topic-attributes", "--topic-arn", &topic])["Attributes"];
    assert_eq!(
        attributes["KmsMasterKeyId"],
        json!(o("KmsKeyArn")),
        "{attributes}"
    );
    let subscriptions = cli(&["sns", "list-subscriptions-by-topic", "--topic-arn", &topic]);
    let subscriptions: Vec<(&str, &str)> = subscriptions["Subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["Protocol"].as_str().unwrap(),
                s["Endpoint"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(subscriptions, [("email", "certflow-ops@example.com")]);
    let alerts = format!("{}-alerts", o("RulePrefix"));
    let got = eb.describe_rule().name(&alerts).send().await.unwrap();
    let deployed: Value = serde_json::from_str(got.event_pattern().unwrap()).unwrap();
    assert_eq!(
        deployed,
        json!({
            "source": [workflows::notify::SOURCE],
            "detail-type": [
                workflows::notify::JOB_FAILED,
                workflows::notify::RENEWAL_FAILED,
                workflows::notify::CERTIFICATE_EXPIRING
            ]
        })
    );
    let targets = eb
        .list_targets_by_rule()
        .rule(&alerts)
        .send()
        .await
        .unwrap();
    let targets: Vec<&str> = targets.targets().iter().map(|t| t.arn()).collect();
    assert_eq!(targets, [topic.as_str()]);

    // The SSM document is the file.
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let got = ssm
        .get_document()
        .name(o("DocumentName"))
        .document_format(aws_sdk_ssm::types::DocumentFormat::Yaml)
        .send()
        .await
        .unwrap();
    assert_eq!(got.content(), Some(document_text().as_str()));

    // The worker's container points at the stack's resources.
    let container = &cli(&[
        "ecs",
        "describe-task-definition",
        "--task-definition",
        &format!("{prefix}-worker"),
    ])["taskDefinition"]["containerDefinitions"][0];
    let env: HashMap<String, String> = container["environment"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e.is_null()) // the emulator keeps AWS::NoValue as null
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (var, output) in [
        ("CERTFLOW_JOBS_TABLE", "JobsTableName"),
        ("CERTFLOW_TASKS_QUEUE", "TasksQueueName"),
        ("CERTFLOW_INTAKE_QUEUE", "IntakeQueueName"),
        ("CERTFLOW_EVENTS_QUEUE", "EventsQueueName"),
        ("CERTFLOW_INVENTORY_TABLE", "InventoryTableName"),
        ("CERTFLOW_DOCUMENT_NAME", "DocumentName"),
        ("CERTFLOW_SECRET_PREFIX", "SecretPrefix"),
        ("CERTFLOW_KMS_KEY_ID", "KmsKeyArn"),
        ("CERTFLOW_EVENT_SOURCES", "EventSources"),
        ("CERTFLOW_RULE_PREFIX", "RulePrefix"),
    ] {
        assert_eq!(env.get(var), Some(&o(output)), "{var}");
        assert!(
            o("CliEnvironment").contains(&format!("{var}={}", o(output))),
            "CliEnvironment lacks {var}"
        );
    }
    assert_eq!(
        env.get("CERTFLOW_EVENT_BUS").map(String::as_str),
        Some("default")
    );
    assert_eq!(container["readonlyRootFilesystem"], json!(true));
    assert_eq!(container["user"], json!("65532:65532"));
    assert_eq!(container["stopTimeout"], json!(30));

    // certflow over the stack's resources, configured from the outputs as the worker is.
    let names = Names {
        jobs_table: o("JobsTableName"),
        tasks_queue: o("TasksQueueName"),
        intake_queue: o("IntakeQueueName"),
        events_queue: o("EventsQueueName"),
        inventory_table: o("InventoryTableName"),
        document_name: o("DocumentName"),
        secret_prefix: o("SecretPrefix"),
        kms_key_id: Some(o("KmsKeyArn")),
        source: source.clone(),
    };
    let env = Env::from_names(sdk.clone(), &names).await;
    let tag_value = unique("stack");
    let servers = env.instances(2, "Environment", &tag_value);
    let arn = env.certificate(true).await;
    env.allow(&arn, "Environment", &tag_value).await;
    let worker = env.worker("w1");
    let name = unique("shop");
    let id = env
        .submit(&format!(
            r#"{{"CertificateArn": "{arn}", "CertName": "{name}", "TargetTagKey": "Environment", "TargetTagValue": "{tag_value}"}}"#
        ))
        .await;
    let rec = env.wait(&id).await;
    assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
    // Both servers installed it, the canary first, each in its own batch.
    let results = env.servers(&id).await;
    assert_eq!(
        results.keys().collect::<Vec<_>>(),
        servers.iter().collect::<Vec<_>>()
    );
    for (batch, server) in servers.iter().enumerate() {
        let r = &results[server];
        assert_eq!(r.batch, batch as u32, "{server}: {r:?}");
        assert_eq!(
            r.status,
            Some(workflows::export_certificate::InstanceStatus::Success),
            "{server}: {r:?}"
        );
        assert_eq!(r.serial, env.fleet().installed_serial(server), "{server}");
    }

    // The row is in the stack's inventory table; the secrets are under the stack's prefix,
    // encrypted with the stack's key, tagged as managed.
    let row = ddb
        .get_item()
        .table_name(o("InventoryTableName"))
        .set_key(Some(workflows::inventory::key(
            "Environment",
            &tag_value,
            &arn,
            &name,
        )))
        .send()
        .await
        .unwrap()
        .item
        .expect("inventory row in the stack's table");
    assert_eq!(
        row["LastStatus"],
        aws_sdk_dynamodb::types::AttributeValue::S("INSTALLED".into())
    );
    let sm = aws_sdk_secretsmanager::Client::new(&sdk);
    {
        let secret = env.secret_name(&name, "Environment", &tag_value);
        assert!(secret.starts_with(&o("SecretPrefix")), "{secret}");
        let d = sm
            .describe_secret()
            .secret_id(&secret)
            .send()
            .await
            .unwrap();
        assert_eq!(d.kms_key_id(), Some(o("KmsKeyArn").as_str()), "{secret}");
        assert!(
            d.tags()
                .iter()
                .any(|t| t.key() == Some("certflow:managed") && t.value() == Some("true")),
            "{secret}"
        );
    }

    // A renewal event on the bus reaches the events queue through the stack's rule and
    // re-exports the certificate (ACM confirms it by a new serial: the emulator never
    // renews, so the row is made to hold an older one).
    env.pretend_renewed(&arn).await;
    let put = eb
        .put_events()
        .entries(
            PutEventsRequestEntry::builder()
                .source(&source)
                .detail_type("ACM Certificate Available")
                .resources(&arn)
                .detail(json!({"Action": "RENEWAL", "Exportable": "TRUE"}).to_string())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(put.failed_entry_count(), 0, "{put:?}");
    let event_id = put.entries()[0].event_id().unwrap();
    let parent = env
        .wait(&JobId::from_key(
            workflows::renew_certificate::NAME,
            event_id,
        ))
        .await;
    worker.stop().await;
    assert_eq!(
        parent.status,
        JobStatus::Succeeded,
        "{:?}",
        parent.last_error
    );
    let last = env
        .jobs
        .history(&parent.job_id)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(last.note.as_deref(), Some("1 of 1 export job(s) succeeded"));

    // Deleting the stack keeps the tables (DeletionPolicy: Retain).
    let cf = aws_sdk_cloudformation::Client::new(&sdk);
    cf.delete_stack()
        .stack_name(&stack.name)
        .send()
        .await
        .unwrap();
    describe_table(&ddb, &o("JobsTableName")).await;
}

/// Without `AlertEmail` the stack makes no topic, no alerts rule and no `AlertsTopicArn`;
/// the reconcile runs on the default schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_alert_email_the_stack_makes_no_alerts() {
    let sdk = emulator().await;
    let (vpc, subnet) = default_network();
    let prefix = unique("cf");
    let stack = create_stack(
        &sdk,
        &[
            ("NamePrefix", prefix.clone()),
            ("ImageTag", "test".into()),
            ("VpcId", vpc),
            ("SubnetIds", subnet),
            ("SecretPrefix", format!("{}/", unique("certflow-cf"))),
            ("DocumentName", unique("Install-ACMCertificate")),
            ("EventSources", "aws.acm".into()),
            ("DeletionProtection", "false".into()),
        ],
    )
    .await;
    assert!(
        !stack.outputs.contains_key("AlertsTopicArn"),
        "{:?}",
        stack.outputs
    );
    let eb = aws_sdk_eventbridge::Client::new(&sdk);
    let alerts = eb
        .describe_rule()
        .name(format!("{prefix}-alerts"))
        .send()
        .await;
    assert!(
        alerts.is_err(),
        "an alerts rule without AlertEmail: {alerts:?}"
    );
    let topics = cli(&["sns", "list-topics"]).to_string();
    assert!(!topics.contains(&format!(":{prefix}-alerts")), "{topics}");
    let reconcile = eb
        .describe_rule()
        .name(format!("{prefix}-reconcile"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        reconcile.schedule_expression(),
        Some(workflows::events::DEFAULT_RECONCILE_SCHEDULE)
    );
    aws_sdk_cloudformation::Client::new(&sdk)
        .delete_stack()
        .stack_name(&stack.name)
        .send()
        .await
        .unwrap();
}
