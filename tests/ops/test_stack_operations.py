"""The stack-aware operator commands (scripts/stack.py, dlq.py, status.py, operate.py) against
a stack in moto's CloudFormation (stack_fixture.py): STACK= resolution from its outputs,
regions from the resources, one-line errors, the DLQ listing's total and hold, the
redrive's filters and confirmation, pause/resume, reconcile-now, put-token and verify.
Invoke goes to a fake Lambda endpoint (fake_lambda.py) that runs the function binary;
everything else is moto's."""

import json
import os
import sys
import unittest
import uuid

import boto3
from botocore.exceptions import ClientError

from fake_lambda import FakeLambda
from stack_fixture import Stack
from support import ROOT, Double, script, suffix

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import dlq  # noqa: E402
import stack as stack_module  # noqa: E402

SOURCE_ATTRIBUTE = "SourceQueueArn"


def make(*args, env=None, input=None):
    import subprocess
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, input=input, timeout=300)


def no_traceback(test, done):
    test.assertNotIn("Traceback", done.stderr)
    test.assertEqual(len(done.stderr.strip().splitlines()), 1, done.stderr)


class StackTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = Stack()
        cls.outputs = cls.stack.outputs
        cls.sqs = boto3.client("sqs")
        cls.source_arn = cls.outputs["QueueArn"]

    def dead_letter(self, body, klass, **attributes):
        message_attributes = {SOURCE_ATTRIBUTE: {"DataType": "String", "StringValue": self.source_arn}}
        if klass:
            message_attributes["ErrorClass"] = {"DataType": "String", "StringValue": klass}
            message_attributes["Reason"] = {"DataType": "String", "StringValue": f"a {klass} failure"}
        for name, value in attributes.items():
            message_attributes[name] = {"DataType": "String", "StringValue": value}
        return self.sqs.send_message(QueueUrl=self.outputs["DeadLetterQueueUrl"], MessageBody=body,
                                     MessageAttributes=message_attributes)["MessageId"]

    def drain(self, url):
        bodies = []
        while True:
            got = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0,
                                           WaitTimeSeconds=0).get("Messages", [])
            if not got:
                return sorted(bodies)
            for m in got:
                bodies.append(m["Body"])
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    def setUp(self):
        self.drain(self.outputs["DeadLetterQueueUrl"])
        self.drain(self.outputs["QueueUrl"])


class ResolutionTest(StackTest):
    def test_the_stacks_outputs_name_the_tables_queues_function_and_token_parameter(self):
        resources = stack_module.Resources.from_env(stack=self.stack.name, environ={})
        self.assertEqual(resources.orders_table, self.outputs["OrdersTableName"])
        self.assertEqual(resources.sync_table, self.outputs["SyncTableName"])
        self.assertEqual(resources.queue_url, self.outputs["QueueUrl"])
        self.assertEqual(resources.dlq_url, self.outputs["DeadLetterQueueUrl"])
        self.assertEqual(resources.function, self.outputs["FunctionArn"])
        self.assertEqual(resources.token_parameter, self.stack.token_parameter)
        self.assertEqual(resources.region, "us-east-1", "the region of the stack's StackId")
        self.assertEqual(resources.source["sync_table"], f"stack {self.stack.name} output SyncTableName")

    def test_an_explicit_variable_wins_over_the_stacks_output(self):
        resources = stack_module.Resources.from_env(stack=self.stack.name, environ={"SYNC_TABLE": "elsewhere"})
        self.assertEqual(resources.sync_table, "elsewhere")
        self.assertEqual(resources.source["sync_table"], "SYNC_TABLE")
        self.assertEqual(resources.dlq_url, self.outputs["DeadLetterQueueUrl"])

    def test_a_client_is_made_in_the_region_its_resource_names(self):
        self.assertEqual(stack_module.region_of("https://sqs.eu-west-1.amazonaws.com/123456789012/q"), "eu-west-1")
        self.assertEqual(stack_module.region_of("https://ap-southeast-2.queue.amazonaws.com/123456789012/q"),
                         "ap-southeast-2")
        self.assertEqual(stack_module.region_of("arn:aws:lambda:sa-east-1:123456789012:function:f"), "sa-east-1")
        self.assertIsNone(stack_module.region_of("orders"))
        self.assertEqual(stack_module.client("sqs", "https://sqs.eu-west-1.amazonaws.com/1/q").meta.region_name,
                         "eu-west-1")
        # A DLQ in eu-west-1 is listed from a shell whose region is us-east-1.
        eu = boto3.client("sqs", region_name="eu-west-1")
        name = f"eu-dlq-{suffix()}"
        eu.create_queue(QueueName=name)
        url = f"https://sqs.eu-west-1.amazonaws.com/123456789012/{name}"  # as AWS spells it (moto: its endpoint)
        eu.send_message(QueueUrl=url, MessageBody='{"orderId": "in-europe"}')
        done = make("dlq-list", f"DLQ_URL={url}", env={"AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"})
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn('{"orderId": "in-europe"}', done.stdout)

    def test_a_missing_stack_missing_credentials_and_a_refusal_are_one_line_and_exit_1(self):
        missing = make("dlq-list", "STACK=no-such-stack")
        self.assertEqual(missing.returncode, 2, "make passes the script's exit 1 on as 2")
        self.assertIn("error: stack no-such-stack does not exist in us-east-1", missing.stderr)
        self.assertNotIn("Traceback", missing.stderr)
        direct = script("dlq.py", "list", "--stack", "no-such-stack")
        self.assertEqual(direct.returncode, 1)
        no_traceback(self, direct)
        import subprocess
        env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                                 "AWS_SESSION_TOKEN", "AWS_PROFILE")}
        env.update({"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"})
        anonymous = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "status.py"), "--order", "o",
                                    "--stack", self.stack.name], env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(anonymous.returncode, 1)
        self.assertIn("error: no AWS credentials", anonymous.stderr)
        no_traceback(self, anonymous)
        refused = ClientError({"Error": {"Code": "AccessDenied", "Message": "User: arn:aws:sts::1:assumed-role/r/s "
                                         "is not authorized to perform: sqs:receivemessage"}}, "ReceiveMessage")
        self.assertEqual(stack_module.describe_error(refused),
                         "permission denied for ReceiveMessage: User: arn:aws:sts::1:assumed-role/r/s is not "
                         "authorized to perform: sqs:receivemessage")
        nothing = script("operate.py", "pause", env={"STACK": "", "FUNCTION": ""})
        self.assertEqual(nothing.returncode, 1)
        self.assertEqual(nothing.stderr.strip(), "error: FUNCTION not set: give STACK=<stack name> or FUNCTION")


class DlqListTest(StackTest):
    def test_the_listing_shows_every_message_and_the_queues_total_and_releases_them(self):
        bodies = [json.dumps({"orderId": f"list-{i}"}) for i in range(27)]
        for body in bodies:
            self.dead_letter(body, "transient")
        done = make("dlq-list", f"STACK={self.stack.name}")
        self.assertEqual(done.returncode, 0, done.stderr)
        for body in bodies:
            self.assertIn(body, done.stdout)
        self.assertIn("27 message(s) listed; the queue holds 27 (ApproximateNumberOfMessages)", done.stderr)
        self.assertEqual(self.stack.queue_counts(self.outputs["DeadLetterQueueUrl"]), (27, 0),
                         "every message visible again at the end")

    def test_a_held_message_is_held_longer_while_the_run_lasts(self):
        self.dead_letter('{"orderId": "held"}', "transient")
        now = [0.0]
        calls = []

        class Recording:
            def __init__(self, inner):
                self.inner = inner

            def __getattr__(self, name):
                return getattr(self.inner, name)

            def change_message_visibility_batch(self, **kwargs):
                calls.append([e["VisibilityTimeout"] for e in kwargs["Entries"]])
                return self.inner.change_message_visibility_batch(**kwargs)

        held = dlq.Held(Recording(self.sqs), self.outputs["DeadLetterQueueUrl"], clock=lambda: now[0])
        self.assertEqual(len(held.receive(0)), 1)
        self.assertEqual(calls, [], "just received: held for HOLD_SECONDS already")
        now[0] = dlq.HOLD_SECONDS - dlq.EXTEND_MARGIN_SECONDS + 1
        held.extend()
        self.assertEqual(calls, [[dlq.HOLD_SECONDS]], "extended before its hold ends")
        held.extend()
        self.assertEqual(len(calls), 1, "not again until the new hold nears its end")
        self.assertEqual(self.stack.queue_counts(self.outputs["DeadLetterQueueUrl"]), (0, 1))
        held.hold_all(dlq.CONFIRM_HOLD_SECONDS)
        self.assertEqual(calls[-1], [dlq.CONFIRM_HOLD_SECONDS], "held while the operator answers")
        now[0] += dlq.CONFIRM_HOLD_SECONDS - dlq.EXTEND_MARGIN_SECONDS - 1
        held.extend()
        self.assertEqual(len(calls), 2, "not due yet")
        held.release()
        self.assertEqual(calls[-1], [0])
        self.assertEqual(self.stack.queue_counts(self.outputs["DeadLetterQueueUrl"]), (1, 0))


class RedriveTest(StackTest):
    def seed(self):
        ids = {}
        for klass in ("transient", "configuration", "permanent", None):
            ids[klass or "none"] = self.dead_letter(json.dumps({"orderId": f"o-{klass}"}), klass)
        return ids

    def test_a_class_filter_moves_only_that_class_after_a_confirmation_naming_the_destination(self):
        self.seed()
        declined = make("dlq-redrive", f"STACK={self.stack.name}", "CLASS=transient,configuration", input="n\n")
        self.assertNotEqual(declined.returncode, 0)
        # The destination is the URL SQS gives for the messages' SourceQueueArn (moto: its endpoint's).
        self.assertRegex(declined.stderr, rf"Move 2 of 4 message\(s\) from {self.outputs['DeadLetterQueueUrl']} to "
                                          rf"\S+/123456789012/{self.outputs['QueueUrl'].rsplit('/', 1)[1]} \(2\)\? \[y/N\]")
        self.assertIn("not confirmed: moved nothing", declined.stdout)
        self.assertEqual(self.stack.queue_counts(self.outputs["DeadLetterQueueUrl"]), (4, 0))

        done = make("dlq-redrive", f"STACK={self.stack.name}", "CLASS=transient,configuration", input="y\n")
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        print(f"\n{done.stderr}{done.stdout}", end="")
        self.assertIn("moved 2, left 2 in the DLQ, 0 failed (of 4 in the queue)", done.stdout)
        self.assertRegex(done.stdout, r"left     \S+: class permanent, not configuration,transient")
        self.assertEqual(self.drain(self.outputs["QueueUrl"]), ['{"orderId": "o-configuration"}',
                                                                '{"orderId": "o-transient"}'])
        self.assertEqual(self.drain(self.outputs["DeadLetterQueueUrl"]), ['{"orderId": "o-None"}',
                                                                          '{"orderId": "o-permanent"}'])

    def test_permanent_failures_stay_unless_included_and_ids_select_messages(self):
        ids = self.seed()
        everything = make("dlq-redrive", f"STACK={self.stack.name}", "YES=1")
        self.assertEqual(everything.returncode, 0, everything.stderr)
        self.assertIn("moved 3, left 1 in the DLQ", everything.stdout)
        self.assertIn(f"left     {ids['permanent']}: permanent failure: it fails again unless its cause was fixed "
                      "(--include-permanent to move it)", everything.stdout)
        refused = make("dlq-redrive", f"STACK={self.stack.name}", "CLASS=permanent", "YES=1")
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("add --include-permanent (INCLUDE_PERMANENT=1) to move them", refused.stderr)
        self.drain(self.outputs["QueueUrl"])

        ids = self.seed()
        original = self.dead_letter('{"orderId": "by-original"}', "transient", OriginalMessageId="first-id")
        chosen = make("dlq-redrive", f"STACK={self.stack.name}", f"IDS={ids['permanent']},first-id",
                      "INCLUDE_PERMANENT=1", "YES=1")
        self.assertEqual(chosen.returncode, 0, chosen.stderr)
        self.assertIn("moved 2, left 4 in the DLQ", chosen.stdout)
        self.assertIn(f"moved    {original} ->", chosen.stdout)
        self.assertEqual(self.drain(self.outputs["QueueUrl"]), ['{"orderId": "by-original"}',
                                                                '{"orderId": "o-permanent"}'])

    def test_a_queue_policy_that_denies_the_caller_stops_the_redrive_before_anything_moves(self):
        self.seed()
        caller = boto3.client("sts").get_caller_identity()["Arn"]

        def deny_all_but(*principals):
            self.sqs.set_queue_attributes(QueueUrl=self.outputs["QueueUrl"], Attributes={"Policy": json.dumps({
                "Version": "2012-10-17", "Statement": [{
                    "Sid": "NobodyElseSends", "Effect": "Deny", "Principal": "*", "Action": "sqs:SendMessage",
                    "Resource": self.source_arn,
                    "Condition": {"ArnNotEquals": {"aws:PrincipalArn": list(principals)}}}]})})

        deny_all_but("arn:aws:iam::123456789012:role/checkout", "arn:aws:iam::123456789012:role/fn")
        try:
            refused = make("dlq-redrive", f"STACK={self.stack.name}", "YES=1")
            after_refusal = self.stack.queue_counts(self.outputs["DeadLetterQueueUrl"])
            deny_all_but("arn:aws:iam::123456789012:role/checkout", caller)
            allowed = make("dlq-redrive", f"STACK={self.stack.name}", "CLASS=transient", "YES=1")
        finally:
            self.sqs.set_queue_attributes(QueueUrl=self.outputs["QueueUrl"], Attributes={"Policy": ""})
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn(f"queue policy (NobodyElseSends) refuses SendMessage to {caller}: only "
                      "arn:aws:iam::123456789012:role/checkout, arn:aws:iam::123456789012:role/fn may send: "
                      f"deploy with OperatorRoleArn={caller}", refused.stderr)
        self.assertIn("Nothing moved.", refused.stderr)
        self.assertEqual(after_refusal, (4, 0), "nothing moved, every message released")
        self.assertEqual(allowed.returncode, 0, allowed.stderr)
        self.assertIn("moved 1, left 3 in the DLQ", allowed.stdout)

    def test_a_role_is_matched_by_account_and_name_whatever_its_path(self):
        self.assertTrue(dlq.same_principal("arn:aws:iam::123456789012:role/ops/on-call",
                                           "arn:aws:iam::123456789012:role/on-call"))
        self.assertFalse(dlq.same_principal("arn:aws:iam::123456789012:role/ops/on-call",
                                            "arn:aws:iam::210987654321:role/on-call"))
        self.assertFalse(dlq.same_principal("arn:aws:iam::123456789012:role/checkout",
                                            "arn:aws:iam::123456789012:role/on-call"))

    def test_a_refused_send_stops_the_run_and_names_the_operator_role_to_set(self):
        self.seed()

        class Refusing:
            def __init__(self, inner):
                self.inner = inner

            def __getattr__(self, name):
                return getattr(self.inner, name)

            def send_message(self, **kwargs):
                raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access to the resource is denied."}},
                                  "SendMessage")

        with self.assertRaises(stack_module.OperatorError) as raised:
            dlq.redrive(Refusing(self.sqs), self.outputs["DeadLetterQueueUrl"], max_per_second=0, wait_seconds=0,
                        out=lambda line: None)
        self.assertIn("deploy with OperatorRoleArn=", str(raised.exception))
        self.assertEqual(self.stack.queue_counts(self.outputs["DeadLetterQueueUrl"]), (4, 0),
                         "nothing deleted, everything released")


class BackfillTest(StackTest):
    def test_backfill_finds_the_orders_table_and_the_queue_in_the_stacks_outputs(self):
        dynamodb = boto3.client("dynamodb")
        table = self.outputs["OrdersTableName"]
        discount = "9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10"
        dynamodb.put_item(TableName=table, Item={"id": {"S": "ord_stack_1"}, "discountId": {"S": discount},
                                                 "discountCode": {"S": "SUMMER25"}})
        dynamodb.put_item(TableName=table, Item={"id": {"S": "ord_stack_2"}, "discountId": {"S": discount},
                                                 "discountCode": {"S": "SUMMER25"},
                                                 "polarDiscountSynced": {"BOOL": True}})
        done = make("backfill", f"STACK={self.stack.name}", "APPLY=1", env={"ORDERS_TABLE": "", "QUEUE_URL": ""})
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        sent = [json.loads(body) for body in self.drain(self.outputs["QueueUrl"])]
        self.assertIn({"orderId": "ord_stack_1", "discountId": discount, "discountCode": "SUMMER25"}, sent)
        self.assertNotIn("ord_stack_2", [m["orderId"] for m in sent])


class FunctionOperationsTest(StackTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.double = Double()
        cls.stack.function_env.update({"POLAR_API_URL": cls.double.api_url, "POLAR_ACCESS_TOKEN": cls.double.token})
        cls.fake = FakeLambda(os.environ["AWS_ENDPOINT_URL"], cls.stack.function_env)
        cls.env = {"AWS_ENDPOINT_URL_LAMBDA": cls.fake.url}

    @classmethod
    def tearDownClass(cls):
        cls.fake.stop()
        cls.double.stop()

    def test_pause_disables_the_queue_and_stream_triggers_and_resume_enables_them(self):
        paused = make("pause", f"STACK={self.stack.name}", env=self.env)
        self.assertEqual(paused.returncode, 0, paused.stderr)
        print(f"\n{paused.stdout}", end="")
        self.assertEqual(self.stack.mapping_states(), [("dynamodb", "Disabled"), ("sqs", "Disabled")])
        self.assertIn("paused: messages wait in the queue", paused.stdout)
        resumed = make("resume", f"STACK={self.stack.name}", env=self.env)
        self.assertEqual(resumed.returncode, 0, resumed.stderr)
        self.assertEqual(self.stack.mapping_states(), [("dynamodb", "Enabled"), ("sqs", "Enabled")])

    def test_reconcile_now_invokes_the_function_with_the_scheduled_event_and_shows_its_answer(self):
        done = make("reconcile-now", f"STACK={self.stack.name}", env=self.env)
        self.assertEqual(done.returncode, 0, done.stderr)
        print(f"\n{done.stdout}", end="")
        name, event = self.fake.invocations[-1]
        self.assertEqual(name, self.outputs["FunctionArn"])
        self.assertEqual((event["source"], event["detail-type"], event["detail"]), ("aws.events", "Scheduled Event", {}))
        answer = json.loads(done.stdout.split(": ", 1)[1])
        self.assertIsInstance(answer, dict)
        self.assertNotIn("batchItemFailures", answer, "the reconciliation's counts, not a batch response")

    def test_put_token_stores_the_token_from_stdin_as_a_secure_string_and_status_reads_polar_with_it(self):
        stored = make("put-token", f"STACK={self.stack.name}", input=f"{self.double.token}\n")
        self.assertEqual(stored.returncode, 0, stored.stderr)
        self.assertNotIn(self.double.token, stored.stdout + stored.stderr)
        self.assertIn(f"stored the token in SSM parameter {self.stack.token_parameter} (SecureString", stored.stdout)
        parameter = boto3.client("ssm").get_parameter(Name=self.stack.token_parameter, WithDecryption=True)["Parameter"]
        self.assertEqual((parameter["Type"], parameter["Value"]), ("SecureString", self.double.token))

        discount = str(uuid.uuid4())
        self.double.seed(discount, "STACKED", 7)
        clean = {"POLAR_ACCESS_TOKEN": "", "POLAR_READ_TOKEN": "", "POLAR_API_URL": self.double.api_url}
        done = make("status", f"STACK={self.stack.name}", f"DISCOUNT={discount}", env=clean)
        self.assertEqual(done.returncode, 0, done.stderr)
        print(f"\n{done.stdout}", end="")
        self.assertIn(f"token: SSM parameter {self.stack.token_parameter} (the function's own", done.stdout)
        self.assertIn("polar:    STACKED (STACKED): max_redemptions=7", done.stdout)
        read_only = make("status", f"STACK={self.stack.name}", f"DISCOUNT={discount}",
                         env={**clean, "POLAR_READ_TOKEN": self.double.token})
        self.assertIn("token: POLAR_READ_TOKEN (a read-only token)", read_only.stdout)
        self.assertIn("max_redemptions=7", read_only.stdout)
        order = make("status", f"STACK={self.stack.name}", "ORDER=nowhere", env=clean)
        self.assertIn("order nowhere: not in the orders table", order.stdout)

    def test_verify_checks_the_deployment_and_fails_on_a_disabled_trigger_or_an_alarm(self):
        boto3.client("ssm").put_parameter(Name=self.stack.token_parameter, Value=self.double.token,
                                          Type="SecureString", Overwrite=True)
        done = make("verify", f"STACK={self.stack.name}", env=self.env)
        print(f"\n{done.stdout}", end="")
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        for line in (f"ok    stack {self.stack.name}: CREATE_COMPLETE",
                     f"ok    queue_url: {self.outputs['QueueUrl']}",
                     f"ok    sync_table: {self.outputs['SyncTableName']} ACTIVE",
                     f"ok    function: {self.outputs['FunctionArn']}",
                     f"ok    token parameter {self.stack.token_parameter}: SecureString",
                     "ok    SQS queue mapping", "ok    DynamoDB stream mapping",
                     "(rate(5 minutes)): ENABLED",
                     f"ok    alarm {self.stack.alarm_names[0]}: OK",
                     "email oncall@example.com confirmed",
                     "ok    ConfigurationErrors over the last 1 h: 0",
                     "note  ShadowMode=true: the function reads and plans but writes nothing",
                     "note  Polar API: https://sandbox-api.polar.sh/v1",
                     "ok    reconciliation invoked: {",
                     f"verify {self.stack.name}: ok"):
            self.assertIn(line, done.stdout)

        boto3.client("cloudwatch").set_alarm_state(AlarmName=self.stack.alarm_names[1], StateValue="ALARM",
                                                   StateReason="Threshold Crossed: 1 datapoint [3.0]")
        make("pause", f"STACK={self.stack.name}", env=self.env)
        try:
            failing = make("verify", f"STACK={self.stack.name}", "NO_INVOKE=1", env=self.env)
        finally:
            make("resume", f"STACK={self.stack.name}", env=self.env)
            boto3.client("cloudwatch").set_alarm_state(AlarmName=self.stack.alarm_names[1], StateValue="OK",
                                                       StateReason="test")
        self.assertNotEqual(failing.returncode, 0)
        self.assertIn("FAIL  SQS queue mapping", failing.stdout)
        self.assertIn(f"FAIL  alarm {self.stack.alarm_names[1]}: ALARM: Threshold Crossed", failing.stdout)
        self.assertIn("note  reconciliation not invoked (--no-invoke)", failing.stdout)
        self.assertIn("3 check(s) failed", failing.stdout)


if __name__ == "__main__":
    unittest.main()
