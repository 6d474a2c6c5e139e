"""Checks that every alarm has a runbook: for each AWS::CloudWatch::Alarm in template.yaml,
docs/runbook.md has a section `## <logical id>` that says what fired, what it means, the
first command to run (a `make … STACK=…` target) and how to resolve it, and the alarm's
AlarmDescription links to that section (`docs/runbook.md#<logical id in lower case>`, the
heading's anchor). Exits non-zero listing every problem.
Usage: python scripts/check_runbook.py [template.yaml [docs/runbook.md]]
Tested by tests/ops/test_runbook.py."""

import re
import sys

from cfnlint.decode import decode_str

FIELDS = ("**What fired:**", "**What it means:**", "**First command:**", "**Resolve:**")
RUNBOOK_PATH = "docs/runbook.md"


def alarms(template_text):
    """{logical id: AlarmDescription text} of every alarm in the template."""
    template, matches = decode_str(template_text)
    if matches:
        raise ValueError(f"template does not parse: {matches}")
    found = {}
    for name, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != "AWS::CloudWatch::Alarm":
            continue
        description = (resource.get("Properties") or {}).get("AlarmDescription", "")
        if isinstance(description, dict) and "Fn::Sub" in description:
            sub = description["Fn::Sub"]
            description = sub if isinstance(sub, str) else sub[0]
        found[str(name)] = str(description) if isinstance(description, str) else ""
    return found


def sections(runbook_text):
    """{heading: body} of the runbook's `## ` sections."""
    found = {}
    for part in re.split(r"^## ", runbook_text, flags=re.M)[1:]:
        heading, _, body = part.partition("\n")
        found[heading.strip()] = body
    return found


def problems(template_text, runbook_text):
    found = []
    documented = sections(runbook_text)
    for name, description in alarms(template_text).items():
        link = f"{RUNBOOK_PATH}#{name.lower()}"
        if link not in description:
            found.append(f"{name}: its AlarmDescription does not link to its runbook ({link})")
        body = documented.get(name)
        if body is None:
            found.append(f"{name}: {RUNBOOK_PATH} has no section '## {name}'")
            continue
        for field in FIELDS:
            if field not in body:
                found.append(f"{name}: its runbook section does not say {field.strip('*:')}")
        first = body.split("**First command:**", 1)[-1].split("**Resolve:**", 1)[0]
        if "**First command:**" in body and not re.search(r"`make [a-z-]+ STACK=", first):
            found.append(f"{name}: its first command is not a `make … STACK=…` target")
        if len(description) > 1024:
            found.append(f"{name}: AlarmDescription is {len(description)} characters; CloudWatch allows 1024")
    return found


def main():
    template_path = sys.argv[1] if len(sys.argv) > 1 else "template.yaml"
    runbook_path = sys.argv[2] if len(sys.argv) > 2 else RUNBOOK_PATH
    found = problems(open(template_path).read(), open(runbook_path).read())
    for problem in found:
        print(f"runbook check: {problem}", file=sys.stderr)
    if found:
        sys.exit(1)
    print(f"runbook check: every alarm in {template_path} has its section in {runbook_path} and links to it")


if __name__ == "__main__":
    main()
