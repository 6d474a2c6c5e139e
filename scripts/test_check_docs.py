"""Proves scripts/check_docs.py: the repository's README.md and docs/*.md pass, and a
sample tree with a broken file link, a broken anchor, an anchor into a file that is not
Markdown, or a README over the limit is rejected for exactly that. Runs in-process (well
under a second). Usage: python scripts/test_check_docs.py
"""

import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_docs import README_MAX_LINES, check, slug  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

GOOD_README = """# Sample

See [the design](docs/design.md), [its failures](docs/design.md#failures-retried-or-dead-lettered),
[a section here](#try-it-make-local), [the template](template.yaml), [the site](https://example.com).

## Try it: `make local`

```sh
# not a heading, and [not a link](nowhere.md)
```

Inline code is not a link either: `[x](missing.md)`.
"""

GOOD_DESIGN = """# Design

Back to the [README](../README.md#sample) and [a heading below](#polars-rate-limit).

## Failures: retried, or dead-lettered

## Polar's rate limit
"""


class CheckDocsTest(unittest.TestCase):
    def tree(self, readme=GOOD_README, design=GOOD_DESIGN):
        root = tempfile.mkdtemp(prefix="check-docs-")
        os.mkdir(os.path.join(root, "docs"))
        with open(os.path.join(root, "README.md"), "w") as f:
            f.write(readme)
        with open(os.path.join(root, "docs", "design.md"), "w") as f:
            f.write(design)
        with open(os.path.join(root, "template.yaml"), "w") as f:
            f.write("Resources: {}\n")
        return root

    def test_the_repositorys_readme_and_docs_pass(self):
        self.assertEqual(check(os.path.abspath(ROOT)), [])

    def test_a_sample_with_good_links_passes(self):
        self.assertEqual(check(self.tree()), [])

    def test_a_link_to_a_missing_file_fails(self):
        root = self.tree(readme=GOOD_README + "\nSee [operations](docs/operations.md).\n")
        problems = check(root)
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("README.md:14: link to docs/operations.md: docs/operations.md does not exist", problems[0])

    def test_a_link_to_a_missing_heading_fails(self):
        root = self.tree(design=GOOD_DESIGN + "\nSee [hot codes](#hot-codes) and [the README](../README.md#deploy).\n")
        problems = check(root)
        self.assertEqual(len(problems), 2, problems)
        self.assertIn("docs/design.md:9: link to #hot-codes: docs/design.md has no heading #hot-codes", problems[0])
        self.assertIn("link to ../README.md#deploy: README.md has no heading #deploy", problems[1])

    def test_an_anchor_into_a_file_that_is_not_markdown_fails(self):
        root = self.tree(readme=GOOD_README + "\n[the queue](template.yaml#queue)\n")
        problems = check(root)
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("not Markdown", problems[0])

    def test_a_readme_over_the_limit_fails(self):
        root = self.tree(readme=GOOD_README + "line\n" * README_MAX_LINES)
        problems = check(root)
        self.assertEqual(len(problems), 1, problems)
        self.assertIn(f"more than {README_MAX_LINES}", problems[0])

    def test_headings_become_githubs_anchors(self):
        self.assertEqual(slug("Trying it against Polar's sandbox: `make smoke`"),
                         "trying-it-against-polars-sandbox-make-smoke")
        self.assertEqual(slug("The token: `make put-token STACK=…`"), "the-token-make-put-token-stack")
        self.assertEqual(slug("The deadline: time kept to answer"), "the-deadline-time-kept-to-answer")
        self.assertEqual(slug("Standard or FIFO queue"), "standard-or-fifo-queue")


if __name__ == "__main__":
    unittest.main()
