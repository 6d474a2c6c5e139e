"""Proves scripts/check_template.py: template.yaml passes, and each case in
scripts/template_checks/ (a fragment merged into template.yaml) is rejected with exactly the
problems its `# expect:` lines name, no fewer and no others. Runs in-process (a few
seconds). Usage: python scripts/test_check_template.py [case.yaml ...]
"""

import copy
import glob
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_template import check  # noqa: E402
from cfnlint.decode import decode_str  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, "..", "template.yaml")
CASES = os.path.join(HERE, "template_checks")


def merged(base, overlay):
    """overlay merged into base: dictionaries key by key, anything else replaced, None deletes."""
    result = copy.deepcopy(base)
    for key, value in overlay.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def load(path):
    text = open(path).read()
    document, matches = decode_str(text)
    if matches:
        raise SystemExit(f"{path}: {matches}")
    return json.loads(json.dumps(document, default=str)), text


def run_case(path, base, workdir):
    overlay, text = load(path)
    expected = [line.split("# expect:", 1)[1].strip() for line in text.splitlines() if line.startswith("# expect:")]
    if not expected:
        return [f"names no '# expect:' problem"]
    candidate = os.path.join(workdir, os.path.basename(path) + ".json")
    with open(candidate, "w") as out:
        json.dump(merged(base, overlay), out)
    problems = check(candidate)
    failures = []
    if not problems:
        failures.append("was accepted")
    for expectation in expected:
        if not any(expectation in problem for problem in problems):
            failures.append(f"did not report {expectation!r}")
    for problem in problems:
        if not any(expectation in problem for expectation in expected):
            failures.append(f"reported an unexpected problem: {problem}")
    return failures


def main():
    cases = sys.argv[1:] or sorted(glob.glob(os.path.join(CASES, "*.yaml")))
    failed = 0
    problems = check(TEMPLATE)
    if problems:
        failed += 1
        print(f"FAIL template.yaml is rejected: {problems}")
    else:
        print("ok   template.yaml passes")
    base, _ = load(TEMPLATE)
    with tempfile.TemporaryDirectory() as workdir:
        for path in cases:
            failures = run_case(path, base, workdir)
            name = os.path.basename(path)
            if failures:
                failed += 1
                for failure in failures:
                    print(f"FAIL {name}: {failure}")
            else:
                print(f"ok   {name} rejected")
    print(f"template check tests: {len(cases) + 1 - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
