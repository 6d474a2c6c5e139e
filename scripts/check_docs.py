"""Checks the documentation's shape and links:
- README.md has at most README_MAX_LINES lines (the reference documents are in docs/);
- every relative Markdown link in README.md and docs/*.md points to a file or folder that
  exists and, when it has an anchor (`file.md#heading`, `#heading`), to a heading of that
  Markdown file, by GitHub's anchor rule (lower case, punctuation dropped, spaces to
  hyphens, `-1`, `-2`, ... for repeats).
Links in fenced code blocks and inline code are not links. Absolute URLs (https:, mailto:)
are not checked. Runs in `make lint`; its own tests are scripts/test_check_docs.py.
Usage: python scripts/check_docs.py [repository root]
"""

import glob
import os
import re
import sys

README_MAX_LINES = 250
LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")


def prose_lines(text):
    """(line number, line) of the lines outside fenced code blocks."""
    fenced = None
    for number, line in enumerate(text.split("\n"), 1):
        match = FENCE.match(line)
        if match:
            if fenced is None:
                fenced = match.group(1)
            elif match.group(1) == fenced:
                fenced = None
            continue
        if fenced is None:
            yield number, line


def slug(heading):
    """GitHub's anchor for a heading's text."""
    text = INLINE_CODE.sub(lambda m: m.group(2), heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text):
    seen = {}
    result = set()
    for _, line in prose_lines(text):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(text):
    """(line number, target) of every link outside code."""
    for number, line in prose_lines(text):
        line = INLINE_CODE.sub("", line)
        for match in LINK.finditer(line):
            yield number, match.group(1) or match.group(2)


def check_file(path, root):
    problems = []
    text = open(path, encoding="utf-8").read()
    shown = os.path.relpath(path, root)
    for number, target in links(text):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
            continue  # https:, mailto:, ...
        file_part, _, anchor = target.partition("#")
        destination = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        if not os.path.exists(destination):
            problems.append(f"{shown}:{number}: link to {target}: {file_part} does not exist")
            continue
        if anchor:
            if os.path.isdir(destination) or not destination.endswith(".md"):
                problems.append(f"{shown}:{number}: link to {target}: an anchor into a file that is not Markdown")
                continue
            if anchor not in anchors(open(destination, encoding="utf-8").read()):
                problems.append(
                    f"{shown}:{number}: link to {target}: "
                    f"{os.path.relpath(destination, root)} has no heading #{anchor}")
    return problems


def check(root):
    problems = []
    readme = os.path.join(root, "README.md")
    if not os.path.exists(readme):
        return ["README.md does not exist"]
    count = len(open(readme, encoding="utf-8").read().splitlines())
    if count > README_MAX_LINES:
        problems.append(
            f"README.md: {count} lines, more than {README_MAX_LINES}: move reference text to docs/")
    for path in [readme] + sorted(glob.glob(os.path.join(root, "docs", "*.md"))):
        problems.extend(check_file(path, root))
    return problems


def main(argv):
    root = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    problems = check(os.path.abspath(root))
    for problem in problems:
        print(problem)
    if problems:
        print(f"check_docs: {len(problems)} problem(s)")
        return 1
    print("check_docs: README.md and docs/*.md: length and links ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
