"""Sends the message of every order that has a discount and is not synced yet.

For the first deployment (orders written before the stream relay existed), for a
deployment without the orders table's stream, and after an incident (checkout's messages
lost, the stream's failure queue not empty). The function treats a message for an order
already synced as a duplicate, so sending one too many costs a read, never a second count.

It scans the orders table (in parallel segments, paginated; eventually consistent reads
unless --consistent) for items with a `discountId` and without `polarDiscountSynced` =
true, optionally only those whose timestamp attribute (--since-attribute, e.g. createdAt,
a string compared as written, or a number) is after --since. Dry run by default: it prints
the count per discount code and each message it would send. With --apply it sends them
to the queue with SendMessageBatch, at most --rate messages a second; on a FIFO queue in
the discount's message group, deduplicated by the order (as the stream relay does). An
order is sent at most once per run. Progress goes to stderr, the summary to stdout.

Runs in the project's .venv (boto3 comes with moto) with your usual AWS credentials, e.g.
through `make backfill STACK=... [APPLY=1]` (the table and the queue from the stack's
outputs, scripts/stack.py) or `make backfill ORDERS_TABLE=... QUEUE_URL=...`.
"""

import argparse
import collections
import concurrent.futures
import hashlib
import json
import sys
import threading
import time

import os

from stack import Resources, client, run

BATCH_ENTRIES = 10
SEND_ATTEMPTS = 3


def deduplication_id(order_id):
    """The FIFO deduplication id the stream relay gives an order's message
    (src/adapters/sqs_relay.rs): a relay and a backfill of one order within SQS's 5-minute
    window are one message."""
    return "order-" + hashlib.sha256(order_id.encode()).hexdigest()


def scan_filter(since_attribute, since):
    names = {"#discount": "discountId", "#synced": "polarDiscountSynced"}
    values = {":true": {"BOOL": True}}
    expression = "attribute_exists(#discount) AND (attribute_not_exists(#synced) OR #synced <> :true)"
    if since_attribute:
        names["#since"] = since_attribute
        try:
            float(since)
            values[":since"] = {"N": since}
        except ValueError:
            values[":since"] = {"S": since}
        expression += " AND #since > :since"
    return expression, names, values


class Progress:
    def __init__(self, out):
        self.lock = threading.Lock()
        self.scanned = 0
        self.matched = 0
        self.out = out

    def page(self, segment, scanned, matched):
        with self.lock:
            self.scanned += scanned
            self.matched += matched
            print(f"segment {segment}: {self.scanned} items scanned in all, {self.matched} unsynced with a discount",
                  file=self.out, flush=True)


def scan_segment(dynamodb, table, segment, segments, consistent, since_attribute, since, progress):
    expression, names, values = scan_filter(since_attribute, since)
    arguments = {
        "TableName": table, "Segment": segment, "TotalSegments": segments, "ConsistentRead": consistent,
        "FilterExpression": expression, "ExpressionAttributeNames": names, "ExpressionAttributeValues": values,
    }
    items = []
    while True:
        page = dynamodb.scan(**arguments)
        items.extend(page.get("Items", []))
        progress.page(segment, page.get("ScannedCount", 0), page.get("Count", 0))
        if "LastEvaluatedKey" not in page:
            return items
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def message_of(item):
    """The order's message, or None when the item cannot make one (wrong types)."""
    order_id = item.get("id", {}).get("S")
    discount_id = item.get("discountId", {}).get("S")
    discount_code = item.get("discountCode", {}).get("S")
    if not (order_id and discount_id and discount_code):
        return None
    return {"orderId": order_id, "discountId": discount_id, "discountCode": discount_code}


def find_orders(dynamodb, table, segments, consistent, since_attribute, since, progress_out):
    """The messages to send, one per order, in order id order; and the unusable items."""
    progress = Progress(progress_out)
    with concurrent.futures.ThreadPoolExecutor(max_workers=segments) as pool:
        pages = pool.map(lambda s: scan_segment(dynamodb, table, s, segments, consistent, since_attribute, since,
                                                progress), range(segments))
        items = [item for segment in pages for item in segment]
    messages, unusable = {}, []
    for item in items:
        message = message_of(item)
        if message is None:
            unusable.append(item.get("id", {}))
        else:
            messages[message["orderId"]] = message
    return [messages[k] for k in sorted(messages)], unusable, progress.scanned


class Pacer:
    """At most `rate` messages a second, over the whole run."""

    def __init__(self, rate):
        self.rate = rate
        self.start = time.monotonic()
        self.sent = 0

    def wait_for(self, count):
        due = self.start + (self.sent + count) / self.rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.sent += count


def send_all(sqs, queue_url, messages, rate, progress_out):
    """Sends every message once (entries SQS refused are tried again, up to 3 times);
    returns the messages that could not be sent, with SQS's reason."""
    fifo = queue_url.endswith(".fifo")
    pacer = Pacer(rate)
    failed = []
    sent = 0
    for start in range(0, len(messages), BATCH_ENTRIES):
        chunk = dict(enumerate(messages[start:start + BATCH_ENTRIES]))
        reasons = {}
        for _ in range(SEND_ATTEMPTS):
            if not chunk:
                break
            pacer.wait_for(len(chunk))
            entries = []
            for index, message in chunk.items():
                entry = {"Id": str(index), "MessageBody": json.dumps(message)}
                if fifo:
                    entry["MessageGroupId"] = message["discountId"]
                    entry["MessageDeduplicationId"] = deduplication_id(message["orderId"])
                entries.append(entry)
            try:
                answer = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            except Exception as error:  # noqa: BLE001 - a refused request is retried, then reported
                reasons = {index: str(error) for index in chunk}
                continue
            for success in answer.get("Successful", []):
                chunk.pop(int(success["Id"]), None)
                sent += 1
            reasons = {int(f["Id"]): f"{f['Code']}: {f.get('Message', '')}" for f in answer.get("Failed", [])}
        failed.extend((message, reasons.get(index, "not sent")) for index, message in chunk.items())
        print(f"sent {sent} of {len(messages)}", file=progress_out, flush=True)
    return failed


def positive_int(value):
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def positive_float(value):
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return number


def main(argv=None, out=sys.stdout, progress_out=sys.stderr):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default=os.environ.get("STACK", ""),
                        help="the deployed stack, whose outputs name the table and the queue")
    parser.add_argument("--table", help="the orders table (default: the stack's)")
    parser.add_argument("--queue-url", help="the redemption queue the function is subscribed to (default: the stack's)")
    parser.add_argument("--apply", action="store_true", help="send the messages (default: dry run)")
    parser.add_argument("--consistent", action="store_true", help="strongly consistent scan (twice the read cost)")
    parser.add_argument("--segments", type=positive_int, default=4, help="parallel scan segments (default 4)")
    parser.add_argument("--since-attribute", help="the orders' timestamp attribute, e.g. createdAt")
    parser.add_argument("--since", help="only orders whose --since-attribute is after this value")
    parser.add_argument("--rate", type=positive_float, default=50, help="messages per second at most (default 50)")
    args = parser.parse_args(argv)
    if bool(args.since_attribute) != bool(args.since):
        parser.error("--since-attribute and --since go together")

    resources = Resources(stack=args.stack, explicit={"orders_table": args.table, "queue_url": args.queue_url},
                          needs=["orders_table", "queue_url"])
    args.table, args.queue_url = resources.orders_table, resources.queue_url
    started = time.monotonic()
    dynamodb = resources.client("dynamodb")
    messages, unusable, scanned = find_orders(dynamodb, args.table, args.segments, args.consistent,
                                              args.since_attribute, args.since, progress_out)
    per_code = collections.Counter(m["discountCode"] for m in messages)
    print(f"{len(messages)} orders with a discount and not synced"
          + (f" ({args.since_attribute} after {args.since})" if args.since_attribute else "")
          + f", of {scanned} items scanned", file=out)
    for code, count in sorted(per_code.items()):
        print(f"  {code}: {count}", file=out)
    for item_id in unusable:
        print(f"skipped {json.dumps(item_id)}: its discountId or discountCode is missing or not a string", file=out)

    if not args.apply:
        for message in messages:
            print(f"would send {json.dumps(message)}", file=out)
        print(f"dry run: nothing sent; APPLY=1 sends these {len(messages)} messages to {args.queue_url}", file=out)
        return 0

    failed = send_all(client("sqs", args.queue_url), args.queue_url, messages, args.rate, progress_out)
    for message, reason in failed:
        print(f"not sent {json.dumps(message)}: {reason}", file=out)
    print(f"summary: {len(messages) - len(failed)} sent, {len(failed)} not sent, {len(unusable)} skipped, "
          f"{scanned} items scanned in {time.monotonic() - started:.1f} s", file=out)
    return 1 if failed else 0


if __name__ == "__main__":
    run(main)
