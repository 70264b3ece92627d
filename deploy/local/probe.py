#!/usr/bin/env python3
"""Capability probe for the local AWS emulator (moto server).

Exercises the DynamoDB and SQS features certflow relies on and prints what
the emulator actually does. The findings are written up in
docs/emulator-notes.md.

Usage (from the repo root):
    deploy/local/emulator.sh start
    eval "$(deploy/local/emulator.sh env)"
    .venv/bin/python deploy/local/probe.py
    deploy/local/emulator.sh stop

Uses AWS_ENDPOINT_URL from the environment; every resource name gets a
random suffix, so it can be run repeatedly against the same server.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
import uuid

import boto3
from botocore.exceptions import ClientError

ENDPOINT = os.environ.get("AWS_ENDPOINT_URL")
if not ENDPOINT:
    sys.exit("AWS_ENDPOINT_URL not set: eval \"$(deploy/local/emulator.sh env)\" first")
REGION = os.environ.get("AWS_REGION", "us-east-1")
SUFFIX = uuid.uuid4().hex[:8]

session = boto3.session.Session(
    aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
    aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
    region_name=REGION,
)
ddb = session.client("dynamodb", endpoint_url=ENDPOINT)
sqs = session.client("sqs", endpoint_url=ENDPOINT)

# Capture the raw HTTP body of the last DynamoDB response, so error bodies can
# be shown exactly as the emulator sent them (not as botocore parsed them).
LAST_RAW: dict[str, bytes] = {}


def _capture(response_dict=None, **_kwargs):
    if response_dict is not None:
        LAST_RAW["body"] = response_dict.get("body", b"")


ddb.meta.events.register("before-parse.dynamodb.*", _capture)

RESULTS: list[tuple[str, str, object]] = []


def record(section: str, name: str, value: object) -> None:
    RESULTS.append((section, name, value))
    print(f"[{section}] {name}: {json.dumps(value, default=str)}", flush=True)


def raw_body() -> str:
    return LAST_RAW.get("body", b"").decode("utf-8", "replace")


# --------------------------------------------------------------- DynamoDB ---


def probe_dynamodb() -> None:
    s = "ddb"
    table = f"probe-jobs-{SUFFIX}"
    ddb.create_table(
        TableName=table,
        AttributeDefinitions=[
            {"AttributeName": "JobId", "AttributeType": "S"},
            {"AttributeName": "Item", "AttributeType": "S"},
            {"AttributeName": "Status", "AttributeType": "S"},
            {"AttributeName": "UpdatedAt", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "JobId", "KeyType": "HASH"},
            {"AttributeName": "Item", "KeyType": "RANGE"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "ByStatus",
                "KeySchema": [
                    {"AttributeName": "Status", "KeyType": "HASH"},
                    {"AttributeName": "UpdatedAt", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    desc = ddb.describe_table(TableName=table)["Table"]
    record(s, "create_table status", desc["TableStatus"])
    record(s, "billing mode", desc.get("BillingModeSummary", {}).get("BillingMode"))
    record(s, "gsi", [(g["IndexName"], g.get("IndexStatus"), g["Projection"]) for g in desc.get("GlobalSecondaryIndexes", [])])

    # TTL
    try:
        r = ddb.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "ExpiresAt"},
        )
        record(s, "update_time_to_live", r["TimeToLiveSpecification"])
        record(s, "describe_time_to_live", ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"])
    except ClientError as e:
        record(s, "update_time_to_live ERROR", str(e))
    # Is an already-expired item ever removed?
    ddb.put_item(
        TableName=table,
        Item={"JobId": {"S": "ttl"}, "Item": {"S": "meta"}, "ExpiresAt": {"N": str(int(time.time()) - 3600)}},
    )
    time.sleep(1)
    got = ddb.get_item(TableName=table, Key={"JobId": {"S": "ttl"}, "Item": {"S": "meta"}})
    record(s, "item expired 1h ago still readable after 1s", "Item" in got)

    key = {"JobId": {"S": "job-1"}, "Item": {"S": "meta"}}
    ddb.put_item(
        TableName=table,
        Item={**key, "Status": {"S": "RUNNING"}, "UpdatedAt": {"S": "2024-01-01T00:00:00Z"}, "Attempt": {"N": "1"}},
    )

    # UpdateItem: failing condition + ReturnValuesOnConditionCheckFailure=ALL_OLD
    try:
        ddb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET #s = :new",
            ConditionExpression="#s = :expected",
            ExpressionAttributeNames={"#s": "Status"},
            ExpressionAttributeValues={":new": {"S": "DONE"}, ":expected": {"S": "PENDING"}},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        record(s, "update_item ALL_OLD", "UNEXPECTED: condition passed")
    except ClientError as e:
        record(s, "update_item cond-fail code", e.response["Error"]["Code"])
        record(s, "update_item cond-fail raw body", raw_body())
        record(s, "update_item cond-fail botocore response has Item", "Item" in e.response)
        record(s, "update_item cond-fail botocore Item", e.response.get("Item"))

    # Same without ALL_OLD (baseline)
    try:
        ddb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET #s = :new",
            ConditionExpression="#s = :expected",
            ExpressionAttributeNames={"#s": "Status"},
            ExpressionAttributeValues={":new": {"S": "DONE"}, ":expected": {"S": "PENDING"}},
        )
    except ClientError as e:
        record(s, "update_item cond-fail (no ALL_OLD) raw body", raw_body())

    # TransactWriteItems: one ok Put + one failing conditional Update (ALL_OLD)
    put_key = {"JobId": {"S": "job-1"}, "Item": {"S": "event#0001"}}
    try:
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": {**put_key, "Kind": {"S": "probe"}}}},
                {
                    "Update": {
                        "TableName": table,
                        "Key": key,
                        "UpdateExpression": "SET #s = :new",
                        "ConditionExpression": "#s = :expected",
                        "ExpressionAttributeNames": {"#s": "Status"},
                        "ExpressionAttributeValues": {":new": {"S": "DONE"}, ":expected": {"S": "PENDING"}},
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
            ]
        )
        record(s, "transact cond-fail", "UNEXPECTED: transaction succeeded")
    except ClientError as e:
        record(s, "transact cond-fail code", e.response["Error"]["Code"])
        record(s, "transact cond-fail message", e.response["Error"].get("Message"))
        record(s, "transact cond-fail raw body", raw_body())
        record(s, "transact botocore CancellationReasons", e.response.get("CancellationReasons"))
    got = ddb.get_item(TableName=table, Key=put_key)
    record(s, "transact: Put of cancelled tx was applied (should be False)", "Item" in got)

    # Transaction without ALL_OLD: does the reason still carry an Item?
    try:
        ddb.transact_write_items(
            TransactItems=[
                {
                    "ConditionCheck": {
                        "TableName": table,
                        "Key": key,
                        "ConditionExpression": "attribute_not_exists(JobId)",
                    }
                },
            ]
        )
    except ClientError as e:
        record(s, "transact ConditionCheck (no ALL_OLD) raw body", raw_body())

    # Query GSI descending
    for i, (st, ts) in enumerate(
        [("QUEUED", "2024-01-01T00:00:03Z"), ("QUEUED", "2024-01-01T00:00:01Z"), ("QUEUED", "2024-01-01T00:00:02Z"), ("DONE", "2024-01-01T00:00:09Z")]
    ):
        ddb.put_item(
            TableName=table,
            Item={"JobId": {"S": f"job-q{i}"}, "Item": {"S": "meta"}, "Status": {"S": st}, "UpdatedAt": {"S": ts}, "Extra": {"S": f"x{i}"}},
        )
    r = ddb.query(
        TableName=table,
        IndexName="ByStatus",
        KeyConditionExpression="#s = :s",
        ExpressionAttributeNames={"#s": "Status"},
        ExpressionAttributeValues={":s": {"S": "QUEUED"}},
        ScanIndexForward=False,
    )
    record(s, "gsi query desc UpdatedAt order", [it["UpdatedAt"]["S"] for it in r["Items"]])
    record(s, "gsi query projection ALL returns non-key attr", all("Extra" in it for it in r["Items"]))
    r = ddb.query(
        TableName=table,
        IndexName="ByStatus",
        KeyConditionExpression="#s = :s AND UpdatedAt > :t",
        ExpressionAttributeNames={"#s": "Status"},
        ExpressionAttributeValues={":s": {"S": "QUEUED"}, ":t": {"S": "2024-01-01T00:00:01Z"}},
        ScanIndexForward=False,
        Limit=1,
    )
    record(s, "gsi query desc + range cond + Limit=1", {"items": [it["UpdatedAt"]["S"] for it in r["Items"]], "has LastEvaluatedKey": "LastEvaluatedKey" in r})

    # IN operator in a condition expression
    try:
        r = ddb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET Attempt = Attempt + :one",
            ConditionExpression="#s IN (:a, :b)",
            ExpressionAttributeNames={"#s": "Status"},
            ExpressionAttributeValues={":one": {"N": "1"}, ":a": {"S": "QUEUED"}, ":b": {"S": "RUNNING"}},
            ReturnValues="ALL_NEW",
        )
        record(s, "IN condition (matching) passes", True)
        record(s, "ReturnValues=ALL_NEW attributes", r.get("Attributes"))
    except ClientError as e:
        record(s, "IN condition (matching) ERROR", str(e))
    try:
        ddb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET Attempt = Attempt + :one",
            ConditionExpression="#s IN (:a, :b)",
            ExpressionAttributeNames={"#s": "Status"},
            ExpressionAttributeValues={":one": {"N": "1"}, ":a": {"S": "QUEUED"}, ":b": {"S": "DONE"}},
        )
        record(s, "IN condition (non-matching)", "UNEXPECTED: passed")
    except ClientError as e:
        record(s, "IN condition (non-matching) fails with", e.response["Error"]["Code"])

    # ReturnValues on a plain update (UPDATED_NEW for comparison)
    r = ddb.update_item(
        TableName=table,
        Key=key,
        UpdateExpression="SET #s = :d, UpdatedAt = :t",
        ExpressionAttributeNames={"#s": "Status"},
        ExpressionAttributeValues={":d": {"S": "DONE"}, ":t": {"S": "2024-01-02T00:00:00Z"}},
        ReturnValues="UPDATED_NEW",
    )
    record(s, "ReturnValues=UPDATED_NEW attributes", r.get("Attributes"))

    ddb.delete_table(TableName=table)


# -------------------------------------------------------------------- SQS ---


def wait_for_message(queue_url: str, timeout: float, **kw) -> tuple[float | None, list]:
    """Poll (short, 0.1 s) until a message shows up; return (elapsed, msgs)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        r = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, **kw)
        msgs = r.get("Messages", [])
        if msgs:
            return time.monotonic() - t0, msgs
        time.sleep(0.1)
    return None, []


def probe_sqs() -> None:
    s = "sqs"
    dlq_url = sqs.create_queue(QueueName=f"probe-dlq-{SUFFIX}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    q_url = sqs.create_queue(
        QueueName=f"probe-main-{SUFFIX}",
        Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"}),
            "VisibilityTimeout": "30",
        },
    )["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=q_url, AttributeNames=["All"])["Attributes"]
    record(s, "queue url", q_url)
    record(s, "redrive policy stored", attrs.get("RedrivePolicy"))

    # DelaySeconds=2
    t0 = time.monotonic()
    sqs.send_message(QueueUrl=q_url, MessageBody="delayed", DelaySeconds=2)
    first = sqs.receive_message(QueueUrl=q_url, WaitTimeSeconds=0).get("Messages", [])
    record(s, "DelaySeconds=2: visible immediately", bool(first))
    elapsed, msgs = wait_for_message(q_url, 6)
    record(s, "DelaySeconds=2: first visible after s (from send)", None if elapsed is None else round(time.monotonic() - t0, 2))
    for m in msgs:
        sqs.delete_message(QueueUrl=q_url, ReceiptHandle=m["ReceiptHandle"])

    # SendMessageBatch with per-entry delays
    t0 = time.monotonic()
    r = sqs.send_message_batch(
        QueueUrl=q_url,
        Entries=[
            {"Id": "d0", "MessageBody": "d0", "DelaySeconds": 0},
            {"Id": "d1", "MessageBody": "d1", "DelaySeconds": 1},
            {"Id": "d3", "MessageBody": "d3", "DelaySeconds": 3},
        ],
    )
    record(s, "batch send successful/failed", (len(r.get("Successful", [])), len(r.get("Failed", []))))
    seen: dict[str, float] = {}
    while time.monotonic() - t0 < 6 and len(seen) < 3:
        for m in sqs.receive_message(QueueUrl=q_url, MaxNumberOfMessages=10).get("Messages", []):
            seen.setdefault(m["Body"], round(time.monotonic() - t0, 2))
            sqs.delete_message(QueueUrl=q_url, ReceiptHandle=m["ReceiptHandle"])
        time.sleep(0.1)
    record(s, "batch per-entry delay: first seen at s", seen)

    # Message attributes round-trip + system attributes
    sent_attrs = {
        "JobId": {"DataType": "String", "StringValue": "job-123"},
        "Attempt": {"DataType": "Number", "StringValue": "2"},
        "Blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
        "Kind": {"DataType": "String.custom", "StringValue": "renew"},
    }
    sr = sqs.send_message(QueueUrl=q_url, MessageBody="attrs", MessageAttributes=sent_attrs)
    r = sqs.receive_message(
        QueueUrl=q_url,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
        VisibilityTimeout=1,
    )
    m = r["Messages"][0]
    got = m.get("MessageAttributes", {})
    record(s, "message attributes received", got)
    record(s, "message attributes round-trip equal", got == sent_attrs)
    record(s, "MD5OfMessageAttributes matches send", m.get("MD5OfMessageAttributes") == sr.get("MD5OfMessageAttributes"))
    record(s, "MessageSystemAttributeNames=All attributes", m.get("Attributes"))
    # ChangeMessageVisibility: extend from 1 s to 4 s
    t0 = time.monotonic()
    sqs.change_message_visibility(QueueUrl=q_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=4)
    time.sleep(2)
    early = sqs.receive_message(QueueUrl=q_url).get("Messages", [])
    record(s, "ChangeMessageVisibility 1->4s: visible at t=2s", bool(early))
    elapsed, msgs = wait_for_message(q_url, 6, AttributeNames=["All"])
    record(s, "ChangeMessageVisibility: visible again after s", None if elapsed is None else round(time.monotonic() - t0, 2))
    if msgs:
        record(s, "AttributeNames=All ApproximateReceiveCount on 2nd receive", msgs[0]["Attributes"].get("ApproximateReceiveCount"))
        sqs.delete_message(QueueUrl=q_url, ReceiptHandle=msgs[0]["ReceiptHandle"])

    # Redrive to DLQ after maxReceiveCount=3
    sqs.send_message(QueueUrl=q_url, MessageBody="poison")
    counts = []
    for i in range(5):
        r = sqs.receive_message(QueueUrl=q_url, VisibilityTimeout=1, MessageSystemAttributeNames=["ApproximateReceiveCount"])
        msgs = r.get("Messages", [])
        counts.append(msgs[0]["Attributes"]["ApproximateReceiveCount"] if msgs else None)
        time.sleep(1.3)
    record(s, "receive #1..#5 (vis 1s, no delete) ApproximateReceiveCount", counts)
    dlq_msgs = sqs.receive_message(QueueUrl=dlq_url, MessageSystemAttributeNames=["All"], MaxNumberOfMessages=10).get("Messages", [])
    record(s, "DLQ has message", [(d["Body"], d["Attributes"].get("ApproximateReceiveCount")) for d in dlq_msgs])
    qa = sqs.get_queue_attributes(QueueUrl=q_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
    record(s, "main queue counts after redrive", qa["Attributes"])

    # Long polling returns early when a message arrives
    out: dict[str, object] = {}

    def poll():
        t = time.monotonic()
        r = sqs.receive_message(QueueUrl=q_url, WaitTimeSeconds=10)
        out["elapsed"] = round(time.monotonic() - t, 2)
        out["msgs"] = [m["Body"] for m in r.get("Messages", [])]
        for m in r.get("Messages", []):
            sqs.delete_message(QueueUrl=q_url, ReceiptHandle=m["ReceiptHandle"])

    th = threading.Thread(target=poll)
    th.start()
    time.sleep(1.5)
    sqs.send_message(QueueUrl=q_url, MessageBody="wake")
    th.join(15)
    record(s, "long poll (10s) with send at 1.5s: returned after s / bodies", out)
    t = time.monotonic()
    r = sqs.receive_message(QueueUrl=q_url, WaitTimeSeconds=2)
    record(s, "long poll (2s) on empty queue returned after s", round(time.monotonic() - t, 2))

    # DeleteMessage with a stale receipt handle
    sqs.send_message(QueueUrl=q_url, MessageBody="stale")
    h1 = sqs.receive_message(QueueUrl=q_url, VisibilityTimeout=1)["Messages"][0]["ReceiptHandle"]
    time.sleep(1.3)
    h2 = sqs.receive_message(QueueUrl=q_url, VisibilityTimeout=1)["Messages"][0]["ReceiptHandle"]
    record(s, "stale handle differs from new handle", h1 != h2)
    try:
        sqs.delete_message(QueueUrl=q_url, ReceiptHandle=h1)
        record(s, "delete with stale handle", "accepted (no error)")
    except ClientError as e:
        record(s, "delete with stale handle", f"error {e.response['Error']['Code']}")
    time.sleep(1.3)
    left = sqs.receive_message(QueueUrl=q_url, VisibilityTimeout=1).get("Messages", [])
    record(s, "message still in queue after stale-handle delete", [m["Body"] for m in left])
    for m in left:
        sqs.delete_message(QueueUrl=q_url, ReceiptHandle=m["ReceiptHandle"])
    # Deleting twice with the same (current) handle
    sqs.send_message(QueueUrl=q_url, MessageBody="twice")
    h = sqs.receive_message(QueueUrl=q_url)["Messages"][0]["ReceiptHandle"]
    sqs.delete_message(QueueUrl=q_url, ReceiptHandle=h)
    try:
        sqs.delete_message(QueueUrl=q_url, ReceiptHandle=h)
        record(s, "second delete with same handle", "accepted (no error)")
    except ClientError as e:
        record(s, "second delete with same handle", f"error {e.response['Error']['Code']}")

    sqs.delete_queue(QueueUrl=q_url)
    sqs.delete_queue(QueueUrl=dlq_url)


# ----------------------------------------------------------------- timing ---


def probe_timing(n: int = 50) -> None:
    s = "timing"
    q_url = sqs.create_queue(QueueName=f"probe-timing-{SUFFIX}")["QueueUrl"]
    table = f"probe-timing-{SUFFIX}"
    ddb.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "JobId", "AttributeType": "S"}, {"AttributeName": "Item", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "JobId", "KeyType": "HASH"}, {"AttributeName": "Item", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    key = {"JobId": {"S": "j"}, "Item": {"S": "meta"}}
    ddb.put_item(TableName=table, Item={**key, "Status": {"S": "RUNNING"}})

    def timed(fn) -> list[float]:
        for _ in range(5):  # warm-up (connection pool, lazy imports)
            fn()
        out = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1000)
        return out

    for name, fn in [
        ("sqs SendMessage", lambda: sqs.send_message(QueueUrl=q_url, MessageBody="x")),
        ("ddb GetItem", lambda: ddb.get_item(TableName=table, Key=key)),
        ("ddb PutItem", lambda: ddb.put_item(TableName=table, Item={**key, "Status": {"S": "RUNNING"}})),
    ]:
        xs = sorted(timed(fn))
        record(
            s,
            f"{name} ms over {n} calls",
            {
                "median": round(statistics.median(xs), 1),
                "p95": round(xs[int(0.95 * (len(xs) - 1))], 1),
                "min": round(xs[0], 1),
                "max": round(xs[-1], 1),
            },
        )
    sqs.delete_queue(QueueUrl=q_url)
    ddb.delete_table(TableName=table)


if __name__ == "__main__":
    import moto  # noqa: F401  (only for the version string)
    import botocore

    print(f"endpoint={ENDPOINT} moto={moto.__version__} boto3={boto3.__version__} botocore={botocore.__version__}")
    which = sys.argv[1:] or ["ddb", "sqs", "timing"]
    if "ddb" in which:
        probe_dynamodb()
    if "sqs" in which:
        probe_sqs()
    if "timing" in which:
        probe_timing()
