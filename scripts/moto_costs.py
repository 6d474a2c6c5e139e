"""What one request costs moto, which serves one at a time (scripts/moto_server.py): the
floor under every bench number that waits on DynamoDB or SQS. Prints the mean time of each
request kind next to a table of 500 orders and a queue of 100 messages.
Usage: scripts/with-moto.sh .venv/bin/python scripts/moto_costs.py"""

import time

import boto3

ORDERS = 500
QUEUED = 100


def mean_ms(call, times):
    started = time.perf_counter()
    for i in range(times):
        call(i)
    return (time.perf_counter() - started) / times * 1000


def main():
    dynamodb = boto3.client("dynamodb")
    table = f"moto-costs-{int(time.time())}"
    dynamodb.create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
    for i in range(ORDERS):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"o{i}"}, "d": {"S": "x"}})

    def update(key, condition="attribute_exists(pk)"):
        return {"TableName": table, "Key": {"pk": {"S": key}}, "UpdateExpression": "SET c = :c",
                "ConditionExpression": condition, "ExpressionAttributeValues": {":c": {"S": "y"}}}

    def transaction(items):
        return lambda i: dynamodb.transact_write_items(TransactItems=[
            {"Update": update(f"o{(i * items + j) % ORDERS}")} for j in range(items)])

    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName=f"moto-costs-{int(time.time())}",
                             Attributes={"VisibilityTimeout": "0"})["QueueUrl"]
    for batch in range(QUEUED // 10):
        sqs.send_message_batch(QueueUrl=queue, Entries=[
            {"Id": str(j), "MessageBody": "x" * 300} for j in range(10)])

    costs = {
        "GetItem": mean_ms(lambda i: dynamodb.get_item(
            TableName=table, Key={"pk": {"S": f"o{i}"}}), 100),
        "UpdateItem (conditional)": mean_ms(lambda i: dynamodb.update_item(
            **update(f"o{i}")), 100),
        "TransactWriteItems, 2 items": mean_ms(transaction(2), 50),
        "TransactWriteItems, 11 items": mean_ms(transaction(11), 20),
        f"ReceiveMessage, 10 of {QUEUED} queued": mean_ms(lambda i: sqs.receive_message(
            QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0,
            MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"]), 20),
    }
    for kind, ms in costs.items():
        print(f"{kind:<36} {ms:6.1f} ms")
    dynamodb.delete_table(TableName=table)
    sqs.delete_queue(QueueUrl=queue)


if __name__ == "__main__":
    main()
