"""Seeds and shows the local run's state: the orders table in moto and the Polar double.

Used by scripts/local.sh; runs in the project's .venv (boto3 comes with moto).
"""

import argparse
import json
import os
import sys
import urllib.error
import urllib.request

import boto3

QUEUE_NAME = "polar-discount-sync"
DLQ_NAME = "polar-discount-sync-dlq"


def records_in(event_path):
    with open(event_path) as f:
        return json.load(f).get("Records", [])


def is_stream_record(record):
    return record.get("eventSource") == "aws:dynamodb"


def order_id_of(record):
    """The order an SQS record's body or a stream record's keys name, or None."""
    try:
        if is_stream_record(record):
            return record["dynamodb"]["Keys"]["id"]["S"]
        return json.loads(record["body"])["orderId"]
    except (ValueError, KeyError, TypeError):
        return None


def orders_in(event_path):
    """The orderIds named by an event file's records, in order, without repeats (none for
    the scheduled reconciliation event)."""
    seen = []
    for record in records_in(event_path):
        order_id = order_id_of(record)
        if order_id is not None and order_id not in seen:
            seen.append(order_id)
    return seen


def stream_orders(event_path, known):
    """The orders a stream event's records show as written (their new images), for those
    the fixtures do not have: the table must hold what its stream says was written."""
    items = {}
    for record in records_in(event_path):
        image = record.get("dynamodb", {}).get("NewImage") if is_stream_record(record) else None
        order_id = order_id_of(record)
        if image and order_id not in known and record.get("eventName") != "REMOVE":
            items[order_id] = image
    return list(items.values())


def create_table(dynamodb, name, key):
    try:
        dynamodb.create_table(
            TableName=name,
            AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
            KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
    except dynamodb.exceptions.ResourceInUseException:
        pass


def polar_admin(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{base}/__double{path}", data=data, method=method,
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise


def create_queues(sqs):
    """The queue the sample events name (eventSourceARN) and its dead-letter queue."""
    dlq_url = sqs.create_queue(QueueName=DLQ_NAME)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.create_queue(
        QueueName=QUEUE_NAME,
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 33})},
    )


def seed(args, dynamodb, fixtures):
    create_table(dynamodb, os.environ["ORDERS_TABLE"], "id")
    create_table(dynamodb, os.environ["SYNC_TABLE"], "pk")
    create_queues(boto3.client("sqs"))
    for order in fixtures["orders"]:
        dynamodb.put_item(
            TableName=os.environ["ORDERS_TABLE"],
            Item={k: {"S": v} for k, v in order.items()},
        )
    from_stream = stream_orders(args.event, {order["id"] for order in fixtures["orders"]})
    for item in from_stream:
        dynamodb.put_item(TableName=os.environ["ORDERS_TABLE"], Item=item)
    for discount in fixtures["discounts"]:
        polar_admin(args.polar, "PUT", f"/discounts/{discount['id']}", discount)
    print(f"seeded {len(fixtures['orders']) + len(from_stream)} orders and {len(fixtures['discounts'])} discounts")


def show_dead_letters():
    from dlq import list_messages

    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=DLQ_NAME)["QueueUrl"]
    for letter in list_messages(sqs, url, limit=20, wait_seconds=0)["messages"]:
        print(f"dead-lettered {letter['OriginalMessageId']}: {letter['ErrorClass']}/{letter['ErrorKind']}: "
              f"{letter['Reason']}")


def show(args, dynamodb, label):
    print(f"--- state {label}")
    discount_ids = []
    for order_id in orders_in(args.event):
        item = dynamodb.get_item(
            TableName=os.environ["ORDERS_TABLE"], Key={"id": {"S": order_id}}, ConsistentRead=True,
        ).get("Item")
        if item is None:
            print(f"order {order_id}: not in the orders table")
            continue
        if "discountId" not in item:
            print(f"order {order_id}: no discount")
            continue
        discount_ids.append(item["discountId"]["S"])
        synced = item.get("polarDiscountSynced", {}).get("BOOL", False)
        if synced:
            print(f"order {order_id}: polarDiscountSynced=true "
                  f"polarDiscountSyncAction={item['polarDiscountSyncAction']['S']} "
                  f"polarDiscountSyncedAt={item['polarDiscountSyncedAt']['S']}")
        else:
            print(f"order {order_id}: not synced")
    for discount_id in dict.fromkeys(discount_ids):
        discount = polar_admin(args.polar, "GET", f"/discounts/{discount_id}")
        if discount is None:
            print(f"discount {discount_id}: deleted on Polar")
        else:
            limit = discount["max_redemptions"]
            print(f"discount {discount_id} ({discount['code']}): max_redemptions="
                  f"{'unlimited' if limit is None else limit}")
    show_dead_letters()


def take_relayed(out_path):
    """Receives what the stream relay sent to the queue, prints it, and writes it to
    `out_path` as the SQS event Lambda's event source would deliver; the messages are
    deleted, as the event source does once the function acknowledges them."""
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=QUEUE_NAME)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    records = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"],
                                       MessageAttributeNames=["All"]).get("Messages", [])
        if not messages:
            break
        for message in messages:
            print(f"relayed message {message['MessageId']}: {message['Body']}")
            records.append({
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": os.environ.get("AWS_REGION", "us-east-1"),
            })
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    if not records:
        print("no message was relayed")
    with open(out_path, "w") as f:
        json.dump({"Records": records}, f, indent=2)
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--polar", required=True, help="the Polar double's root URL")
    parser.add_argument("--fixtures", required=True)
    parser.add_argument("--event", required=True)
    parser.add_argument("command", choices=["seed", "show", "relayed"])
    parser.add_argument("label", nargs="?", default="",
                        help="show: what the state is after; relayed: the SQS event file to write")
    args = parser.parse_args()
    if args.command == "relayed":
        return take_relayed(args.label)
    with open(args.fixtures) as f:
        fixtures = json.load(f)
    dynamodb = boto3.client("dynamodb")
    if args.command == "seed":
        seed(args, dynamodb, fixtures)
    else:
        show(args, dynamodb, args.label)


if __name__ == "__main__":
    sys.exit(main())
