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

/// Sends a command to two (made-up) instances straight to the emulator.
async fn command(sdk: &SdkConfig) -> (String, [String; 2]) {
    let ids = [unique("i-a"), unique("i-b")];
    let out = aws_sdk_ssm::Client::new(sdk)
        .send_command()
        .document_name("AWS-RunShellScript")
        .instance_ids(&ids[0])
        .instance_ids(&ids[1])
        .parameters("commands", vec!["true".into()])
        .comment(unique("proxy"))
        .send()
        .await
        .unwrap();
    (out.command.unwrap().command_id.unwrap(), ids)
}

#[tokio::test]
async fn rewrite_ssm_reports_failed_timed_out_and_in_progress_invocations() {
    let (sdk, proxy) = setup(10).await;
    let (id, [a, b]) = command(&sdk).await;
    let ssm = client!(aws_sdk_ssm, &sdk, proxy);
    let status =
        |inv: &aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput| {
            inv.status().map(|s| s.as_str().to_string())
        };

    // Untouched, the emulator says Success everywhere.
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
    // The emulator adds every EC2 instance it knows to a command without targets, so
    // count from what it lists.
    let n = cmd.instance_ids().len() as i32;
    assert!(n >= 2 && cmd.instance_ids().contains(&a), "{cmd:?}");
    assert_eq!(
        (cmd.target_count(), cmd.completed_count(), cmd.error_count()),
        (n, n, 1)
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
    assert_eq!((cmd.completed_count(), cmd.error_count()), (n - 1, 1));

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
    let (id, [a, b]) = command(&sdk).await;
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
async fn respond_answers_cancel_command_which_the_emulator_cannot() {
    let (sdk, proxy) = setup(12).await;
    let (id, _) = command(&sdk).await;
    let err = client!(aws_sdk_ssm, &sdk, proxy, no_retries)
        .cancel_command()
        .command_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(500));
    proxy.add_rule(rule(
        "ssm",
        "CancelCommand",
        Trigger::Always,
        Action::Respond {
            status: 200,
            body: "{}".into(),
        },
    ));
    client!(aws_sdk_ssm, &sdk, proxy)
        .cancel_command()
        .command_id(&id)
        .send()
        .await
        .unwrap();
    let last = proxy.calls().pop().unwrap();
    assert_eq!((last.forwarded, last.status), (false, Some(200)));
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
