"""`make smoke`'s script against the Polar double (what CI can run; the real run needs a
sandbox token): the built function must take the throwaway discount from 2 to 1, then
delete it. A function that answers success without doing anything must fail the smoke,
and the smoke must still delete its discount."""

import os
import re
import unittest

from support import ROOT, Double, run, script


class SmokeTest(unittest.TestCase):
    def test_the_smoke_passes_against_the_double(self):
        done = script("smoke.py", "--double")
        print(f"\n{done.stdout}", end="")
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn("ok: discount", done.stdout)
        self.assertIn("ok: Polar: max_redemptions=1 (expected 1)", done.stdout)
        self.assertRegex(done.stdout, r"polarDiscountSyncAction=decremented \(expected decremented\)")
        self.assertRegex(done.stdout, r"polarDiscountSyncAction=deleted \(expected deleted\)")
        self.assertIn("ok: Polar: the discount is deleted", done.stdout)
        self.assertIn("ok: already deleted", done.stdout)
        self.assertIn("smoke passed: 2 -> 1 -> deleted", done.stdout)

    def test_a_function_that_does_nothing_fails_the_smoke_which_still_cleans_up(self):
        double = Double()
        try:
            done = script("smoke.py", "--function", os.path.join(ROOT, "tests/ops/noop_function.py"),
                          env={"POLAR_API_URL": double.api_url, "POLAR_ACCESS_TOKEN": double.token})
            self.assertEqual(done.returncode, 1, done.stdout + done.stderr)
            self.assertIn("SMOKE FAILED: order smoke-", done.stdout)
            discount = re.search(r"ok: discount (\S+) created", done.stdout).group(1)
            self.assertIn("ok: deleted (HTTP 204)", done.stdout)
            self.assertIsNone(double.admin("GET", f"/discounts/{discount}"), "the smoke deleted its discount")
        finally:
            double.stop()

    def test_make_smoke_needs_a_token_or_the_double(self):
        usage = run(["make", "--no-print-directory", "smoke"], env={"POLAR_ACCESS_TOKEN": "", "DOUBLE": ""})
        self.assertEqual(usage.returncode, 2)
        self.assertIn("POLAR_ACCESS_TOKEN is not set. Usage:", usage.stderr)
        refused = script("smoke.py", env={"POLAR_ACCESS_TOKEN": "polar_oat_x", "POLAR_API_URL": "https://api.polar.sh/v1"})
        self.assertEqual(refused.returncode, 2)
        self.assertIn("is not the sandbox", refused.stderr)


if __name__ == "__main__":
    unittest.main()
