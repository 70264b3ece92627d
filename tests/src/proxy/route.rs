//! Recognising a request: which service and operation it calls, and which protocol that
//! service speaks (for shaping the errors the proxy answers in its place).
//!
//! JSON-protocol services name the operation in `X-Amz-Target`; query-protocol services
//! (EC2, STS, IAM) send `Action=…` in a form body or the query string. The service is the
//! SigV4 credential scope's, else derived from the target prefix. Anything else (REST
//! protocols, the emulator's own `/moto-api`) is recorded as operation `"<METHOD> <path>"`.

use hyper::http::request::Parts;
use hyper::http::HeaderMap;

/// The service and operation of a request.
pub(super) fn classify(parts: &Parts, body: &[u8]) -> (String, String) {
    let scope = credential_scope(parts);
    if let Some(target) = header(&parts.headers, "x-amz-target") {
        let (prefix, op) = target.split_once('.').unwrap_or(("", target));
        let service = scope.unwrap_or_else(|| service_from_target(prefix));
        return (service, op.to_string());
    }
    let action = parts
        .uri
        .query()
        .and_then(|q| form_param(q.as_bytes(), "Action"))
        .or_else(|| {
            let form = header(&parts.headers, "content-type")
                .is_some_and(|c| c.contains("x-www-form-urlencoded"));
            if form {
                form_param(body, "Action")
            } else {
                None
            }
        });
    if let Some(action) = action {
        return (scope.unwrap_or_else(|| "unknown".into()), action);
    }
    let path = parts.uri.path();
    let service = scope.unwrap_or_else(|| {
        if path.starts_with("/moto-api") {
            "moto-api".into()
        } else {
            "unknown".into()
        }
    });
    (service, format!("{} {path}", parts.method))
}

/// A header's value, when it is text.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The service of the SigV4 credential scope (`AKID/date/region/<service>/aws4_request`),
/// from the `Authorization` header or a presigned URL's `X-Amz-Credential`.
fn credential_scope(parts: &Parts) -> Option<String> {
    let credential = match header(&parts.headers, "authorization") {
        Some(auth) => {
            let start = auth.find("Credential=")? + "Credential=".len();
            let rest = &auth[start..];
            rest[..rest.find([',', ' ']).unwrap_or(rest.len())].to_string()
        }
        None => form_param(parts.uri.query()?.as_bytes(), "X-Amz-Credential")?,
    };
    let fields: Vec<&str> = credential.split('/').collect();
    match fields.as_slice() {
        [.., service, "aws4_request"] if fields.len() >= 5 && !service.is_empty() => {
            Some(service.to_ascii_lowercase())
        }
        _ => None,
    }
}

fn service_from_target(prefix: &str) -> String {
    let known = [
        ("DynamoDB_", "dynamodb"),
        ("DynamoDBStreams_", "dynamodb"),
        ("AmazonSSM", "ssm"),
        ("CertificateManager", "acm"),
        ("secretsmanager", "secretsmanager"),
        ("AmazonSQS", "sqs"),
        ("AWSEvents", "events"),
        ("TrentService", "kms"),
        ("AmazonEC2ContainerServiceV", "ecs"),
        ("Logs_", "logs"),
    ];
    known
        .iter()
        .find(|(p, _)| prefix.starts_with(p))
        .map_or_else(|| prefix.to_ascii_lowercase(), |(_, s)| (*s).to_string())
}

/// The (percent-decoded) value of `key` in a `k=v&k=v` form.
fn form_param(form: &[u8], key: &str) -> Option<String> {
    form.split(|b| *b == b'&').find_map(|pair| {
        let mut kv = pair.splitn(2, |b| *b == b'=');
        let k = percent_decode(kv.next()?);
        (k == key).then(|| percent_decode(kv.next().unwrap_or_default()))
    })
}

fn percent_decode(s: &[u8]) -> String {
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => match (hex(s[i + 1]), hex(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How the service speaks, for shaping error answers.
pub(super) enum Protocol {
    /// awsJson 1.0/1.1 (`X-Amz-Target`), with the request's content type.
    Json(String),
    /// EC2's query dialect (`<Response><Errors>…`).
    Ec2,
    /// awsQuery (`<ErrorResponse>…`).
    Query,
    /// REST protocols and anything else.
    Other,
}

impl Protocol {
    /// The protocol of a request to `service`.
    pub(super) fn of(parts: &Parts, service: &str) -> Protocol {
        if parts.headers.contains_key("x-amz-target") {
            let ct = header(&parts.headers, "content-type")
                .filter(|c| c.starts_with("application/x-amz-json"))
                .unwrap_or("application/x-amz-json-1.1");
            return Protocol::Json(ct.to_string());
        }
        let query_action = parts
            .uri
            .query()
            .is_some_and(|q| form_param(q.as_bytes(), "Action").is_some());
        let form = header(&parts.headers, "content-type")
            .is_some_and(|c| c.contains("x-www-form-urlencoded"));
        match (service, form || query_action) {
            ("ec2", true) => Protocol::Ec2,
            (_, true) => Protocol::Query,
            _ => Protocol::Other,
        }
    }

    /// The content type of an error answer in this protocol.
    pub(super) fn error_content_type(&self) -> &str {
        match self {
            Protocol::Json(ct) => ct,
            Protocol::Ec2 | Protocol::Query => "text/xml",
            Protocol::Other => "application/json",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Request;

    fn parts(req: Request<()>) -> Parts {
        req.into_parts().0
    }

    #[test]
    fn recognises_json_query_and_rest_calls() {
        let auth = "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/ssm/aws4_request, \
                    SignedHeaders=host, Signature=abc";
        let p = parts(
            Request::post("/")
                .header("x-amz-target", "AmazonSSM.SendCommand")
                .header("authorization", auth)
                .body(())
                .unwrap(),
        );
        assert_eq!(classify(&p, b"{}"), ("ssm".into(), "SendCommand".into()));
        let p = parts(
            Request::post("/")
                .header("x-amz-target", "DynamoDB_20120810.PutItem")
                .body(())
                .unwrap(),
        );
        assert_eq!(classify(&p, b"{}"), ("dynamodb".into(), "PutItem".into()));
        let p = parts(
            Request::post("/")
                .header(
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                )
                .header("authorization", auth.replace("/ssm/", "/ec2/").as_str())
                .body(())
                .unwrap(),
        );
        assert_eq!(
            classify(&p, b"Version=2016-11-15&Action=DescribeInstances"),
            ("ec2".into(), "DescribeInstances".into())
        );
        let p = parts(Request::post("/moto-api/reset").body(()).unwrap());
        assert_eq!(
            classify(&p, b""),
            ("moto-api".into(), "POST /moto-api/reset".into())
        );
    }

    #[test]
    fn odd_input_does_not_panic() {
        assert_eq!(percent_decode(b"a%2"), "a%2");
        assert_eq!(percent_decode(b"%"), "%");
        assert_eq!(percent_decode(b"%zz%41+b"), "%zzA b");
        assert_eq!(form_param(b"=&&Action", "Action"), Some(String::new()));
        let p = parts(
            Request::post("/")
                .header("authorization", "Credential=/")
                .header("x-amz-target", "")
                .body(())
                .unwrap(),
        );
        assert_eq!(classify(&p, b""), (String::new(), String::new()));
    }
}
