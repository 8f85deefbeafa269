"""Print (or check, or write into README.md) the table of every Config field and its default.

The table is generated from the ``Config`` dataclass itself: the defaults and meanings from its
fields and their metadata (the same text ``train.py --help`` shows), the model-field mark from
the metadata, the ``train.py`` flags from train.py's parser (which builds them from that
metadata) and the ``--demo`` values from ``train.DEMO_DEFAULTS``, so the README cannot drift from
the code.

    python tools/config_table.py            # print the table (Markdown)
    python tools/config_table.py --check    # exit 1 if README.md's table is out of date
    python tools/config_table.py --write    # replace README.md's table in place

In README.md the table sits between the lines ``<!-- config-table:start -->`` and
``<!-- config-table:end -->``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Dict, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from common_definitions import Config  # noqa: E402
from utils.cli import print_error  # noqa: E402
from utils.files import atomic_write_text  # noqa: E402

START = "<!-- config-table:start -->"
END = "<!-- config-table:end -->"
README = os.path.join(ROOT, "README.md")


def field_docs(config_class=Config) -> Dict[str, str]:
    """``{field: meaning}``: each field's ``help``, then its ``details`` when it has any."""
    docs = {}
    for field in dataclasses.fields(config_class):
        help_text, details = field.metadata["help"], field.metadata["details"]
        docs[field.name] = f"{help_text}; {details}" if details else help_text
    return docs


def _flags() -> Dict[str, str]:
    """``{field: flag}`` as train.py's parser spells it (its flags' ``dest`` is the field)."""
    import train  # TensorFlow-free at import time

    flags = {}
    for action in train.build_parser()._actions:
        if not action.option_strings:
            continue
        flag = action.option_strings[-1]
        if isinstance(action, argparse._AppendAction):
            flags[action.dest] = f"`{flag} {action.metavar}` (repeatable)"
        else:
            flags[action.dest] = f"`{flag}`"
    return flags


def _markdown(text: str) -> str:
    """Metadata prose (reStructuredText literals) as a Markdown table cell."""
    return text.replace("``", "`").replace("|", "\\|")


def _default(field: dataclasses.Field) -> str:
    if field.metadata["default_text"]:
        return field.metadata["default_text"]
    if isinstance(field.default, tuple) and not field.default:
        return "none"
    return f"`{field.default}`"


def config_table() -> str:
    """The Markdown table: field, default, ``--demo`` value, train.py flag, meaning."""
    import train

    docs = field_docs()
    flags = _flags()
    demo = dict(train.DEMO_DEFAULTS)
    demo["data_dirs"] = os.path.join(train.DEMO_DATA_ROOT, "{virtual,real}")
    demo["demo"] = True
    rows = ["| field | default | `--demo` | train.py flag | meaning |",
            "|---|---|---|---|---|"]
    for field in dataclasses.fields(Config):
        name = field.name
        if not docs[name]:
            raise ValueError(f"Config field {name!r} has no help in its metadata")
        marker = " (model)" if field.metadata["model"] else ""
        demo_value = f"`{demo[name]}`" if name in demo else ""
        rows.append(f"| `{name}`{marker} | {_default(field)} | {demo_value} | "
                    f"{flags.get(name, '')} | {_markdown(docs[name])}. |")
    return "\n".join(rows)


def _split_readme(text: str):
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no {START} ... {END} section")
    return text[:start + len(START)], text[start + len(START):end], text[end:]


def readme_table(path: str = README) -> str:
    """The table currently between the markers in ``path`` (stripped)."""
    with open(path, encoding="utf-8") as handle:
        return _split_readme(handle.read())[1].strip()


def write_readme(path: str = README) -> bool:
    """Put the current table between the markers; returns True when the file changed."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    head, old, tail = _split_readme(text)
    table = config_table()
    if old.strip() == table:
        return False
    atomic_write_text(path, f"{head}\n{table}\n{tail}")
    return True


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/config_table.py",
                                     description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true",
                       help="exit 1 when README.md's table differs from the Config")
    group.add_argument("--write", action="store_true", help="update README.md's table in place")
    parser.add_argument("--readme", default=README, help="README to check or write")
    args = parser.parse_args(argv)
    try:
        if args.check:
            if readme_table(args.readme) != config_table():
                print(f"{os.path.relpath(args.readme)}: the Config table is out of date; run "
                      "python tools/config_table.py --write", file=sys.stderr)
                return 1
            print(f"{os.path.relpath(args.readme)}: the Config table is up to date")
        elif args.write:
            changed = write_readme(args.readme)
            state = "table updated" if changed else "already up to date"
            print(f"{os.path.relpath(args.readme)}: {state}")
        else:
            print(config_table())
    except (OSError, ValueError) as error:
        print_error("tools/config_table.py", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
