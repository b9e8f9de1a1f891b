"""Writes the values table of a chart's README from its values.yaml `# --` comments.

Usage: values-table.py VALUES README. The table goes between the README's
`<!-- values:begin -->` and `<!-- values:end -->` lines. A value is documented by the
`# -- text` comment (continued by further `#` lines) right above its key; nested keys are
named by their path (`mlflow.backendStoreUri`). A key with children and no comment of its
own is a section: its children get rows, not it. The children of a documented key are part
of its default. An undocumented leaf is an error, so a new
value cannot ship without its line in the README.
"""

import re
import sys

import yaml

BEGIN, END = "<!-- values:begin -->", "<!-- values:end -->"
KEY = re.compile(r"^( *)([A-Za-z0-9_]+):(.*)$")


def rows(lines):
    """(path, default, description) per documented key, in file order."""
    values = yaml.safe_load("\n".join(lines))
    stack, comment, out, undocumented = [], None, [], []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = stripped[4:].strip()
            continue
        if stripped.startswith("#") and comment is not None:
            comment += " " + stripped[1:].strip()
            continue
        match = KEY.match(line)
        if not match:
            if stripped:
                comment = None
            continue
        indent, key = len(match.group(1)), match.group(2)
        stack = [(i, k) for i, k in stack if i < indent]
        stack.append((indent, key))
        path = [k for _, k in stack]
        value = values
        for part in path:
            value = value[part]
        is_section = isinstance(value, dict) and value and not match.group(3).strip()
        documented_above = any(".".join(path).startswith(d + ".") for d, _, _ in out)
        if comment is not None:
            out.append((".".join(path), value, comment))
        elif not is_section and not documented_above:
            undocumented.append(".".join(path))
        comment = None
    return out, undocumented


def cell(value):
    text = "`" + yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...") + "`"
    return text.replace("|", "\\|")


def main():
    values_path, readme_path = sys.argv[1:]
    with open(values_path) as f:
        lines = f.read().splitlines()
    out, undocumented = rows(lines)
    if undocumented:
        sys.exit(f"{values_path}: values without a `# --` comment: {', '.join(undocumented)}")
    table = ["| value | default | what it does |", "|---|---|---|"]
    table += [f"| `{path}` | {cell(value)} | {text.replace('|', chr(92) + '|')} |" for path, value, text in out]
    with open(readme_path) as f:
        readme = f.read()
    if BEGIN not in readme or END not in readme:
        sys.exit(f"{readme_path}: no {BEGIN} … {END} lines")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(readme_path, "w") as f:
        f.write(head + BEGIN + "\n" + "\n".join(table) + "\n" + END + tail)


if __name__ == "__main__":
    main()
