"""Every alarm has a runbook (scripts/check_runbook.py), and the template's parameters refuse
what the issue says they must (wildcard and alias ARNs). Runs without AWS."""

import os
import re
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from check_runbook import problems  # noqa: E402
from cfnlint.decode import decode_str  # noqa: E402

TEMPLATE = open(os.path.join(ROOT, "template.yaml")).read()
RUNBOOK = open(os.path.join(ROOT, "docs", "runbook.md")).read()

NEW_ALARM = """
  ExampleNewAlarm:
    Type: AWS::CloudWatch::Alarm
    Properties:
      AlarmDescription: "Stream records could not be relayed."
      Namespace: PolarDiscountSync
      MetricName: StreamRelayFailures
      Statistic: Sum
      Period: 300
      EvaluationPeriods: 1
      Threshold: 0
      ComparisonOperator: GreaterThanThreshold
"""


def with_alarm(template, block):
    return template.replace("\nOutputs:\n", block + "\nOutputs:\n", 1)


class RunbookTest(unittest.TestCase):
    def test_every_alarm_in_the_template_has_a_runbook_section_and_links_to_it(self):
        self.assertEqual(problems(TEMPLATE, RUNBOOK), [])
        self.assertGreaterEqual(RUNBOOK.count("\n## "), 9)

    def test_an_alarm_added_without_a_section_or_a_link_is_reported(self):
        found = problems(with_alarm(TEMPLATE, NEW_ALARM), RUNBOOK)
        self.assertEqual(found, [
            "ExampleNewAlarm: its AlarmDescription does not link to its runbook "
            "(docs/runbook.md#examplenewalarm)",
            "ExampleNewAlarm: docs/runbook.md has no section '## ExampleNewAlarm'"])

    def test_a_section_without_a_first_make_command_or_a_resolution_is_reported(self):
        linked = NEW_ALARM.replace("relayed.", "relayed. Runbook: docs/runbook.md#examplenewalarm")
        runbook = RUNBOOK + ("\n## ExampleNewAlarm\n\n- **What fired:** x\n- **What it means:** y\n"
                             "- **First command:** look at the logs\n")
        self.assertEqual(problems(with_alarm(TEMPLATE, linked), runbook), [
            "ExampleNewAlarm: its runbook section does not say Resolve",
            "ExampleNewAlarm: its first command is not a `make … STACK=…` target"])


class ParameterPatternTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        template, _ = decode_str(TEMPLATE)
        cls.parameters = template["Parameters"]

    def accepts(self, parameter, value):
        return re.fullmatch(self.parameters[parameter]["AllowedPattern"], value) is not None

    def test_the_token_key_must_be_a_concrete_key_arn(self):
        self.assertTrue(self.accepts("TokenKmsKeyArn", ""))
        self.assertTrue(self.accepts("TokenKmsKeyArn",
                                     "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"))
        self.assertTrue(self.accepts("TokenKmsKeyArn",
                                     "arn:aws:kms:eu-west-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab"))
        for refused in ("arn:aws:kms:eu-west-1:123456789012:key/*", "arn:aws:kms:*",
                        "arn:aws:kms:eu-west-1:123456789012:alias/aws/ssm",
                        "arn:aws:kms:eu-west-1:123456789012:alias/polar"):
            self.assertFalse(self.accepts("TokenKmsKeyArn", refused), refused)

    def test_the_roles_must_be_concrete_role_arns(self):
        for parameter in ("OperatorRoleArn", "CheckoutSenderRoleArn"):
            self.assertTrue(self.accepts(parameter, "arn:aws:iam::123456789012:role/ops/on-call"))
            for refused in ("arn:aws:iam::123456789012:role/*", "arn:aws:iam::123456789012:role/ops-?",
                            "arn:aws:iam::123456789012:user/someone"):
                self.assertFalse(self.accepts(parameter, refused), (parameter, refused))

    def test_log_retention_takes_only_cloudwatchs_values(self):
        retention = self.parameters["LogRetentionDays"]
        self.assertEqual(retention["Default"], 30)
        self.assertIn(3653, retention["AllowedValues"])
        self.assertNotIn(31, retention["AllowedValues"])


if __name__ == "__main__":
    unittest.main()
