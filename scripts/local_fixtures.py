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


def orders_in(event_path):
    """The orderIds named by an event file's records, in order, without repeats (none for
    the scheduled reconciliation event)."""
    with open(event_path) as f:
        records = json.load(f).get("Records", [])
    seen = []
    for record in records:
        try:
            order_id = json.loads(record["body"])["orderId"]
        except (ValueError, KeyError, TypeError):
            continue
        if order_id not in seen:
            seen.append(order_id)
    return seen


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
    for discount in fixtures["discounts"]:
        polar_admin(args.polar, "PUT", f"/discounts/{discount['id']}", discount)
    print(f"seeded {len(fixtures['orders'])} orders and {len(fixtures['discounts'])} discounts")


def show_dead_letters():
    from dlq import list_messages

    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=DLQ_NAME)["QueueUrl"]
    for letter in list_messages(sqs, url, limit=20, wait_seconds=0):
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


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--polar", required=True, help="the Polar double's root URL")
    parser.add_argument("--fixtures", required=True)
    parser.add_argument("--event", required=True)
    parser.add_argument("command", choices=["seed", "show"])
    parser.add_argument("label", nargs="?", default="")
    args = parser.parse_args()
    with open(args.fixtures) as f:
        fixtures = json.load(f)
    dynamodb = boto3.client("dynamodb")
    if args.command == "seed":
        seed(args, dynamodb, fixtures)
    else:
        show(args, dynamodb, args.label)


if __name__ == "__main__":
    sys.exit(main())
