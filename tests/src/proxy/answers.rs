//! The answers the proxy gives in the service's place: each protocol's own error shape
//! (JSON `__type`, EC2 `<Response><Errors>`, query `<ErrorResponse>`, REST headers), for
//! [`Action::Throttle`](super::Action::Throttle), [`Action::Status`](super::Action::Status)
//! and [`Action::Respond`](super::Action::Respond).

use bytes::Bytes;
use http_body_util::Full;
use hyper::http::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use super::route::Protocol;

/// What the proxy sends back to its client.
pub(super) type Answer = Response<Full<Bytes>>;

/// A fresh request id, for the `x-amzn-requestid` header and XML error bodies.
pub(super) fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An answer with this status, content type, body and extra headers (and a request id).
pub(super) fn respond(
    status: StatusCode,
    content_type: &str,
    body: Bytes,
    extra: &[(&str, String)],
) -> Answer {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert("content-type", v);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        headers.insert("x-amzn-requestid", v);
    }
    for (k, v) in extra {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(*k), HeaderValue::from_str(v)) {
            headers.insert(k, v);
        }
    }
    res
}

/// A plain-text answer (the proxy's own trouble, not a service's error).
pub(super) fn plain(status: StatusCode, text: String) -> Answer {
    respond(status, "text/plain", text.into(), &[])
}

fn json_error(status: StatusCode, ct: &str, typ: &str, message: &str) -> Answer {
    let body = serde_json::json!({ "__type": typ, "message": message }).to_string();
    respond(status, ct, body.into(), &[])
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn ec2_error(status: StatusCode, code: &str, message: &str) -> Answer {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
         <Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>",
        xml_escape(message),
        request_id()
    );
    respond(status, "text/xml;charset=UTF-8", body.into(), &[])
}

fn query_error(status: StatusCode, kind: &str, code: &str, message: &str) -> Answer {
    let body = format!(
        "<?xml version=\"1.0\"?>\n<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code>\
         <Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
        xml_escape(message),
        request_id()
    );
    respond(status, "text/xml", body.into(), &[])
}

/// That service's throttling error.
pub(super) fn throttle(service: &str, proto: &Protocol) -> Answer {
    let bad = StatusCode::BAD_REQUEST;
    match proto {
        Protocol::Json(ct) => match service {
            "dynamodb" => json_error(
                bad,
                ct,
                "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded. \
                 Consider increasing your provisioning level with the UpdateTable API.",
            ),
            // SQS speaks JSON but is query-compatible: the SDK takes the error code from
            // `x-amzn-query-error` when present.
            "sqs" => {
                let body = serde_json::json!({
                    "__type": "com.amazonaws.sqs#RequestThrottled",
                    "message": "Rate exceeded",
                })
                .to_string();
                respond(
                    bad,
                    ct,
                    body.into(),
                    &[("x-amzn-query-error", "RequestThrottled;Sender".into())],
                )
            }
            _ => json_error(bad, ct, "ThrottlingException", "Rate exceeded"),
        },
        Protocol::Ec2 => ec2_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "RequestLimitExceeded",
            "Request limit exceeded.",
        ),
        Protocol::Query => query_error(bad, "Sender", "Throttling", "Rate exceeded"),
        Protocol::Other => respond(
            StatusCode::TOO_MANY_REQUESTS,
            "application/json",
            serde_json::json!({ "message": "Rate exceeded" })
                .to_string()
                .into(),
            &[("x-amzn-errortype", "ThrottlingException".into())],
        ),
    }
}

/// A server-side error with this status.
pub(super) fn status_error(code: u16, service: &str, proto: &Protocol) -> Answer {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (json_type, ec2_code, message) = match status.as_u16() {
        500 => (
            "InternalFailure",
            "InternalError",
            "An internal error occurred.",
        ),
        502 => ("BadGateway", "InternalError", "Bad gateway."),
        503 => ("ServiceUnavailable", "Unavailable", "Service unavailable."),
        504 => ("GatewayTimeout", "InternalError", "Gateway timeout."),
        _ => ("InternalFailure", "InternalError", "Injected error."),
    };
    let message = format!("{message} (fault proxy)");
    match proto {
        Protocol::Json(ct) => match service {
            "dynamodb" => {
                let typ = if status.as_u16() == 500 {
                    "com.amazonaws.dynamodb.v20120810#InternalServerError".to_string()
                } else {
                    format!("com.amazonaws.dynamodb.v20120810#{json_type}")
                };
                json_error(status, ct, &typ, &message)
            }
            "sqs" => {
                let body = serde_json::json!({
                    "__type": format!("com.amazonaws.sqs#{json_type}"),
                    "message": message,
                })
                .to_string();
                respond(
                    status,
                    ct,
                    body.into(),
                    &[("x-amzn-query-error", format!("{json_type};Receiver"))],
                )
            }
            _ => json_error(status, ct, json_type, &message),
        },
        Protocol::Ec2 => ec2_error(status, ec2_code, &message),
        Protocol::Query => query_error(status, "Receiver", json_type, &message),
        Protocol::Other => respond(
            status,
            "application/json",
            serde_json::json!({ "message": message }).to_string().into(),
            &[("x-amzn-errortype", json_type.to_string())],
        ),
    }
}
