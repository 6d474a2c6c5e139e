"""`make status` against moto and the Polar double. The lease and the journal it shows are
the function's own: the binary is run with a Polar PATCH that outlasts its deadline, which
leaves exactly what a crash mid-write leaves (the lease, the journal, the claims)."""

import json
import time
import unittest
import uuid

from support import Double, create_tables, invoke_function, run, script, sqs_record, suffix

SOURCE_ARN = "arn:aws:sqs:us-east-1:123456789012:status-test"


class StatusTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.double = Double()
        s = suffix()
        cls.env = {"ORDERS_TABLE": f"orders-{s}", "SYNC_TABLE": f"sync-{s}",
                   "POLAR_API_URL": cls.double.api_url, "POLAR_ACCESS_TOKEN": cls.double.token}
        cls.dynamodb = create_tables(cls.env["ORDERS_TABLE"], cls.env["SYNC_TABLE"])
        cls.discount, cls.code = str(uuid.uuid4()), f"ST{s.upper()}"
        cls.double.seed(cls.discount, cls.code, 3)
        cls.synced, cls.pending = f"synced-{s}", f"pending-{s}"
        for order in (cls.synced, cls.pending):
            cls.dynamodb.put_item(TableName=cls.env["ORDERS_TABLE"], Item={
                "id": {"S": order}, "discountId": {"S": cls.discount}, "discountCode": {"S": cls.code}})
        function_env = {**cls.env, "MAX_RECEIVE_COUNT": "5"}

        def message(order):
            body = json.dumps({"orderId": order, "discountId": cls.discount, "discountCode": cls.code})
            return {"Records": [sqs_record(f"msg-{order}", body, SOURCE_ARN)]}

        # A real sync: 3 -> 2, the order marked, the lease given up.
        answer = invoke_function(message(cls.synced), function_env)
        assert answer == {"batchItemFailures": []}, answer
        # A PATCH answered after the invocation's deadline: the outcome is unknown and there
        # is no time left to read it back, so the lease and the journal stay for the next holder.
        cls.double.admin("POST", "/faults", {"method": "PATCH", "discount_id": cls.discount, "times": 1,
                                             "action": {"kind": "delay", "millis": 6000}})
        answer = invoke_function(message(cls.pending), function_env, timeout_secs=4)
        assert answer["batchItemFailures"], answer
        # Read at once, while the lease is live (it expires 10 s after the deadline).
        cls.pending_order = cls.status_of("--order", cls.pending)
        cls.pending_order_json = cls.status_of("--order", cls.pending, "--json")
        cls.pending_discount = cls.status_of("--discount", cls.discount)
        cls.pending_discount_json = cls.status_of("--discount", cls.discount, "--json")

    @classmethod
    def tearDownClass(cls):
        cls.double.stop()

    @classmethod
    def status_of(cls, *args, env=None):
        return script("status.py", *args, env={**cls.env, **(env or {})})

    def status(self, *args, env=None):
        return self.status_of(*args, env=env)

    def test_a_synced_order_shows_its_action_and_no_claim(self):
        done = self.status("--order", self.synced)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(f"discount: {self.discount} (code {self.code})", done.stdout)
        self.assertRegex(done.stdout, r"synced:   yes: decremented at \d{4}-\d\d-\d\dT")
        self.assertIn("claim:    none", done.stdout)
        self.assertIn("journal:  no journal holds it", done.stdout)

    def test_an_order_in_a_journal_shows_the_claim_the_journal_and_the_live_lease(self):
        done = self.pending_order
        self.assertEqual(done.returncode, 0, done.stderr)
        print(f"\n{done.stdout}", end="")
        self.assertIn("synced:   no", done.stdout)
        self.assertRegex(done.stdout, r"claim:    \S+ \(the discount's current lease: live\)")
        self.assertIn(f"held by the discount's journal: set max_redemptions 2 -> 1, orders {self.pending}",
                      done.stdout)
        self.assertRegex(done.stdout, r"lease:    held by \S+ until \S+ \(live, [\d.]+ s left\)")
        report = json.loads(self.pending_order_json.stdout)
        self.assertTrue(report["inJournal"])
        self.assertEqual(report["order"]["claim"], report["discount"]["lease"]["holder"])
        self.assertEqual(report["discount"]["journal"],
                         {"orders": [self.pending], "read": 2, "intent": "set_max_redemptions", "target": 1})

    def test_a_discount_shows_its_lease_its_journal_and_polars_discount(self):
        done = self.pending_discount
        self.assertEqual(done.returncode, 0, done.stderr)
        print(f"\n{done.stdout}", end="")
        self.assertRegex(done.stdout, r"lease:    held by \S+ until \S+ \(live, ")
        self.assertIn(f"journal:  set max_redemptions 2 -> 1; orders {self.pending}", done.stdout)
        self.assertIn(f"{self.pending}: not synced", done.stdout)
        # The delayed PATCH may have landed by now: 2, or 1 once it did.
        self.assertRegex(done.stdout, rf"polar:    {self.code} \({self.code}\): max_redemptions=[12], "
                                      r"redemptions_count=0")
        report = json.loads(self.pending_discount_json.stdout)
        self.assertEqual(report["polar"]["state"], "found")
        self.assertTrue(report["syncItem"]["lease"]["live"])

    def test_an_expired_lease_is_called_expired(self):
        other = str(uuid.uuid4())
        self.dynamodb.put_item(TableName=self.env["SYNC_TABLE"], Item={
            "pk": {"S": f"discount#{other}"}, "leaseToken": {"S": "gone-holder"},
            "leaseExpiresAtMs": {"N": str(int(time.time() * 1000) - 90_000)}})
        done = self.status("--discount", other)
        self.assertIn("held by gone-holder until", done.stdout)
        # 90 s ago when written, plus however long the status script took to start.
        self.assertRegex(done.stdout, r"\(expired (9\d|1\d\d)\.\d s ago")
        self.assertIn("journal:  none", done.stdout)

    def test_a_deleted_discount_and_a_wrong_url_are_told_apart(self):
        gone = str(uuid.uuid4())
        done = self.status("--discount", gone)
        self.assertIn("sync item: none", done.stdout)
        self.assertIn("polar:    deleted (404 ResourceNotFound)", done.stdout)
        wrong = self.status("--discount", gone, env={"POLAR_API_URL": self.double.root + "/v2"})
        self.assertIn("HTTP 404: not Polar's ResourceNotFound: check POLAR_API_URL", wrong.stdout)
        self.assertEqual(wrong.returncode, 1)

    def test_without_a_token_polar_is_not_asked_and_it_says_so(self):
        done = self.status("--discount", self.discount, env={"POLAR_ACCESS_TOKEN": "", "POLAR_API_URL": "",
                                                             "POLAR_READ_TOKEN": "", "STACK": "", "TOKEN_PARAMETER": ""})
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("no token (POLAR_READ_TOKEN, POLAR_ACCESS_TOKEN, or STACK=/TOKEN_PARAMETER for the SSM "
                      "parameter): Polar was not asked", done.stdout)
        self.assertIn("POLAR_API_URL is not set: using https://api.polar.sh/v1", done.stdout)
        self.assertIn("polar:    not asked", done.stdout)
        bad = self.status("--discount", self.discount, env={"POLAR_ACCESS_TOKEN": "polar_oat_wrong"})
        self.assertIn("HTTP 401: the token is invalid or revoked", bad.stdout)

    def test_make_status_checks_its_variables_and_runs_the_script(self):
        env = {k: "" for k in ("ORDER", "DISCOUNT", "ORDERS_TABLE", "SYNC_TABLE", "STACK")}
        usage = run(["make", "--no-print-directory", "status"], env=env)
        self.assertEqual(usage.returncode, 2)
        self.assertIn("ORDER or DISCOUNT is not set. Usage:", usage.stderr)
        usage = run(["make", "--no-print-directory", "status", f"ORDER={self.synced}"], env=env)
        self.assertIn("STACK or SYNC_TABLE is not set", usage.stderr)
        done = run(["make", "--no-print-directory", "status", f"ORDER={self.synced}"], env=self.env)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(f"order {self.synced}\n", done.stdout)
        missing = run(["make", "--no-print-directory", "status", "ORDER=no-such-order"], env=self.env)
        self.assertNotEqual(missing.returncode, 0)
        self.assertIn("order no-such-order: not in the orders table", missing.stdout)


if __name__ == "__main__":
    unittest.main()
