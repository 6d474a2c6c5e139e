"""Operator commands for the dead-letter queue.

  list     print the DLQ's messages with the reason the function gave for each
  redrive  move them back to the source queue after a fix (SQS StartMessageMoveTask)

Runs in the project's .venv (boto3 comes with moto) with your usual AWS credentials,
for example through `make dlq-list DLQ_URL=...` and `make dlq-redrive DLQ_ARN=...`.
"""

import argparse
import json
import sys

import boto3

REASON_ATTRIBUTES = ["OriginalMessageId", "ErrorClass", "ErrorKind", "Reason", "ReceiveCount"]


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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="print the DLQ's messages and their reasons")
    listing.add_argument("--queue-url", required=True, help="the dead-letter queue's URL")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.add_argument("--wait-seconds", type=int, default=1, help="long-poll time per receive")
    redrive = commands.add_parser("redrive", help="move the DLQ's messages back to their source queue")
    redrive.add_argument("--dlq-arn", required=True, help="the dead-letter queue's ARN")
    redrive.add_argument("--to-arn", help="destination queue ARN (default: the queue they came from)")
    redrive.add_argument("--max-per-second", type=int, default=5,
                         help="keeps the retried redemptions inside Polar's rate limit")
    args = parser.parse_args()
    sqs = boto3.client("sqs")

    if args.command == "list":
        messages = list_messages(sqs, args.queue_url, args.limit, args.wait_seconds)
        for message in messages:
            if args.json:
                print(json.dumps(message))
            else:
                print(f"{message['messageId']}  original={message['OriginalMessageId']}  "
                      f"class={message['ErrorClass']}  kind={message['ErrorKind']}  "
                      f"receives={message['ReceiveCount']}\n    reason: {message['Reason']}\n"
                      f"    body:   {message['body']}")
        sys.stdout.flush()
        print(f"{len(messages)} message(s)", file=sys.stderr)
    else:
        task = {"SourceArn": args.dlq_arn, "MaxNumberOfMessagesPerSecond": args.max_per_second}
        if args.to_arn:
            task["DestinationArn"] = args.to_arn
        handle = sqs.start_message_move_task(**task)["TaskHandle"]
        print(f"move task started: {handle}")
        print(f"progress: aws sqs list-message-move-tasks --source-arn {args.dlq_arn}")


if __name__ == "__main__":
    main()
