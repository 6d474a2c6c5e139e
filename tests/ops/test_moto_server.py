"""scripts/moto_server.py backs a transaction up item by item instead of table by table:
a cancelled transaction must still leave every item it named as it was, and a committed
one must still apply every write. It also gives moto's SQS a cheaper clock: visibility and
delays must still take effect when they should. And it parses each expression text once:
every request must still be checked and applied with its own names and values."""

import time
import unittest

import boto3

from support import suffix


def s(value):
    return {"S": value}


class TransactionsBackUpOnlyTheirItems(unittest.TestCase):
    def setUp(self):
        self.dynamodb = boto3.client("dynamodb")
        self.table = f"moto-transactions-{suffix()}"
        self.ranged = f"moto-transactions-ranged-{suffix()}"
        self.dynamodb.create_table(
            TableName=self.table, BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
        self.dynamodb.create_table(
            TableName=self.ranged, BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                       {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                  {"AttributeName": "sk", "AttributeType": "S"}])
        for pk in ("updated", "deleted", "refused", "bystander"):
            self.dynamodb.put_item(TableName=self.table, Item={"pk": s(pk), "v": s("before")})
        self.dynamodb.put_item(TableName=self.ranged,
                               Item={"pk": s("p"), "sk": s("updated"), "v": s("before")})

    def items(self):
        plain = self.dynamodb.scan(TableName=self.table)["Items"]
        ranged = self.dynamodb.scan(TableName=self.ranged)["Items"]
        return (sorted((i["pk"]["S"], i["v"]["S"]) for i in plain),
                sorted((i["sk"]["S"], i["v"]["S"]) for i in ranged))

    def writes(self, refused_condition):
        def set_v(table, key):
            return {"Update": {"TableName": table, "Key": key, "UpdateExpression": "SET v = :v",
                               "ExpressionAttributeValues": {":v": s("after")}}}
        refused = set_v(self.table, {"pk": s("refused")})
        refused["Update"]["ConditionExpression"] = refused_condition
        refused["Update"]["ExpressionAttributeValues"][":expected"] = s("before")
        return [
            set_v(self.table, {"pk": s("updated")}),
            {"Put": {"TableName": self.table, "Item": {"pk": s("created"), "v": s("after")}}},
            {"Delete": {"TableName": self.table, "Key": {"pk": s("deleted")}}},
            set_v(self.ranged, {"pk": s("p"), "sk": s("updated")}),
            {"Put": {"TableName": self.ranged,
                     "Item": {"pk": s("p"), "sk": s("created"), "v": s("after")}}},
            refused,
        ]

    def test_a_cancelled_transaction_leaves_every_item_it_named_as_it_was(self):
        before = self.items()
        with self.assertRaises(self.dynamodb.exceptions.TransactionCanceledException) as raised:
            self.dynamodb.transact_write_items(TransactItems=self.writes("v <> :expected"))
        reasons = [r["Code"] for r in raised.exception.response["CancellationReasons"]]
        self.assertEqual(reasons, ["None"] * 5 + ["ConditionalCheckFailed"])
        self.assertEqual(self.items(), before)

    def test_a_committed_transaction_applies_every_write(self):
        self.dynamodb.transact_write_items(TransactItems=self.writes("v = :expected"))
        self.assertEqual(self.items(), (
            [("bystander", "before"), ("created", "after"), ("refused", "after"),
             ("updated", "after")],
            [("created", "after"), ("updated", "after")],
        ))

    def test_a_cancelled_transaction_leaves_later_writes_possible(self):
        with self.assertRaises(self.dynamodb.exceptions.TransactionCanceledException):
            self.dynamodb.transact_write_items(TransactItems=self.writes("v <> :expected"))
        self.dynamodb.update_item(TableName=self.table, Key={"pk": s("updated")},
                                  UpdateExpression="SET v = :v",
                                  ExpressionAttributeValues={":v": s("later")})
        self.assertIn(("updated", "later"), self.items()[0])


class ExpressionsParsedOnceTakeEachRequestsNamesAndValues(unittest.TestCase):
    CONDITION = "#v = :expected"
    UPDATE = "SET #v = :new"

    def setUp(self):
        self.dynamodb = boto3.client("dynamodb")
        self.table = f"moto-expressions-{suffix()}"
        self.dynamodb.create_table(
            TableName=self.table, BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
        self.dynamodb.put_item(TableName=self.table,
                               Item={"pk": s("a"), "v": s("1"), "w": s("1")})

    def update(self, attribute, expected, new, transact=False):
        update = {"TableName": self.table, "Key": {"pk": s("a")},
                  "UpdateExpression": self.UPDATE, "ConditionExpression": self.CONDITION,
                  "ExpressionAttributeNames": {"#v": attribute},
                  "ExpressionAttributeValues": {":expected": s(expected), ":new": s(new)}}
        if transact:
            self.dynamodb.transact_write_items(TransactItems=[{"Update": update}])
        else:
            self.dynamodb.update_item(**update)

    def item(self):
        item = self.dynamodb.get_item(TableName=self.table, Key={"pk": s("a")})["Item"]
        return item["v"]["S"], item["w"]["S"]

    def test_the_same_texts_are_checked_against_each_requests_values(self):
        self.update("v", expected="1", new="2")
        with self.assertRaises(self.dynamodb.exceptions.ConditionalCheckFailedException):
            self.update("v", expected="1", new="3")
        self.update("v", expected="2", new="3")
        self.assertEqual(self.item(), ("3", "1"))

    def test_the_same_texts_resolve_each_requests_names(self):
        self.update("v", expected="1", new="2")
        self.update("w", expected="1", new="5")
        self.assertEqual(self.item(), ("2", "5"))

    def test_a_transaction_applies_the_same_texts_with_its_own_values(self):
        self.update("v", expected="1", new="2")
        with self.assertRaises(self.dynamodb.exceptions.TransactionCanceledException):
            self.update("v", expected="1", new="4", transact=True)
        self.update("v", expected="2", new="4", transact=True)
        self.assertEqual(self.item(), ("4", "1"))


class QueuesKeepTheirTiming(unittest.TestCase):
    def setUp(self):
        self.sqs = boto3.client("sqs")
        self.url = self.sqs.create_queue(
            QueueName=f"moto-timing-{suffix()}", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]

    def receive(self):
        messages = self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
            MessageSystemAttributeNames=["All"]).get("Messages", [])
        return sorted(m["Body"] for m in messages)

    def test_a_received_message_is_hidden_until_its_visibility_timeout_ends(self):
        self.sqs.send_message(QueueUrl=self.url, MessageBody="now")
        self.sqs.send_message(QueueUrl=self.url, MessageBody="later", DelaySeconds=1)
        self.assertEqual(self.receive(), ["now"])
        self.assertEqual(self.receive(), [])
        time.sleep(1.2)
        self.assertEqual(self.receive(), ["later", "now"])
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.url, AttributeNames=["All"])["Attributes"]
        self.assertEqual(attributes["ApproximateNumberOfMessagesNotVisible"], "2")
        self.assertEqual(attributes["VisibilityTimeout"], "1")


if __name__ == "__main__":
    unittest.main()
