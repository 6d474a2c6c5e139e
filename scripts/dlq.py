"""Operator commands for the dead-letter queue.

  list     print the DLQ's messages with the reason the function gave for each
  redrive  move them back to the queue they came from after a fix

Runs in the project's .venv (boto3 comes with moto) with your usual AWS credentials,
for example through `make dlq-list DLQ_URL=...` and `make dlq-redrive DLQ_URL=...`.

How redrive works. The function dead-letters messages itself (SendMessage to the DLQ with
the reason as message attributes), so SQS does not know where they came from, and
StartMessageMoveTask without a destination cannot move them; it would also carry the
failure attributes along. So redrive receives each message, sends its body to its source
queue, then deletes it from the DLQ, only once that send succeeded:
  - the destination is `--to QUEUE_URL` if given, else the message's SourceQueueArn
    attribute, else (a message the redrive policy moved, which has no such attribute) the
    one queue whose redrive policy names this DLQ (ListDeadLetterSourceQueues);
  - the body is sent unchanged, with OriginalMessageId (the first message's id, which
    the function logs and names in a later dead letter) and any attribute that is not a
    failure attribute; ErrorClass, ErrorKind, Reason, ReceiveCount, SourceQueueArn and
    RequeueCount are dropped, so the message starts over with fresh receives;
  - to a FIFO queue it is sent in its message group, deduplicated by the DLQ message's id
    (a second redrive within SQS's 5-minute window does not send it twice);
  - messages it cannot place are left in the DLQ, visible again at the end of the run.
"""

import argparse
import json
import sys
import time

import boto3

REASON_ATTRIBUTES = ["OriginalMessageId", "SourceQueueArn", "ErrorClass", "ErrorKind", "Reason", "ReceiveCount"]
# What the function writes when it dead-letters or requeues a message, and that a
# redriven message must not carry: it is a new attempt.
FAILURE_ATTRIBUTES = {"ErrorClass", "ErrorKind", "Reason", "ReceiveCount", "SourceQueueArn", "RequeueCount"}
ORIGINAL_MESSAGE_ID = "OriginalMessageId"
# How long a received message stays hidden while redrive works on it.
HOLD_SECONDS = 60


def list_messages(sqs, queue_url, limit, wait_seconds):
    """Peeks at up to `limit` messages: each is made visible again at once."""
    seen = {}
    idle_rounds = 0
    while len(seen) < limit and idle_rounds < 3:
        response = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            VisibilityTimeout=0,
            WaitTimeSeconds=wait_seconds,
        )
        new = [m for m in response.get("Messages", []) if m["MessageId"] not in seen]
        idle_rounds = 0 if new else idle_rounds + 1
        for message in new:
            attributes = message.get("MessageAttributes", {})
            seen[message["MessageId"]] = {
                "messageId": message["MessageId"],
                **{name: attributes.get(name, {}).get("StringValue") for name in REASON_ATTRIBUTES},
                "body": message["Body"],
            }
    return list(seen.values())[:limit]


def parse_queue_arn(arn):
    """`arn:aws:sqs:REGION:ACCOUNT:NAME` → (region, account, name), or None."""
    parts = arn.split(":") if isinstance(arn, str) else []
    if len(parts) == 6 and parts[0] == "arn" and parts[2] == "sqs" and all(parts[3:]):
        return parts[3], parts[4], parts[5]
    return None


class Destinations:
    """Queue URLs for the messages' SourceQueueArn, looked up once each."""

    def __init__(self, sqs, dlq_url, to_url):
        self.sqs = sqs
        self.dlq_url = dlq_url
        self.to_url = to_url
        self.urls = {}
        self._policy_source = None

    def for_message(self, message):
        """(url, how) or (None, why not)."""
        if self.to_url:
            return self.to_url, "--to"
        arn = message.get("MessageAttributes", {}).get("SourceQueueArn", {}).get("StringValue")
        if arn:
            return self.url_of(arn)
        return self.policy_source()

    def url_of(self, arn):
        if arn in self.urls:
            return self.urls[arn]
        parsed = parse_queue_arn(arn)
        if parsed is None:
            found = (None, f"SourceQueueArn {arn!r} is not an SQS queue ARN")
        else:
            region, account, name = parsed
            client = self.sqs
            if region != self.sqs.meta.region_name:
                client = boto3.client("sqs", region_name=region)
            try:
                url = client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
                found = (url, "SourceQueueArn")
            except client.exceptions.ClientError as err:
                found = (None, f"source queue {arn} not found: {err}")
        self.urls[arn] = found
        return found

    def policy_source(self):
        if self._policy_source is None:
            urls = self.sqs.list_dead_letter_source_queues(QueueUrl=self.dlq_url).get("queueUrls", [])
            if len(urls) == 1:
                self._policy_source = (urls[0], "redrive policy")
            else:
                self._policy_source = (None, "no SourceQueueArn attribute, and "
                                       f"{len(urls)} queues name this DLQ in their redrive policy: use --to")
        return self._policy_source


def redriven_attributes(message):
    """The message attributes a redriven copy carries: everything but the failure's."""
    kept = {}
    for name, value in message.get("MessageAttributes", {}).items():
        if name in FAILURE_ATTRIBUTES:
            continue
        value = {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
        kept[name] = value
    kept.setdefault(ORIGINAL_MESSAGE_ID, {"DataType": "String", "StringValue": message["MessageId"]})
    return kept


def redrive(sqs, dlq_url, to_url=None, limit=None, dry_run=False, max_per_second=5, wait_seconds=1, out=print):
    """Moves up to `limit` messages from the DLQ to their source queue. Returns a summary."""
    destinations = Destinations(sqs, dlq_url, to_url)
    held = []  # receipt handles of messages left in the DLQ, made visible again at the end
    summary = {"moved": 0, "left": 0, "failed": 0, "dryRun": dry_run}
    pace = 1.0 / max_per_second if max_per_second else 0
    idle_rounds = 0
    try:
        while limit is None or summary["moved"] < limit:
            want = 10 if limit is None else max(1, min(10, limit - summary["moved"]))
            response = sqs.receive_message(
                QueueUrl=dlq_url,
                MaxNumberOfMessages=want,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["MessageGroupId"],
                VisibilityTimeout=HOLD_SECONDS,
                WaitTimeSeconds=wait_seconds,
            )
            messages = response.get("Messages", [])
            if not messages:
                idle_rounds += 1
                if idle_rounds >= 2:
                    break
                continue
            idle_rounds = 0
            for message in messages:
                if limit is not None and summary["moved"] >= limit:
                    held.append(message["ReceiptHandle"])
                    continue
                url, how = destinations.for_message(message)
                if url is None:
                    out(f"left     {message['MessageId']}: {how}")
                    summary["left"] += 1
                    held.append(message["ReceiptHandle"])
                    continue
                if dry_run:
                    out(f"would move {message['MessageId']} -> {url} ({how})")
                    summary["moved"] += 1
                    held.append(message["ReceiptHandle"])
                    continue
                send = {
                    "QueueUrl": url,
                    "MessageBody": message["Body"],
                    "MessageAttributes": redriven_attributes(message),
                }
                if url.endswith(".fifo"):
                    group = message.get("Attributes", {}).get("MessageGroupId", "redriven")
                    send["MessageGroupId"] = group
                    send["MessageDeduplicationId"] = message["MessageId"]
                try:
                    sent = sqs.send_message(**send)
                except Exception as err:  # noqa: BLE001 - reported, the message stays in the DLQ
                    out(f"failed   {message['MessageId']} -> {url}: {err} (left in the DLQ)")
                    summary["failed"] += 1
                    held.append(message["ReceiptHandle"])
                    continue
                try:
                    sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
                except Exception as err:  # noqa: BLE001
                    # Sent, not deleted: it comes back in the DLQ after HOLD_SECONDS; a second
                    # redrive is harmless (a synced order is acknowledged without Polar).
                    out(f"sent     {message['MessageId']} -> {url} as {sent['MessageId']}, "
                        f"but not deleted from the DLQ: {err}")
                    summary["failed"] += 1
                    continue
                out(f"moved    {message['MessageId']} -> {url} as {sent['MessageId']} ({how})")
                summary["moved"] += 1
                if pace:
                    time.sleep(pace)
    finally:
        for receipt in held:
            try:
                sqs.change_message_visibility(QueueUrl=dlq_url, ReceiptHandle=receipt, VisibilityTimeout=0)
            except Exception:  # noqa: BLE001 - it becomes visible after HOLD_SECONDS anyway
                pass
    return summary


def non_empty(value):
    if not value or not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="print the DLQ's messages and their reasons")
    listing.add_argument("--queue-url", required=True, type=non_empty, help="the dead-letter queue's URL")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.add_argument("--wait-seconds", type=int, default=1, help="long-poll time per receive")
    moving = commands.add_parser("redrive", help="move the DLQ's messages back to their source queue")
    moving.add_argument("--queue-url", required=True, type=non_empty, help="the dead-letter queue's URL")
    moving.add_argument("--to", type=non_empty, help="destination queue URL (default: each message's source queue)")
    moving.add_argument("--limit", type=int, help="move at most this many messages")
    moving.add_argument("--dry-run", action="store_true", help="print what would move; move nothing")
    moving.add_argument("--max-per-second", type=float, default=5,
                        help="keeps the retried redemptions inside Polar's rate limit (default 5)")
    moving.add_argument("--wait-seconds", type=int, default=1, help="long-poll time per receive")
    moving.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args()
    if args.command == "redrive" and args.to and args.to.rstrip("/") == args.queue_url.rstrip("/"):
        parser.error("--to is the dead-letter queue itself")
    sqs = boto3.client("sqs")

    if args.command == "list":
        messages = list_messages(sqs, args.queue_url, args.limit, args.wait_seconds)
        for message in messages:
            if args.json:
                print(json.dumps(message))
            else:
                print(f"{message['messageId']}  original={message['OriginalMessageId']}  "
                      f"class={message['ErrorClass']}  kind={message['ErrorKind']}  "
                      f"receives={message['ReceiveCount']}\n    source: {message['SourceQueueArn']}\n"
                      f"    reason: {message['Reason']}\n    body:   {message['body']}")
        sys.stdout.flush()
        print(f"{len(messages)} message(s)", file=sys.stderr)
        return 0
    summary = redrive(sqs, args.queue_url, to_url=args.to, limit=args.limit, dry_run=args.dry_run,
                      max_per_second=args.max_per_second, wait_seconds=args.wait_seconds,
                      out=(lambda line: print(line, file=sys.stderr)) if args.json else print)
    if args.json:
        print(json.dumps(summary))
    else:
        verb = "would move" if args.dry_run else "moved"
        print(f"{verb} {summary['moved']}, left {summary['left']} in the DLQ, {summary['failed']} failed")
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
