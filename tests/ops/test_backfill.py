"""`make backfill` (scripts/backfill.py) against moto: which orders it finds, that a dry
run sends nothing, and that --apply sends each unsynced order's message exactly once."""

import collections
import json
import os
import sys
import unittest

import boto3

from support import ROOT, create_tables, run, script, suffix

sys.path.insert(0, os.path.join(ROOT, "scripts"))
from backfill import deduplication_id  # noqa: E402

SUMMER = "9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10"
WELCOME = "4f6a2d8e-7b3c-4e91-8a5d-1c2b3a4d5e6f"


def order(order_id, discount_id=None, code=None, synced=None, created_at=None):
    item = {"id": {"S": order_id}, "total": {"N": "1990"}}
    if discount_id:
        item["discountId"] = {"S": discount_id}
        item["discountCode"] = {"S": code}
    if synced is not None:
        item["polarDiscountSynced"] = {"BOOL": synced}
    if created_at:
        item["createdAt"] = {"S": created_at}
    return item


class Backfill(unittest.TestCase):
    def setUp(self):
        s = suffix()
        self.table = f"orders-{s}"
        self.dynamodb = create_tables(self.table, f"sync-{s}")
        self.sqs = boto3.client("sqs")
        self.queue = self.sqs.create_queue(QueueName=f"redemptions-{s}")["QueueUrl"]
        self.unsynced = {f"ord_s{i:02}" for i in range(23)} | {"ord_w1", "ord_w2", "ord_false"}
        items = [order(f"ord_s{i:02}", SUMMER, "SUMMER25", created_at=f"2026-12-0{1 + i % 3}T10:00:00Z")
                 for i in range(23)]
        items += [
            order("ord_w1", WELCOME, "WELCOME10", created_at="2026-11-30T10:00:00Z"),
            order("ord_w2", WELCOME, "welcome10", created_at="2026-12-03T10:00:00Z"),
            order("ord_false", WELCOME, "WELCOME10", synced=False),
            order("ord_synced_1", SUMMER, "SUMMER25", synced=True, created_at="2026-12-03T10:00:00Z"),
            order("ord_synced_2", WELCOME, "WELCOME10", synced=True),
            order("ord_plain_1"), order("ord_plain_2", created_at="2026-12-03T10:00:00Z"),
        ]
        for item in items:
            self.dynamodb.put_item(TableName=self.table, Item=item)

    def backfill(self, *args, queue=None):
        done = script("backfill.py", "--table", self.table, "--queue-url", queue or self.queue, *args)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        return done

    def received(self, queue=None):
        """Every message in the queue, each received and deleted (a FIFO group hands out
        its next messages only once those in flight are gone)."""
        messages = []
        while True:
            got = self.sqs.receive_message(QueueUrl=queue or self.queue, MaxNumberOfMessages=10,
                                           VisibilityTimeout=600, AttributeNames=["All"])
            if not got.get("Messages"):
                return messages
            messages.extend(got["Messages"])
            for message in got["Messages"]:
                self.sqs.delete_message(QueueUrl=queue or self.queue, ReceiptHandle=message["ReceiptHandle"])

    def test_a_dry_run_prints_the_count_per_code_and_what_it_would_send_and_sends_nothing(self):
        done = self.backfill("--segments", "3")

        self.assertIn("26 orders with a discount and not synced, of 30 items scanned", done.stdout)
        self.assertIn("  SUMMER25: 23\n", done.stdout)
        self.assertIn("  WELCOME10: 2\n", done.stdout)
        self.assertIn("  welcome10: 1\n", done.stdout)
        would = {json.loads(line.removeprefix("would send "))["orderId"]
                 for line in done.stdout.splitlines() if line.startswith("would send ")}
        self.assertEqual(would, self.unsynced)
        self.assertIn("dry run: nothing sent", done.stdout)
        self.assertEqual(self.received(), [])

    def test_apply_sends_each_unsynced_order_once_and_skips_synced_orders_and_orders_without_a_discount(self):
        done = self.backfill("--apply", "--segments", "4", "--consistent", "--rate", "200")

        messages = self.received()
        counts = collections.Counter(json.loads(m["Body"])["orderId"] for m in messages)
        self.assertEqual(set(counts), self.unsynced)
        self.assertEqual(max(counts.values()), 1, counts)
        body = next(json.loads(m["Body"]) for m in messages if json.loads(m["Body"])["orderId"] == "ord_w2")
        self.assertEqual(body, {"orderId": "ord_w2", "discountId": WELCOME, "discountCode": "welcome10"})
        self.assertIn("summary: 26 sent, 0 not sent, 0 skipped, 30 items scanned", done.stdout)
        self.assertIn("sent 26 of 26", done.stderr)

    def test_since_limits_the_backfill_to_orders_written_after_it(self):
        done = self.backfill("--apply", "--since-attribute", "createdAt", "--since", "2026-12-02T00:00:00Z")

        sent = {json.loads(m["Body"])["orderId"] for m in self.received()}
        expected = {f"ord_s{i:02}" for i in range(23) if i % 3 != 0} | {"ord_w2"}
        self.assertEqual(sent, expected)
        self.assertIn(f"summary: {len(expected)} sent", done.stdout)

    def test_on_a_fifo_queue_messages_are_grouped_by_discount_and_deduplicated_by_order(self):
        fifo = self.sqs.create_queue(QueueName=f"redemptions-{suffix()}.fifo",
                                     Attributes={"FifoQueue": "true"})["QueueUrl"]

        self.backfill("--apply", queue=fifo)
        self.backfill("--apply", queue=fifo)

        messages = self.received(fifo)
        self.assertEqual(len(messages), 26, "the second run within 5 minutes is deduplicated")
        for message in messages:
            body = json.loads(message["Body"])
            self.assertEqual(message["Attributes"]["MessageGroupId"], body["discountId"])
            self.assertEqual(message["Attributes"]["MessageDeduplicationId"], deduplication_id(body["orderId"]))

    def test_the_deduplication_id_is_the_stream_relays(self):
        # The same value is asserted in src/adapters/sqs_relay.rs.
        self.assertEqual(deduplication_id("ord_1"), "order-341fb35e2c016788d2106af198a41b2e61581e5d018095fb5abad7f58890c145")

    def test_the_make_target_checks_its_variables_and_runs_a_dry_run(self):
        missing = run(["make", "--no-print-directory", "backfill", f"ORDERS_TABLE={self.table}"])
        self.assertNotEqual(missing.returncode, 0)
        self.assertIn("QUEUE_URL is not set", missing.stderr)
        done = run(["make", "--no-print-directory", "backfill", f"ORDERS_TABLE={self.table}",
                    f"QUEUE_URL={self.queue}", "SEGMENTS=2"])
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("dry run: nothing sent", done.stdout)
        self.assertEqual(self.received(), [])


if __name__ == "__main__":
    unittest.main()
