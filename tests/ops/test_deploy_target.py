"""`make deploy`'s choices (make -n, nothing runs): sam build with the .venv's cargo-lambda
and zig first on PATH and the Rust beta feature on, then a guided `sam deploy` while
samconfig.toml has no parameter_overrides for the config environment, the configured one
once it has, and a non-guided one with PARAMS=; STACK= and REGION= passed on. SAM CLI
itself is installed into .venv/sam on first use. Runs without AWS."""

import os
import shutil
import subprocess
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class DeployTargetTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        shutil.copy(os.path.join(ROOT, "Makefile"), self.dir)
        shutil.copy(os.path.join(ROOT, "samconfig.toml"), self.dir)

    def tearDown(self):
        shutil.rmtree(self.dir)

    def plan(self, *args):
        done = subprocess.run(["make", "--no-print-directory", "-n", "deploy", *args], cwd=self.dir,
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout

    def test_the_first_deploy_builds_with_the_venvs_cargo_lambda_and_is_guided(self):
        plan = self.plan()
        self.assertIn("pip install --quiet --disable-pip-version-check cargo-lambda==", plan)
        self.assertIn("python3 -m venv .venv/sam", plan)
        self.assertIn(".venv/sam/bin/pip install --quiet --disable-pip-version-check aws-sam-cli==", plan)
        self.assertIn(f'PATH="{self.dir}/.venv/bin:$PATH" SAM_CLI_BETA_RUST_CARGO_LAMBDA=1 .venv/sam/bin/sam build '
                      "--config-env default", plan)
        self.assertIn(".venv/sam/bin/sam deploy --guided --config-env default", plan)

    def test_a_config_environment_with_parameters_deploys_without_the_guide(self):
        with open(os.path.join(self.dir, "samconfig.toml"), "a") as config:
            config.write('\n[prod.deploy.parameters]\nparameter_overrides = "OrdersTableName=orders"\n')
        plan = self.plan("CONFIG_ENV=prod", "STACK=pds-prod", "REGION=eu-west-1")
        self.assertIn('.venv/sam/bin/sam deploy --config-env prod --stack-name "pds-prod" --region "eu-west-1"', plan)
        self.assertNotIn("--guided", plan)

    def test_params_deploy_without_the_guide(self):
        plan = self.plan("PARAMS=OrdersTableName=orders CheckoutSenderRoleArn=arn:aws:iam::123456789012:role/checkout")
        self.assertIn(".venv/sam/bin/sam deploy --config-env default --parameter-overrides OrdersTableName=orders "
                      "CheckoutSenderRoleArn=arn:aws:iam::123456789012:role/checkout", plan)
        self.assertNotIn("--guided", plan)


if __name__ == "__main__":
    unittest.main()
