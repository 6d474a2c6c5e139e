"""`make dlq-redrive` and `make dlq-list` against moto's SQS, with dead letters the function
binary itself sent (SendMessage to the DLQ with the failure's attributes) and one that the
queue's redrive policy moved. moto does not implement StartMessageMoveTask (it answers
500), which redrive does not use."""

import json
import unittest

import boto3

from support import create_tables, invoke_function, run, script, sqs_record, suffix

MALFORMED = ['{"orderId": "o1"', '{"orderId": "o2", "discountId": "not-a-uuid", "discountCode": "X"}']


class Queues:
    """A source queue (redrive policy: maxReceiveCount 1) and its DLQ, standard or FIFO."""

    def __init__(self, fifo=False):
        self.sqs = boto3.client("sqs")
        s, ext = suffix(), ".fifo" if fifo else ""
        attrs = {"FifoQueue": "true"} if fifo else {}
        self.dlq = self.sqs.create_queue(QueueName=f"dlq-{s}{ext}", Attributes=attrs)["QueueUrl"]
        self.dlq_arn = self.arn(self.dlq)
        policy = json.dumps({"deadLetterTargetArn": self.dlq_arn, "maxReceiveCount": 1})
        self.source = self.sqs.create_queue(QueueName=f"src-{s}{ext}",
                                            Attributes={**attrs, "RedrivePolicy": policy})["QueueUrl"]
        self.source_arn = self.arn(self.source)
        self.env = {"ORDERS_TABLE": f"orders-{s}", "SYNC_TABLE": f"sync-{s}", "DEAD_LETTER_QUEUE_URL": self.dlq,
                    "POLAR_API_URL": "http://127.0.0.1:9/v1", "POLAR_ACCESS_TOKEN": "polar_oat_unused",
                    "MAX_RECEIVE_COUNT": "5"}

    def arn(self, url):
        return self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def dead_letter_from_the_function(self, bodies, group=None):
        """The function binary dead-letters each (permanently failing) body; their message ids."""
        records = []
        for i, body in enumerate(bodies):
            record = sqs_record(f"orig-{suffix()}-{i}", body, self.source_arn)
            if group:
                record["attributes"].update({"MessageGroupId": group, "MessageDeduplicationId": record["messageId"],
                                             "SequenceNumber": str(i + 1)})
            records.append(record)
        answer = invoke_function({"Records": records}, self.env)
        assert answer == {"batchItemFailures": []}, answer
        return [r["messageId"] for r in records]

    def dead_letter_by_the_redrive_policy(self, body):
        self.sqs.send_message(QueueUrl=self.source, MessageBody=body)
        for _ in range(2):  # the second receive is past maxReceiveCount: moto moves it
            self.sqs.receive_message(QueueUrl=self.source, VisibilityTimeout=0)

    def drain(self, url):
        messages = {}
        for _ in range(3):
            got = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30,
                                           MessageAttributeNames=["All"], AttributeNames=["All"])
            for m in got.get("Messages", []):
                messages[m["MessageId"]] = m
        return list(messages.values())

    def redrive(self, *args):
        # The function's dead letters here are malformed messages: permanent failures.
        return script("dlq.py", "redrive", "--queue-url", self.dlq, "--wait-seconds", "0",
                      "--max-per-second", "0", "--yes", "--include-permanent", *args)


class DlqRedriveTest(unittest.TestCase):
    def setUp(self):
        self.queues = Queues()
        create_tables(self.queues.env["ORDERS_TABLE"], self.queues.env["SYNC_TABLE"])

    def test_dead_letters_go_back_to_their_source_queue_without_the_failure_attributes(self):
        q = self.queues
        originals = q.dead_letter_from_the_function(MALFORMED)
        q.dead_letter_by_the_redrive_policy('{"orderId": "moved-by-sqs"}')
        done = q.redrive()
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        print(f"\n{done.stdout}", end="")
        self.assertEqual(done.stdout.count("(SourceQueueArn)"), 2, done.stdout)
        self.assertEqual(done.stdout.count("(redrive policy)"), 1, done.stdout)
        self.assertIn("moved 3, left 0 in the DLQ, 0 failed (of 3 in the queue)", done.stdout)
        self.assertEqual(q.drain(q.dlq), [], "deleted from the DLQ")

        back = q.drain(q.source)
        self.assertEqual(sorted(m["Body"] for m in back), sorted(MALFORMED + ['{"orderId": "moved-by-sqs"}']))
        by_body = {m["Body"]: m for m in back}
        for original, body in zip(originals, MALFORMED):
            attributes = by_body[body]["MessageAttributes"]
            self.assertEqual(list(attributes), ["OriginalMessageId"], attributes)
            self.assertEqual(attributes["OriginalMessageId"]["StringValue"], original)

        # The function reads what redrive kept: failing again, each names its first message.
        redelivered = [sqs_record(m["MessageId"], m["Body"], q.source_arn, attributes={
            name: {"stringValue": v["StringValue"], "dataType": v["DataType"],
                   "stringListValues": [], "binaryListValues": []}
            for name, v in m.get("MessageAttributes", {}).items()}) for m in back if m["Body"] in MALFORMED]
        invoke_function({"Records": redelivered}, q.env)
        again = q.drain(q.dlq)
        self.assertEqual(sorted(m["MessageAttributes"]["OriginalMessageId"]["StringValue"] for m in again),
                         sorted(originals))

    def test_a_dry_run_moves_nothing_and_limit_and_to_move_only_that_many_there(self):
        q = self.queues
        q.dead_letter_from_the_function(MALFORMED)
        dry = q.redrive("--dry-run")
        self.assertEqual(dry.returncode, 0, dry.stderr)
        self.assertEqual(dry.stdout.count("would move"), 3, dry.stdout)  # 2 lines + the summary
        still = q.drain(q.dlq)
        self.assertEqual(len(still), 2, "still in the DLQ")
        for m in still:  # drain() hid them; make them visible again
            q.sqs.change_message_visibility(QueueUrl=q.dlq, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
        self.assertEqual(q.drain(q.source), [])

        elsewhere = q.sqs.create_queue(QueueName=f"elsewhere-{suffix()}")["QueueUrl"]
        some = q.redrive("--limit", "1", "--to", elsewhere, "--json")
        self.assertEqual(json.loads(some.stdout), {"moved": 1, "left": 1, "failed": 0, "dryRun": False, "total": 2},
                         some.stderr)
        self.assertIn("beyond --limit 1", some.stderr)
        self.assertEqual(len(q.drain(elsewhere)), 1)
        self.assertEqual(q.drain(q.source), [])
        self.assertEqual(len(q.drain(q.dlq)), 1, "the other one stays, visible again")

    def test_a_dead_letter_whose_source_is_gone_or_whose_send_fails_stays_in_the_dlq(self):
        q = self.queues
        q.sqs.send_message(QueueUrl=q.dlq, MessageBody="{}", MessageAttributes={
            "SourceQueueArn": {"DataType": "String", "StringValue": "arn:aws:sqs:us-east-1:123456789012:gone"}})
        done = q.redrive()
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("source queue arn:aws:sqs:us-east-1:123456789012:gone not found", done.stdout)
        self.assertIn("moved 0, left 1 in the DLQ", done.stdout)
        for m in q.drain(q.dlq):
            q.sqs.change_message_visibility(QueueUrl=q.dlq, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
        # A send that fails deletes nothing: the message stays, and the run says so.
        refused = q.redrive("--to", q.dlq.rsplit("/", 1)[0] + "/no-such-queue")
        self.assertEqual(refused.returncode, 1, refused.stdout)
        self.assertIn("(left in the DLQ)", refused.stdout)
        self.assertIn("moved 0, left 0 in the DLQ, 1 failed", refused.stdout)
        self.assertEqual(len(q.drain(q.dlq)), 1)

    def test_fifo_dead_letters_go_back_in_their_message_group(self):
        q = Queues(fifo=True)
        create_tables(q.env["ORDERS_TABLE"], q.env["SYNC_TABLE"])
        q.dead_letter_from_the_function(MALFORMED, group="group-a")
        done = q.redrive()
        self.assertIn("moved 2, left 0", done.stdout, done.stderr)
        back = q.drain(q.source)
        self.assertEqual(sorted(m["Body"] for m in back), sorted(MALFORMED))
        self.assertEqual({m["Attributes"]["MessageGroupId"] for m in back}, {"group-a"})

    def test_a_fifo_group_longer_than_one_receive_is_moved_whole_after_one_confirmation(self):
        q = Queues(fifo=True)
        bodies = [json.dumps({"orderId": f"fifo-{i:02}"}) for i in range(13)]
        for i, body in enumerate(bodies):
            q.sqs.send_message(QueueUrl=q.dlq, MessageBody=body, MessageGroupId="one-discount",
                               MessageDeduplicationId=f"d{i}", MessageAttributes={
                                   "SourceQueueArn": {"DataType": "String", "StringValue": q.source_arn},
                                   "ErrorClass": {"DataType": "String", "StringValue": "transient"}})
        done = script("dlq.py", "redrive", "--queue-url", q.dlq, "--wait-seconds", "0", "--max-per-second", "0",
                      input="y\n")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stderr.count("? [y/N]"), 1, done.stderr)
        self.assertIn("(FIFO: the ones behind them in their message groups", done.stderr)
        self.assertIn("moved 13, left 0 in the DLQ, 0 failed (of 13 in the queue)", done.stdout)
        count = q.sqs.get_queue_attributes(QueueUrl=q.source, AttributeNames=["ApproximateNumberOfMessages"])
        self.assertEqual(count["Attributes"]["ApproximateNumberOfMessages"], "13")
        # The source queue holds the group back too: its first receive is the first 10, in order.
        self.assertEqual([m["Body"] for m in q.drain(q.source)], bodies[:10])

    def test_make_dlq_list_shows_the_source_and_the_targets_check_their_variables(self):
        q = self.queues
        q.dead_letter_from_the_function(MALFORMED[:1])
        listed = run(["make", "--no-print-directory", "dlq-list", f"DLQ_URL={q.dlq}"])
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertIn(f"source: {q.source_arn}", listed.stdout)
        self.assertIn("kind=invalid_message", listed.stdout)
        for target in ("dlq-list", "dlq-redrive"):
            usage = run(["make", "--no-print-directory", target], env={"DLQ_URL": "", "STACK": ""})
            self.assertEqual(usage.returncode, 2, usage.stdout)
            self.assertIn(f"STACK or DLQ_URL is not set. Usage: make {target} STACK=name | DLQ_URL=", usage.stderr)
        moved = run(["make", "--no-print-directory", "dlq-redrive", f"DLQ_URL={q.dlq}", "INCLUDE_PERMANENT=1", "YES=1"])
        self.assertIn("moved 1, left 0", moved.stdout, moved.stderr)


if __name__ == "__main__":
    unittest.main()
