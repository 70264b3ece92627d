//! The fault-injecting proxy against the emulator: it recognises each service's operations,
//! and each fault it injects looks, to the real SDK, like what AWS would do — throttling
//! errors and 5xx are retried by the SDK, a reset after forwarding leaves the side effect
//! behind, SSM answers can be rewritten, and a seeded probability injects the same faults
//! twice.
//!
//! Run with the emulator: `deploy/local/emulator.sh start && source .local/emulator.env`,
//! then `cargo test -p certflow-tests --test proxy`.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use certflow_tests::fleet::{Behaviour, Fleet, Kind};
use certflow_tests::proxy::{Action, FaultProxy, Rule, Trigger};
use certflow_tests::unique;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The emulator's URL, or a clear failure.
fn upstream() -> String {
    let url = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        !url.is_empty(),
        "AWS_ENDPOINT_URL is not set: start the emulator first \
         (deploy/local/emulator.sh start && source .local/emulator.env)"
    );
    url
}

async fn setup(seed: u64) -> (SdkConfig, FaultProxy) {
    let upstream = upstream();
    let sdk = certflow_tests::emulator().await;
    (sdk, FaultProxy::start(&upstream, seed).await)
}

/// A client of `$krate` through the proxy, with the SDK's default retries or none.
macro_rules! client {
    ($krate:ident, $sdk:expr, $proxy:expr) => {
        $krate::Client::from_conf(
            $krate::config::Builder::from($sdk)
                .endpoint_url($proxy.url())
                .build(),
        )
    };
    ($krate:ident, $sdk:expr, $proxy:expr, no_retries) => {
        $krate::Client::from_conf(
            $krate::config::Builder::from($sdk)
                .endpoint_url($proxy.url())
                .retry_config($krate::config::retry::RetryConfig::disabled())
                .build(),
        )
    };
}

fn rule(service: &str, op: &str, trigger: Trigger, action: Action) -> Rule {
    Rule::new(service, Some(op), trigger, action)
}

async fn table(sdk: &SdkConfig) -> String {
    let name = unique("proxy");
    aws_sdk_dynamodb::Client::new(sdk)
        .create_table()
        .table_name(&name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    name
}

async fn queue(sdk: &SdkConfig) -> String {
    aws_sdk_sqs::Client::new(sdk)
        .create_queue()
        .queue_name(unique("proxy"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap()
}

/// Every message body in the queue, read straight from the emulator.
async fn drain(sdk: &SdkConfig, url: &str) -> Vec<String> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut out = Vec::new();
    loop {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let msgs = got.messages.unwrap_or_default();
        if msgs.is_empty() {
            return out;
        }
        for m in msgs {
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle.unwrap())
                .send()
                .await
                .unwrap();
            out.push(m.body.unwrap_or_default());
        }
    }
}

/// Sends raw bytes to the proxy and reads until it closes the connection.
async fn raw(proxy: &FaultProxy, request: &str) -> std::io::Result<String> {
    let addr = proxy.url().trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(request.as_bytes()).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A signed-looking EC2 query request (the emulator does not check signatures).
fn ec2_request(proxy: &FaultProxy, action: &str) -> String {
    let body = format!("Action={action}&Version=2016-11-15");
    format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded; charset=utf-8\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/ec2/aws4_request, \
         SignedHeaders=host, Signature=00\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        proxy.url().trim_start_matches("http://"),
        body.len()
    )
}

fn seen(proxy: &FaultProxy) -> Vec<(String, String)> {
    proxy
        .calls()
        .into_iter()
        .map(|c| (c.service, c.operation))
        .collect()
}

#[tokio::test]
async fn recognises_each_services_operations() {
    let (sdk, proxy) = setup(1).await;
    client!(aws_sdk_dynamodb, &sdk, proxy)
        .list_tables()
        .send()
        .await
        .unwrap();
    let sqs = client!(aws_sdk_sqs, &sdk, proxy);
    let url = sqs
        .create_queue()
        .queue_name(unique("proxy"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    // The Host header goes through unchanged, and the emulator builds queue URLs from it.
    assert!(url.starts_with(&proxy.url()), "{url}");
    sqs.send_message()
        .queue_url(&url)
        .message_body("hello")
        .send()
        .await
        .unwrap();
    client!(aws_sdk_ssm, &sdk, proxy)
        .list_commands()
        .send()
        .await
        .unwrap();
    client!(aws_sdk_acm, &sdk, proxy)
        .list_certificates()
        .send()
        .await
        .unwrap();
    client!(aws_sdk_secretsmanager, &sdk, proxy)
        .list_secrets()
        .send()
        .await
        .unwrap();
    // EC2 speaks the query protocol: the operation is the form body's Action.
    let answer = raw(&proxy, &ec2_request(&proxy, "DescribeRegions"))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("DescribeRegionsResponse"), "{answer}");

    let want = [
        ("dynamodb", "ListTables"),
        ("sqs", "CreateQueue"),
        ("sqs", "SendMessage"),
        ("ssm", "ListCommands"),
        ("acm", "ListCertificates"),
        ("secretsmanager", "ListSecrets"),
        ("ec2", "DescribeRegions"),
    ];
    let got = seen(&proxy);
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(s, o)| (s.to_string(), o.to_string()))
        .collect();
    assert_eq!(got, want);
    for c in proxy.calls() {
        assert!(
            c.forwarded && c.status == Some(200) && c.injected.is_empty(),
            "{c:?}"
        );
    }
    assert_eq!(proxy.count("sqs", "SendMessage"), 1);
    assert_eq!(proxy.count("sqs", "*"), 2);
    assert!(proxy.calls()[2].body.contains("hello"));
}

#[tokio::test]
async fn dynamodb_throttling_is_parsed_and_retried() {
    let (sdk, proxy) = setup(2).await;
    let table = table(&sdk).await;
    proxy.add_rule(rule(
        "dynamodb",
        "PutItem",
        Trigger::Nth(1),
        Action::Throttle,
    ));
    // Without retries the caller sees the modelled error.
    let err = client!(aws_sdk_dynamodb, &sdk, proxy, no_retries)
        .put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S("a".into()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    assert_eq!(err.code(), Some("ProvisionedThroughputExceededException"));
    assert!(err
        .into_service_error()
        .is_provisioned_throughput_exceeded_exception());

    // With the SDK's default (standard) retries, the second attempt goes through.
    proxy.clear_calls();
    proxy.clear_rules();
    proxy.add_rule(rule(
        "dynamodb",
        "PutItem",
        Trigger::Nth(1),
        Action::Throttle,
    ));
    client!(aws_sdk_dynamodb, &sdk, proxy)
        .put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S("b".into()))
        .send()
        .await
        .unwrap();
    let calls = proxy.calls();
    assert_eq!(proxy.count("dynamodb", "PutItem"), 2, "{calls:?}");
    assert_eq!(calls[0].fault(), Some(&Action::Throttle));
    assert_eq!(calls[0].status, Some(400));
    assert!(!calls[0].forwarded);
    assert_eq!((calls[1].fault(), calls[1].status), (None, Some(200)));
}

#[tokio::test]
async fn sqs_throttling_is_parsed_and_retried() {
    let (sdk, proxy) = setup(3).await;
    let url = queue(&sdk).await;
    proxy.add_rule(rule(
        "sqs",
        "SendMessage",
        Trigger::Nth(1),
        Action::Throttle,
    ));
    let err = client!(aws_sdk_sqs, &sdk, proxy, no_retries)
        .send_message()
        .queue_url(&url)
        .message_body("throttled")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    assert_eq!(err.code(), Some("RequestThrottled"));
    assert!(err.into_service_error().is_request_throttled());

    proxy.clear_rules();
    proxy.clear_calls();
    proxy.add_rule(rule(
        "sqs",
        "SendMessage",
        Trigger::Nth(1),
        Action::Throttle,
    ));
    client!(aws_sdk_sqs, &sdk, proxy)
        .send_message()
        .queue_url(&url)
        .message_body("retried")
        .send()
        .await
        .unwrap();
    assert_eq!(proxy.count("sqs", "SendMessage"), 2, "{:?}", proxy.calls());
    assert_eq!(proxy.calls()[0].fault(), Some(&Action::Throttle));
    assert_eq!(drain(&sdk, &url).await, vec!["retried".to_string()]);
}

#[tokio::test]
async fn ssm_acm_and_secrets_manager_throttling_is_retried() {
    let (sdk, proxy) = setup(4).await;
    for (service, op) in [
        ("ssm", "ListCommands"),
        ("acm", "ListCertificates"),
        ("secretsmanager", "ListSecrets"),
    ] {
        proxy.add_rule(rule(service, op, Trigger::Nth(1), Action::Throttle));
        proxy.add_rule(rule(service, op, Trigger::Nth(2), Action::Throttle));
    }
    // First without retries: each answers ThrottlingException (400).
    let e = client!(aws_sdk_ssm, &sdk, proxy, no_retries)
        .list_commands()
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.raw_response().map(|r| r.status().as_u16())),
        (Some("ThrottlingException"), Some(400))
    );
    let e = client!(aws_sdk_acm, &sdk, proxy, no_retries)
        .list_certificates()
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ThrottlingException"));
    let e = client!(aws_sdk_secretsmanager, &sdk, proxy, no_retries)
        .list_secrets()
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ThrottlingException"));
    // Then with retries: the second throttle is retried and the third call succeeds.
    client!(aws_sdk_ssm, &sdk, proxy)
        .list_commands()
        .send()
        .await
        .unwrap();
    client!(aws_sdk_acm, &sdk, proxy)
        .list_certificates()
        .send()
        .await
        .unwrap();
    client!(aws_sdk_secretsmanager, &sdk, proxy)
        .list_secrets()
        .send()
        .await
        .unwrap();
    assert_eq!(proxy.count("ssm", "ListCommands"), 3);
    assert_eq!(proxy.count("acm", "ListCertificates"), 3);
    assert_eq!(proxy.count("secretsmanager", "ListSecrets"), 3);
    assert_eq!(proxy.injected(), 6);
}

#[tokio::test]
async fn ec2_throttling_is_request_limit_exceeded_in_xml() {
    let (_sdk, proxy) = setup(5).await;
    proxy.add_rule(rule(
        "ec2",
        "DescribeRegions",
        Trigger::Nth(1),
        Action::Throttle,
    ));
    let first = raw(&proxy, &ec2_request(&proxy, "DescribeRegions"))
        .await
        .unwrap();
    assert!(first.starts_with("HTTP/1.1 503"), "{first}");
    assert!(
        first.contains("<Code>RequestLimitExceeded</Code>"),
        "{first}"
    );
    let second = raw(&proxy, &ec2_request(&proxy, "DescribeRegions"))
        .await
        .unwrap();
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
}

#[tokio::test]
async fn status_500_always_exhausts_the_sdks_retries() {
    let (sdk, proxy) = setup(6).await;
    proxy.add_rule(rule(
        "dynamodb",
        "ListTables",
        Trigger::Always,
        Action::Status(500),
    ));
    let err = client!(aws_sdk_dynamodb, &sdk, proxy)
        .list_tables()
        .send()
        .await
        .unwrap_err();
    assert!(matches!(err, SdkError::ServiceError(_)), "{err:?}");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(500));
    assert_eq!(err.code(), Some("InternalServerError"));
    // The standard retry mode makes 3 attempts in all.
    assert_eq!(proxy.count("dynamodb", "ListTables"), 3);

    // A single 503 is retried and the call succeeds.
    proxy.clear_rules();
    proxy.clear_calls();
    proxy.add_rule(rule(
        "sqs",
        "ListQueues",
        Trigger::Nth(1),
        Action::Status(503),
    ));
    client!(aws_sdk_sqs, &sdk, proxy)
        .list_queues()
        .send()
        .await
        .unwrap();
    let calls = proxy.calls();
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![Some(503), Some(200)]
    );
}

#[tokio::test]
async fn reset_after_forward_leaves_the_side_effect_behind() {
    let (sdk, proxy) = setup(7).await;
    let url = queue(&sdk).await;
    proxy.add_rule(rule(
        "sqs",
        "SendMessage",
        Trigger::Always,
        Action::ResetAfterForward,
    ));
    // Without retries: the caller sees a network error, yet the message was sent.
    let err = client!(aws_sdk_sqs, &sdk, proxy, no_retries)
        .send_message()
        .queue_url(&url)
        .message_body("sent-once")
        .send()
        .await
        .unwrap_err();
    println!(
        "reset after forward, no retries: {}",
        aws_smithy_types::error::display::DisplayErrorContext(&err)
    );
    let SdkError::DispatchFailure(failure) = &err else {
        panic!("expected a dispatch failure, got {err:?}");
    };
    assert!(failure.is_io() || failure.is_other(), "{err:?}");
    let c = &proxy.calls()[0];
    assert!(c.forwarded && c.status.is_none(), "{c:?}");
    assert_eq!(drain(&sdk, &url).await, vec!["sent-once".to_string()]);

    // With the SDK's retries (it retries network errors on any operation): the call
    // "succeeds" and the message is in the queue twice.
    proxy.clear_rules();
    proxy.clear_calls();
    proxy.add_rule(rule(
        "sqs",
        "SendMessage",
        Trigger::Nth(1),
        Action::ResetAfterForward,
    ));
    client!(aws_sdk_sqs, &sdk, proxy)
        .send_message()
        .queue_url(&url)
        .message_body("sent-twice")
        .send()
        .await
        .unwrap();
    assert_eq!(proxy.count("sqs", "SendMessage"), 2);
    let got = drain(&sdk, &url).await;
    println!("one reset after forward + SDK retry: {} copies", got.len());
    assert_eq!(
        got,
        vec!["sent-twice".to_string(), "sent-twice".to_string()]
    );
}

#[tokio::test]
async fn reset_before_forward_never_reaches_the_emulator() {
    let (sdk, proxy) = setup(8).await;
    let url = queue(&sdk).await;
    proxy.add_rule(rule(
        "sqs",
        "SendMessage",
        Trigger::Always,
        Action::ResetBeforeForward,
    ));
    let err = client!(aws_sdk_sqs, &sdk, proxy, no_retries)
        .send_message()
        .queue_url(&url)
        .message_body("never")
        .send()
        .await
        .unwrap_err();
    println!(
        "reset before forward, no retries: {}",
        aws_smithy_types::error::display::DisplayErrorContext(&err)
    );
    assert!(matches!(err, SdkError::DispatchFailure(_)), "{err:?}");
    assert!(!proxy.calls()[0].forwarded);
    assert!(drain(&sdk, &url).await.is_empty());

    proxy.clear_rules();
    proxy.clear_calls();
    proxy.add_rule(rule(
        "sqs",
        "SendMessage",
        Trigger::Nth(1),
        Action::ResetBeforeForward,
    ));
    client!(aws_sdk_sqs, &sdk, proxy)
        .send_message()
        .queue_url(&url)
        .message_body("once")
        .send()
        .await
        .unwrap();
    assert_eq!(proxy.count("sqs", "SendMessage"), 2);
    assert_eq!(drain(&sdk, &url).await, vec!["once".to_string()]);

    // On the wire the reset is an RST, not an orderly close.
    proxy.add_rule(rule(
        "ec2",
        "DescribeRegions",
        Trigger::Always,
        Action::ResetBeforeForward,
    ));
    let err = raw(&proxy, &ec2_request(&proxy, "DescribeRegions"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err:?}");
}

#[tokio::test]
async fn delay_slows_the_answer_and_attempt_timeouts_retry() {
    let (sdk, proxy) = setup(9).await;
    proxy.add_rule(rule(
        "dynamodb",
        "ListTables",
        Trigger::Nth(1),
        Action::Delay(Duration::from_millis(400)),
    ));
    let start = Instant::now();
    client!(aws_sdk_dynamodb, &sdk, proxy)
        .list_tables()
        .send()
        .await
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(400));
    assert_eq!(proxy.count("dynamodb", "ListTables"), 1);

    // A delay longer than the per-attempt timeout: the SDK gives up on the attempt and
    // retries it. Delay holds the request back, so the abandoned attempt never reaches the
    // emulator; DelayAnswer forwards first, so it has happened although the caller gave up.
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&sdk)
            .endpoint_url(proxy.url())
            .timeout_config(
                aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_millis(300))
                    .build(),
            )
            .build(),
    );
    for (action, copies) in [
        (Action::Delay(Duration::from_secs(2)), 1),
        (Action::DelayAnswer(Duration::from_secs(2)), 2),
    ] {
        let url = queue(&sdk).await;
        proxy.clear_rules();
        proxy.clear_calls();
        proxy.add_rule(rule("sqs", "SendMessage", Trigger::Nth(1), action.clone()));
        let start = Instant::now();
        sqs.send_message()
            .queue_url(&url)
            .message_body("slow")
            .send()
            .await
            .unwrap();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(proxy.count("sqs", "SendMessage"), 2);
        // Past the delay: whatever the abandoned attempt was going to do, it has done.
        tokio::time::sleep(Duration::from_secs(2).saturating_sub(start.elapsed())).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let first = &proxy.calls()[0];
        assert_eq!((first.fault(), first.status), (Some(&action), None));
        assert_eq!(first.forwarded, copies == 2, "{first:?}");
        assert_eq!(drain(&sdk, &url).await.len(), copies, "{action:?}");
    }
}

/// Sends a command to two new servers of the simulated fleet, through the proxy.
async fn command(sdk: &SdkConfig, proxy: &FaultProxy) -> (String, [String; 2]) {
    let ids = Fleet::global().add(2, &[("ProxyTest", &unique("p"))], Kind::Ec2);
    let out = client!(aws_sdk_ssm, sdk, proxy)
        .send_command()
        .document_name("AWS-RunShellScript")
        .instance_ids(&ids[0])
        .instance_ids(&ids[1])
        .parameters("commands", vec!["true".into()])
        .comment(unique("proxy"))
        .send()
        .await
        .unwrap();
    (
        out.command.unwrap().command_id.unwrap(),
        [ids[0].clone(), ids[1].clone()],
    )
}

#[tokio::test]
async fn rewrite_ssm_reports_failed_timed_out_and_in_progress_invocations() {
    let (sdk, proxy) = setup(10).await;
    let (id, [a, b]) = command(&sdk, &proxy).await;
    let ssm = client!(aws_sdk_ssm, &sdk, proxy);
    let status =
        |inv: &aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput| {
            inv.status().map(|s| s.as_str().to_string())
        };

    // Untouched, the fleet says Success everywhere.
    let inv = ssm
        .get_command_invocation()
        .command_id(&id)
        .instance_id(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(status(&inv).as_deref(), Some("Success"));

    proxy.add_rule(Rule::new(
        "ssm",
        None,
        Trigger::Always,
        Action::RewriteSsm {
            instance: Some(a.clone()),
            status: "Failed".into(),
        },
    ));
    let inv = ssm
        .get_command_invocation()
        .command_id(&id)
        .instance_id(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(status(&inv).as_deref(), Some("Failed"));
    assert_eq!(inv.status_details(), Some("Failed"));
    assert_eq!(inv.response_code(), 1);
    let other = ssm
        .get_command_invocation()
        .command_id(&id)
        .instance_id(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(status(&other).as_deref(), Some("Success"));
    let listed = ssm.list_commands().command_id(&id).send().await.unwrap();
    let cmd = &listed.commands()[0];
    assert_eq!(cmd.status().map(|s| s.as_str()), Some("Failed"));
    assert_eq!(cmd.instance_ids(), [a.clone(), b.clone()]);
    assert_eq!(
        (cmd.target_count(), cmd.completed_count(), cmd.error_count()),
        (2, 2, 1)
    );

    // b still running: the command as a whole is in progress.
    proxy.add_rule(Rule::new(
        "ssm",
        None,
        Trigger::Always,
        Action::RewriteSsm {
            instance: Some(b.clone()),
            status: "InProgress".into(),
        },
    ));
    let cmd = ssm.list_commands().command_id(&id).send().await.unwrap();
    let cmd = &cmd.commands()[0];
    assert_eq!(cmd.status().map(|s| s.as_str()), Some("InProgress"));
    assert_eq!((cmd.completed_count(), cmd.error_count()), (1, 1));

    proxy.clear_rules();
    proxy.add_rule(Rule::new(
        "ssm",
        Some("GetCommandInvocation"),
        Trigger::Always,
        Action::RewriteSsm {
            instance: None,
            status: "TimedOut".into(),
        },
    ));
    let inv = ssm
        .get_command_invocation()
        .command_id(&id)
        .instance_id(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(status(&inv).as_deref(), Some("TimedOut"));
    assert_eq!(inv.status_details(), Some("ExecutionTimedOut"));
}

#[tokio::test]
async fn set_stdout_supplies_the_installed_serial() {
    let (sdk, proxy) = setup(11).await;
    let (id, [a, b]) = command(&sdk, &proxy).await;
    proxy.add_rule(Rule::new(
        "ssm",
        Some("GetCommandInvocation"),
        Trigger::Always,
        Action::SetStdout {
            instance: Some(a.clone()),
            stdout: "CERTFLOW_INSTALLED_SERIAL=ABC\n".into(),
        },
    ));
    let ssm = client!(aws_sdk_ssm, &sdk, proxy);
    let inv = ssm
        .get_command_invocation()
        .command_id(&id)
        .instance_id(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(
        inv.standard_output_content(),
        Some("CERTFLOW_INSTALLED_SERIAL=ABC\n")
    );
    let inv = ssm
        .get_command_invocation()
        .command_id(&id)
        .instance_id(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(inv.standard_output_content(), Some(""));
}

#[tokio::test]
async fn respond_answers_in_the_fleets_place() {
    let (sdk, proxy) = setup(12).await;
    let (id, _) = command(&sdk, &proxy).await;
    proxy.add_rule(rule(
        "ssm",
        "CancelCommand",
        Trigger::Always,
        Action::Respond {
            status: 500,
            body: "{}".into(),
        },
    ));
    let err = client!(aws_sdk_ssm, &sdk, proxy, no_retries)
        .cancel_command()
        .command_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(500));
    let last = proxy.calls().pop().unwrap();
    assert_eq!((last.forwarded, last.status), (false, Some(500)));
    proxy.clear_rules();
    client!(aws_sdk_ssm, &sdk, proxy)
        .cancel_command()
        .command_id(&id)
        .send()
        .await
        .unwrap();
    let last = proxy.calls().pop().unwrap();
    assert_eq!((last.forwarded, last.status), (true, Some(200)));
}

/// Which of `n` ListTables calls were throttled, with a 50 % rule and this seed.
async fn throttle_pattern(sdk: &SdkConfig, seed: u64, n: usize) -> Vec<bool> {
    let proxy = FaultProxy::start(&upstream(), seed).await;
    proxy.add_rule(rule(
        "dynamodb",
        "ListTables",
        Trigger::Probability(0.5),
        Action::Throttle,
    ));
    let ddb = client!(aws_sdk_dynamodb, sdk, proxy, no_retries);
    let mut seen_by_sdk = Vec::new();
    for _ in 0..n {
        seen_by_sdk.push(ddb.list_tables().limit(1).send().await.is_err());
    }
    let injected: Vec<bool> = proxy.calls().iter().map(|c| c.fault().is_some()).collect();
    assert_eq!(injected, seen_by_sdk);
    injected
}

#[tokio::test]
async fn a_seeded_probability_injects_the_same_faults_again() {
    let sdk = certflow_tests::emulator().await;
    let first = throttle_pattern(&sdk, 42, 32).await;
    let again = throttle_pattern(&sdk, 42, 32).await;
    let other = throttle_pattern(&sdk, 43, 32).await;
    assert_eq!(first, again);
    assert_ne!(first, other);
    let hits = first.iter().filter(|x| **x).count();
    assert!((4..=28).contains(&hits), "{hits} of 32 throttled");
}

#[tokio::test]
async fn malformed_requests_get_400_and_the_proxy_carries_on() {
    let (sdk, proxy) = setup(13).await;
    let answer = raw(&proxy, "NOT AN HTTP REQUEST\r\n\r\n").await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    let answer = raw(&proxy, "\u{0}\u{1}\u{2}garbage")
        .await
        .unwrap_or_default();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer:?}"
    );
    // A request with an unknown protocol is forwarded as it is.
    let answer = raw(
        &proxy,
        "GET /nothing-here HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 "), "{answer:?}");
    client!(aws_sdk_dynamodb, &sdk, proxy)
        .list_tables()
        .send()
        .await
        .unwrap();
    assert_eq!(
        seen(&proxy),
        vec![
            ("unknown".to_string(), "GET /nothing-here".to_string()),
            ("dynamodb".to_string(), "ListTables".to_string())
        ]
    );
}

// ---- the simulated SSM fleet ------------------------------------------------------------

use aws_sdk_ssm::types::{InstanceInformationStringFilter, Target};

fn tag_filter(key: &str, value: &str) -> InstanceInformationStringFilter {
    InstanceInformationStringFilter::builder()
        .key(format!("tag:{key}"))
        .values(value)
        .build()
        .unwrap()
}

fn tag_target(key: &str, value: &str) -> Target {
    Target::builder()
        .key(format!("tag:{key}"))
        .values(value)
        .build()
}

#[tokio::test]
async fn fleet_describes_its_servers_in_pages_like_aws() {
    let (sdk, proxy) = setup(20).await;
    let ssm = client!(aws_sdk_ssm, &sdk, proxy, no_retries);
    let fleet = Fleet::global();
    let tag = unique("dii");
    let ec2 = fleet.add(12, &[("Role", &tag)], Kind::Ec2);
    let onprem = fleet.add(1, &[("Role", &tag)], Kind::OnPrem);
    fleet.add(3, &[("Role", &unique("other"))], Kind::Ec2);
    fleet.set_behaviour(&ec2[3], Behaviour::Offline);
    let calls_before = fleet.calls("DescribeInstanceInformation");

    // Default page: 10, in id order, then the rest.
    let first = ssm
        .describe_instance_information()
        .filters(tag_filter("Role", &tag))
        .send()
        .await
        .unwrap();
    let ids = |o: &aws_sdk_ssm::operation::describe_instance_information::DescribeInstanceInformationOutput| {
        o.instance_information_list()
            .iter()
            .map(|i| i.instance_id().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&first), ec2[..10].to_vec());
    let token = first.next_token().expect("a second page").to_string();
    let second = ssm
        .describe_instance_information()
        .filters(tag_filter("Role", &tag))
        .next_token(token)
        .send()
        .await
        .unwrap();
    let mut rest = ec2[10..].to_vec();
    rest.extend(onprem.clone());
    assert_eq!(ids(&second), rest);
    assert_eq!(second.next_token(), None);
    let info = first.instance_information_list();
    assert_eq!(info[0].ping_status().map(|p| p.as_str()), Some("Online"));
    assert_eq!(
        info[3].ping_status().map(|p| p.as_str()),
        Some("ConnectionLost")
    );
    assert_eq!(info[0].platform_type().map(|p| p.as_str()), Some("Linux"));
    assert_eq!(
        info[0].resource_type().map(|p| p.as_str()),
        Some("EC2Instance")
    );
    assert!(info[0].ip_address().is_some() && info[0].computer_name().is_some());
    assert!(info[0].agent_version().is_some() && info[0].last_ping_date_time().is_some());
    let last = second.instance_information_list().last().unwrap();
    assert!(onprem[0].starts_with("mi-"), "{onprem:?}");
    assert_eq!(
        last.resource_type().map(|p| p.as_str()),
        Some("ManagedInstance")
    );

    // MaxResults 5..50; the SDK's paginator walks every page.
    for bad in [4, 51] {
        let e = ssm
            .describe_instance_information()
            .max_results(bad)
            .send()
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("ValidationException"), "{bad}");
    }
    let pages: Vec<_> = ssm
        .describe_instance_information()
        .filters(tag_filter("Role", &tag))
        .max_results(5)
        .into_paginator()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    assert_eq!(pages.len(), 3);
    let offline = ssm
        .describe_instance_information()
        .filters(tag_filter("Role", &tag))
        .filters(
            InstanceInformationStringFilter::builder()
                .key("PingStatus")
                .values("ConnectionLost")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(ids(&offline), vec![ec2[3].clone()]);
    assert_eq!(
        fleet.calls("DescribeInstanceInformation") - calls_before,
        1 + 1 + 2 + 3 + 1
    );
    assert_eq!(proxy.count("ssm", "DescribeInstanceInformation"), 8);
}

#[tokio::test]
async fn fleet_send_command_resolves_targets_and_refuses_what_aws_refuses() {
    let (sdk, proxy) = setup(21).await;
    let ssm = client!(aws_sdk_ssm, &sdk, proxy, no_retries);
    let fleet = Fleet::global();
    let tag = unique("send");
    let web = fleet.add(3, &[("Role", &tag)], Kind::Ec2);
    let other = fleet.add(1, &[("Role", &unique("not-me"))], Kind::Ec2);

    // 51 instance ids: AWS's validation error, before anything else.
    let many: Vec<String> = (0..51).map(|i| format!("i-{i:017x}")).collect();
    let e = ssm
        .send_command()
        .document_name("AWS-RunShellScript")
        .set_instance_ids(Some(many))
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ValidationException"));
    assert!(
        e.message()
            .unwrap_or_default()
            .contains("less than or equal to 50"),
        "{e:?}"
    );
    let e = ssm
        .send_command()
        .document_name("AWS-RunShellScript")
        .instance_ids("i-00000000000000bad")
        .send()
        .await
        .unwrap_err();
    assert!(
        e.as_service_error().unwrap().is_invalid_instance_id(),
        "{e:?}"
    );

    // Tag targets: resolved now, no InstanceIds on the command (as on AWS).
    let sent = ssm
        .send_command()
        .document_name("AWS-RunShellScript")
        .targets(tag_target("Role", &tag))
        .parameters("commands", vec!["true".into()])
        .comment("fleet test")
        .max_concurrency("2")
        .max_errors("1")
        .timeout_seconds(600)
        .send()
        .await
        .unwrap();
    let cmd = sent.command().unwrap();
    let id = cmd.command_id().unwrap().to_string();
    assert_eq!(uuid::Uuid::parse_str(&id).map(|_| ()), Ok(()));
    assert!(cmd.instance_ids().is_empty(), "{cmd:?}");
    assert_eq!(cmd.targets().len(), 1);
    assert_eq!(cmd.status().map(|s| s.as_str()), Some("Pending"));
    assert_eq!(cmd.comment(), Some("fleet test"));
    assert_eq!(
        (cmd.max_concurrency(), cmd.max_errors()),
        (Some("2"), Some("1"))
    );
    assert!(cmd.requested_date_time().is_some());
    assert_eq!(
        cmd.parameters().unwrap()["commands"],
        vec!["true".to_string()]
    );

    let listed = ssm.list_commands().command_id(&id).send().await.unwrap();
    let c = &listed.commands()[0];
    assert_eq!(c.status().map(|s| s.as_str()), Some("Success"));
    assert_eq!(
        (c.target_count(), c.completed_count(), c.error_count()),
        (3, 3, 0)
    );
    for s in &web {
        let got = fleet.received(s);
        assert_eq!(got.len(), 1, "{s}");
        assert_eq!(got[0].command_id, id);
        assert_eq!(got[0].parameters["commands"], vec!["true".to_string()]);
    }
    assert!(
        fleet.received(&other[0]).is_empty(),
        "a server of another tag received it"
    );
    let summaries = fleet.commands_for_tag("Role", &tag);
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].instance_ids, web);

    // No server matches: a command with no targets, finished.
    let none = ssm
        .send_command()
        .document_name("AWS-RunShellScript")
        .targets(tag_target("Role", &unique("nobody")))
        .send()
        .await
        .unwrap();
    let none_id = none.command().unwrap().command_id().unwrap();
    let listed = ssm
        .list_commands()
        .command_id(none_id)
        .send()
        .await
        .unwrap();
    let c = &listed.commands()[0];
    assert_eq!(
        (c.status().map(|s| s.as_str()), c.target_count()),
        (Some("Success"), 0)
    );

    // Unknown ids and pairs.
    let e = ssm
        .list_commands()
        .command_id(uuid::Uuid::new_v4().to_string())
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("InvalidCommandId"));
    let e = ssm
        .get_command_invocation()
        .command_id(&id)
        .instance_id(&other[0])
        .send()
        .await
        .unwrap_err();
    assert!(
        e.as_service_error().unwrap().is_invocation_does_not_exist(),
        "{e:?}"
    );

    // A malformed body is a 400 ValidationException / SerializationException, not a panic.
    let raw_body = r#"{"DocumentName": 5}"#;
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: AmazonSSM.SendCommand\r\n\
         Content-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{raw_body}",
        raw_body.len()
    );
    let answer = raw(&proxy, &request).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("ValidationException"), "{answer}");
    let request = "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: AmazonSSM.ListCommands\r\n\
         Content-Type: application/x-amz-json-1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\n[1]";
    let answer = raw(&proxy, request).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

/// A secret like the export step's, with this serial; returns its name.
async fn serial_secret(sdk: &SdkConfig, serial: &str) -> String {
    let name = unique("fleet-secret");
    aws_sdk_secretsmanager::Client::new(sdk)
        .create_secret()
        .name(&name)
        .secret_string(serde_json::json!({"serial": serial, "certificate": "x"}).to_string())
        .send()
        .await
        .unwrap();
    name
}

#[tokio::test]
async fn fleet_servers_behave_and_print_what_the_install_document_prints() {
    let (sdk, proxy) = setup(22).await;
    let ssm = client!(aws_sdk_ssm, &sdk, proxy, no_retries);
    let fleet = Fleet::global();
    let tag = unique("behave");
    let ids = fleet.add(5, &[("Tier", &tag)], Kind::Ec2);
    let [ok, fail, old, silent, offline] = [0, 1, 2, 3, 4].map(|i| ids[i].clone());
    fleet.set_behaviour(
        &fail,
        Behaviour::Fail {
            stderr: "certflow-install: error: disk full\nmore".into(),
        },
    );
    fleet.set_behaviour(&old, Behaviour::ServesOld);
    fleet.set_installed_serial(&old, Some("0B0B"));
    fleet.set_behaviour(&silent, Behaviour::Silent);
    fleet.set_behaviour(&offline, Behaviour::Offline);
    fleet.set_latency(&offline, Duration::from_millis(600));
    let secret = serial_secret(&sdk, "0a:1b:2c").await;

    let sent = ssm
        .send_command()
        .document_name("Install-ACMCertificate-test")
        .targets(tag_target("Tier", &tag))
        .parameters("CertName", vec!["web".into()])
        .parameters("SecretId", vec![secret.clone()])
        .parameters("Region", vec!["us-east-1".into()])
        .parameters("ReloadService", vec!["nginx".into()])
        .parameters("VerifyPort", vec!["8443".into()])
        .parameters("VerifyName", vec!["www.example.com".into()])
        .max_concurrency("100%")
        .max_errors("100%")
        .send()
        .await
        .unwrap();
    let id = sent.command().unwrap().command_id().unwrap().to_string();
    let get = |instance: &str| {
        ssm.get_command_invocation()
            .command_id(&id)
            .instance_id(instance)
            .send()
    };
    let status =
        |o: &aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput| {
            (
                o.status()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                o.status_details().unwrap_or_default().to_string(),
            )
        };

    let inv = get(&ok).await.unwrap();
    assert_eq!(status(&inv), ("Success".into(), "Success".into()));
    assert_eq!(inv.response_code(), 0);
    let out = inv.standard_output_content().unwrap();
    assert!(out.contains("CERTFLOW_INSTALLED_SERIAL=0A1B2C\n"), "{out}");
    assert!(out.contains("CERTFLOW_SERVED_SERIAL=0A1B2C\n"), "{out}");
    assert!(out.contains("certflow-install: reloaded nginx"), "{out}");
    assert_eq!(fleet.installed_serial(&ok).as_deref(), Some("0A1B2C"));

    let inv = get(&fail).await.unwrap();
    assert_eq!(status(&inv), ("Failed".into(), "Failed".into()));
    assert_eq!(inv.response_code(), 1);
    assert_eq!(
        inv.standard_error_content(),
        Some("certflow-install: error: disk full\nmore\n")
    );
    assert_eq!(fleet.installed_serial(&fail), None);

    let inv = get(&old).await.unwrap();
    assert_eq!(status(&inv).0, "Failed");
    assert_eq!(
        inv.standard_output_content(),
        Some("CERTFLOW_SERVED_SERIAL=0B0B\n")
    );
    let first = inv
        .standard_error_content()
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        first,
        "certflow-install: verify failed: 127.0.0.1:8443 (SNI www.example.com) serves serial \
         0B0B, not the installed 0A1B2C; previous certificate restored and nginx reloaded"
    );
    assert_eq!(fleet.installed_serial(&old).as_deref(), Some("0B0B"));

    let inv = get(&silent).await.unwrap();
    assert_eq!(status(&inv).0, "InProgress");
    let inv = get(&offline).await.unwrap();
    assert_eq!(status(&inv).0, "Pending");
    let listed = ssm.list_commands().command_id(&id).send().await.unwrap();
    let c = &listed.commands()[0];
    assert_eq!(c.status().map(|s| s.as_str()), Some("InProgress"));
    assert_eq!(
        (c.target_count(), c.completed_count(), c.error_count()),
        (5, 3, 2)
    );

    tokio::time::sleep(Duration::from_millis(700)).await;
    let inv = get(&offline).await.unwrap();
    assert_eq!(status(&inv), ("TimedOut".into(), "DeliveryTimedOut".into()));

    // Plugin output: stdout, then the error marker and stderr.
    let invs = ssm
        .list_command_invocations()
        .command_id(&id)
        .details(true)
        .send()
        .await
        .unwrap();
    let by_id: std::collections::HashMap<&str, &aws_sdk_ssm::types::CommandInvocation> = invs
        .command_invocations()
        .iter()
        .map(|i| (i.instance_id().unwrap(), i))
        .collect();
    assert_eq!(by_id.len(), 5);
    let output = |i: &str| {
        by_id[i].command_plugins()[0]
            .output()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        output(&ok).ends_with("CERTFLOW_SERVED_SERIAL=0A1B2C\n"),
        "{}",
        output(&ok)
    );
    assert_eq!(
        output(&fail),
        "----------ERROR-------\ncertflow-install: error: disk full\nmore\n"
    );
    assert!(
        output(&old).starts_with(
            "CERTFLOW_SERVED_SERIAL=0B0B\n----------ERROR-------\ncertflow-install: verify failed"
        ),
        "{}",
        output(&old)
    );

    // Cancel: the silent server's invocation ends Cancelled, and so does the command.
    ssm.cancel_command().command_id(&id).send().await.unwrap();
    let inv = get(&silent).await.unwrap();
    assert_eq!(status(&inv).0, "Cancelled");
    let listed = ssm.list_commands().command_id(&id).send().await.unwrap();
    let c = &listed.commands()[0];
    assert_eq!(c.status().map(|s| s.as_str()), Some("Cancelled"));
    assert_eq!(c.delivery_timed_out_count(), 1);

    // A secret that cannot be read fails the install, saying so.
    let lone = fleet.add(1, &[("Tier", &unique("lone"))], Kind::Ec2);
    let sent = ssm
        .send_command()
        .document_name("Install-ACMCertificate-test")
        .instance_ids(&lone[0])
        .parameters("CertName", vec!["web".into()])
        .parameters("SecretId", vec![unique("no-such-secret")])
        .send()
        .await
        .unwrap();
    let cid = sent.command().unwrap().command_id().unwrap();
    let inv = ssm
        .get_command_invocation()
        .command_id(cid)
        .instance_id(&lone[0])
        .send()
        .await
        .unwrap();
    assert_eq!(status(&inv).0, "Failed");
    let err = inv.standard_error_content().unwrap_or_default();
    assert!(
        err.contains("cannot read secret") && err.contains("ResourceNotFound"),
        "{err}"
    );
}

#[tokio::test]
async fn fleet_latency_concurrency_and_max_errors() {
    let (sdk, proxy) = setup(23).await;
    let ssm = client!(aws_sdk_ssm, &sdk, proxy, no_retries);
    let fleet = Fleet::global();
    let tag = unique("lanes");
    let ids = fleet.add(4, &[("Tier", &tag)], Kind::Ec2);
    assert_eq!(
        fleet.set_latency_tagged("Tier", &tag, Duration::from_millis(400)),
        4
    );
    fleet.set_behaviour(
        &ids[0],
        Behaviour::Fail {
            stderr: "canary broke".into(),
        },
    );
    let secret = serial_secret(&sdk, "0a:1b").await;
    // One at a time, no error allowed: the canary fails, the rest never run.
    let sent = ssm
        .send_command()
        .document_name("Install-ACMCertificate-test")
        .targets(tag_target("Tier", &tag))
        .parameters("SecretId", vec![secret])
        .max_concurrency("1")
        .max_errors("0")
        .send()
        .await
        .unwrap();
    let id = sent.command().unwrap().command_id().unwrap().to_string();
    let statuses = || async {
        let invs = ssm
            .list_command_invocations()
            .command_id(&id)
            .send()
            .await
            .unwrap();
        invs.command_invocations()
            .iter()
            .map(|i| i.status().unwrap().as_str().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        statuses().await,
        ["InProgress", "Pending", "Pending", "Pending"]
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        statuses().await,
        ["Failed", "Cancelled", "Cancelled", "Cancelled"]
    );
    let listed = ssm.list_commands().command_id(&id).send().await.unwrap();
    assert_eq!(
        listed.commands()[0].status().map(|s| s.as_str()),
        Some("Failed")
    );
    for s in &ids[1..] {
        assert_eq!(fleet.installed_serial(s), None);
    }
}

#[tokio::test]
async fn fleet_pages_invocations_and_commands() {
    let (sdk, proxy) = setup(24).await;
    let ssm = client!(aws_sdk_ssm, &sdk, proxy, no_retries);
    let fleet = Fleet::global();
    let tag = unique("pages");
    let ids = fleet.add(60, &[("Tier", &tag)], Kind::Ec2);
    let doc = unique("PagedDoc");
    let mut sent = Vec::new();
    for _ in 0..3 {
        let out = ssm
            .send_command()
            .document_name(&doc)
            .targets(tag_target("Tier", &tag))
            .send()
            .await
            .unwrap();
        sent.push(out.command().unwrap().command_id().unwrap().to_string());
    }
    let first = ssm
        .list_command_invocations()
        .command_id(&sent[0])
        .send()
        .await
        .unwrap();
    assert_eq!(first.command_invocations().len(), 50);
    assert!(first.command_invocations()[0].command_plugins().is_empty());
    let second = ssm
        .list_command_invocations()
        .command_id(&sent[0])
        .next_token(first.next_token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(second.next_token(), None);
    let listed: Vec<String> = first
        .command_invocations()
        .iter()
        .chain(second.command_invocations())
        .map(|i| i.instance_id().unwrap().to_string())
        .collect();
    assert_eq!(listed, ids);
    let e = ssm
        .list_command_invocations()
        .command_id(&sent[0])
        .max_results(51)
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ValidationException"));

    // ListCommands by document, newest first, a page at a time.
    let filter = aws_sdk_ssm::types::CommandFilter::builder()
        .key(aws_sdk_ssm::types::CommandFilterKey::DocumentName)
        .value(&doc)
        .build()
        .unwrap();
    let mut token = None;
    let mut seen = Vec::new();
    loop {
        let page = ssm
            .list_commands()
            .filters(filter.clone())
            .max_results(2)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        seen.extend(
            page.commands()
                .iter()
                .map(|c| c.command_id().unwrap().to_string()),
        );
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    sent.reverse();
    assert_eq!(seen, sent);
    assert_eq!(fleet.received(&ids[59]).len(), 3);
}

#[tokio::test]
async fn rules_still_apply_in_front_of_the_fleet() {
    let (sdk, proxy) = setup(25).await;
    let fleet = Fleet::global();
    let tag = unique("rules");
    let ids = fleet.add(2, &[("Tier", &tag)], Kind::Ec2);
    proxy.add_rule(rule(
        "ssm",
        "SendCommand",
        Trigger::Nth(1),
        Action::Throttle,
    ));
    let sent = client!(aws_sdk_ssm, &sdk, proxy)
        .send_command()
        .document_name("AWS-RunShellScript")
        .targets(tag_target("Tier", &tag))
        .send()
        .await
        .unwrap();
    // Throttled once (never reached the fleet), then answered by it.
    let sends: Vec<(bool, Option<u16>)> = proxy
        .calls()
        .iter()
        .filter(|c| c.operation == "SendCommand")
        .map(|c| (c.forwarded, c.status))
        .collect();
    assert_eq!(sends, [(false, Some(400)), (true, Some(200))]);
    assert_eq!(fleet.received(&ids[0]).len(), 1);
    let id = sent.command().unwrap().command_id().unwrap().to_string();
    proxy.add_rule(Rule::new(
        "ssm",
        None,
        Trigger::Always,
        Action::RewriteSsm {
            instance: Some(ids[1].clone()),
            status: "TimedOut".into(),
        },
    ));
    let ssm = client!(aws_sdk_ssm, &sdk, proxy);
    let c = ssm.list_commands().command_id(&id).send().await.unwrap();
    let c = &c.commands()[0];
    assert_eq!(c.status().map(|s| s.as_str()), Some("TimedOut"));
    assert_eq!((c.completed_count(), c.error_count()), (2, 1));
    let invs = ssm
        .list_command_invocations()
        .command_id(&id)
        .details(true)
        .send()
        .await
        .unwrap();
    let st: Vec<&str> = invs
        .command_invocations()
        .iter()
        .map(|i| i.status().unwrap().as_str())
        .collect();
    assert_eq!(st, ["Success", "TimedOut"]);
}

#[tokio::test]
async fn replay_answers_a_repeated_read_with_the_first_answer_without_forwarding_it() {
    let (sdk, proxy) = setup(9).await;
    let table = table(&sdk).await;
    let ddb = client!(aws_sdk_dynamodb, &sdk, proxy);
    let put = |v: &'static str| {
        ddb.put_item()
            .table_name(&table)
            .item("pk", AttributeValue::S("a".into()))
            .item("v", AttributeValue::S(v.into()))
            .send()
    };
    put("first").await.unwrap();
    proxy.add_rule(rule("dynamodb", "GetItem", Trigger::Always, Action::Replay));
    let get = || {
        ddb.get_item()
            .table_name(&table)
            .key("pk", AttributeValue::S("a".into()))
            .send()
    };
    let v = |out: aws_sdk_dynamodb::operation::get_item::GetItemOutput| {
        out.item()
            .and_then(|i| i.get("v"))
            .and_then(|v| v.as_s().ok())
            .cloned()
    };
    assert_eq!(v(get().await.unwrap()).as_deref(), Some("first"));
    // The row changes; the replayed read does not see it, and never reaches the emulator.
    put("second").await.unwrap();
    assert_eq!(v(get().await.unwrap()).as_deref(), Some("first"));
    let gets: Vec<bool> = proxy
        .calls()
        .iter()
        .filter(|c| c.operation == "GetItem")
        .map(|c| c.forwarded)
        .collect();
    assert_eq!(gets, [true, false], "forwarded once, then replayed");
    // Another request (another key) is forwarded, and answered by the emulator.
    let other = ddb
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("b".into()))
        .send()
        .await
        .unwrap();
    assert!(other.item().is_none());
}
