"""`make local` as a newcomer runs it: the sample events end to end (moto, the Polar double,
the function binary through the Runtime API), the output they are told to expect."""

import os
import subprocess
import unittest

from support import ROOT


def local(event):
    # Its own moto (local.sh starts one); the binaries are built before these tests run
    # (scripts/test.sh), while other cargo commands may hold the build directory.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["LOCAL_SKIP_BUILD"] = "1"
    return subprocess.run(["make", "--no-print-directory", "local", f"EVENT={event}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


class LocalRunTest(unittest.TestCase):
    def test_the_single_sample_decrements_once_across_its_two_deliveries(self):
        done = local("events/sqs-single.json")
        self.assertEqual(done.returncode, 0, done.stdout[-3000:] + done.stderr[-3000:])
        after = done.stdout.split("--- state after delivery 1")[1]
        self.assertIn("(SUMMER25): max_redemptions=2", after)
        self.assertIn("(SUMMER25): max_redemptions=2", done.stdout.split("--- state after delivery 2")[1])

    def test_the_malformed_sample_shows_each_dead_letter_with_its_reason(self):
        done = local("events/sqs-malformed.json")
        self.assertEqual(done.returncode, 0, done.stdout[-3000:] + done.stderr[-3000:])
        self.assertRegex(done.stdout, r"dead-lettered \S+: permanent/invalid_message: ")

    def test_the_stream_sample_relays_the_insert_and_the_relayed_message_syncs(self):
        done = local("events/dynamodb-stream-insert.json")
        self.assertEqual(done.returncode, 0, done.stdout[-3000:] + done.stderr[-3000:])
        self.assertIn("(SUMMER25): max_redemptions=2", done.stdout.split("--- state after delivery 1")[1])


if __name__ == "__main__":
    unittest.main()
