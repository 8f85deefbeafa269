"""Print (or check, or write into README.md) the table of every Config field and its default.

The table is generated from the ``Config`` dataclass itself: the defaults from its fields, the
meanings from its docstring, the ``train.py`` flags from train.py's parser and the ``--demo``
values from ``train.DEMO_DEFAULTS``, so the README cannot drift from the code.

    python tools/config_table.py            # print the table (Markdown)
    python tools/config_table.py --check    # exit 1 if README.md's table is out of date
    python tools/config_table.py --write    # replace README.md's table in place

In README.md the table sits between the lines ``<!-- config-table:start -->`` and
``<!-- config-table:end -->``.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import re
import sys
from typing import Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from common_definitions import DEFAULT_WINDOW_SIZE, MODEL_FIELDS, Config  # noqa: E402

START = "<!-- config-table:start -->"
END = "<!-- config-table:end -->"
README = os.path.join(ROOT, "README.md")

# Fields whose train.py flag is not ``--<field>``.
SPECIAL_FLAGS = {"data_dirs": "`--data_dir DIR` (repeatable)", "lu_decomposed": "`--no_lu`",
                 "demo": "`--demo`"}


def field_docs(config_class=Config) -> Dict[str, str]:
    """``{field: meaning}`` from the ``name: text`` entries of the class docstring.

    An entry may name several fields (``epochs, steps_per_epoch: ...``); its text runs over the
    lines indented deeper than the entry's first line.
    """
    lines = inspect.getdoc(config_class).splitlines()
    docs: Dict[str, str] = {}
    names: List[str] = []
    indent = 0
    entry = re.compile(r"^(\s+)([a-z_]+(?:,\s*[a-z_]+)*):\s+(.*)$")
    for line in lines:
        match = entry.match(line)
        if match and all(n.strip() in _field_names(config_class)
                         for n in match.group(2).split(",")):
            names = [n.strip() for n in match.group(2).split(",")]
            indent = len(match.group(1))
            # An entry shared by several fields names them all, so each row reads on its own.
            shared = ", ".join(f"``{n}``" for n in names) + ": " if len(names) > 1 else ""
            for name in names:
                docs[name] = shared + match.group(3).strip()
        elif names and line.strip() and len(line) - len(line.lstrip()) > indent:
            for name in names:
                docs[name] += " " + line.strip()
        else:
            names = []
    return docs


def _field_names(config_class=Config) -> List[str]:
    return [f.name for f in dataclasses.fields(config_class)]


def _flags() -> Dict[str, str]:
    """``{field: flag}`` for the fields train.py has a ``--<field>`` flag for."""
    import train  # TensorFlow-free at import time

    dests = {action.dest for action in train.build_parser()._actions}
    return {name: f"`--{name}`" for name in _field_names() if name in dests}


def _markdown(text: str) -> str:
    """Docstring prose (reStructuredText literals) as a Markdown table cell."""
    return text.replace("``", "`").replace("|", "\\|")


def _default(name: str, value) -> str:
    if name == "window_size" and value is None:
        per_feature = ", ".join(f"{k} {v}" for k, v in DEFAULT_WINDOW_SIZE.items())
        return f"per feature ({per_feature})"
    if isinstance(value, tuple) and not value:
        return "none"
    return f"`{value}`"


def config_table() -> str:
    """The Markdown table: field, default, ``--demo`` value, train.py flag, meaning."""
    import train

    docs = field_docs()
    flags = dict(_flags(), **SPECIAL_FLAGS)
    demo = dict(train.DEMO_DEFAULTS)
    demo["data_dirs"] = os.path.join(train.DEMO_DATA_ROOT, "{virtual,real}")
    demo["demo"] = True
    rows = ["| field | default | `--demo` | train.py flag | meaning |",
            "|---|---|---|---|---|"]
    for field in dataclasses.fields(Config):
        name = field.name
        if name not in docs:
            raise ValueError(f"Config field {name!r} is not described in the Config docstring")
        marker = " (model)" if name in MODEL_FIELDS else ""
        demo_value = f"`{demo[name]}`" if name in demo else ""
        rows.append(f"| `{name}`{marker} | {_default(name, field.default)} | {demo_value} | "
                    f"{flags.get(name, '')} | {_markdown(docs[name])} |")
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
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"{head}\n{table}\n{tail}")
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
        print(f"tools/config_table.py: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
