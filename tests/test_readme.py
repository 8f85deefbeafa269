"""README.md and design/results.md stay true to the code: the README is short, its Config table
is generated from the dataclass, its set-up commands are the ones CI runs, every relative link
resolves, every table is well formed, and every command they quote names a script that exists and
flags its parser accepts."""

import ast
import importlib
import os
import re
import subprocess
import sys
from typing import Dict, Iterator, List, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
RESULTS = os.path.join(ROOT, "design", "results.md")
DOCS = (README, RESULTS)
# The README is read by newcomers: measurements go to design/results.md, not here.
README_MAX_BYTES = 30_000


# --- helpers: the Markdown of a document, outside and inside its code ---------------------------

FENCE = re.compile(r"^ {0,3}(```|~~~)")


def read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def split_fenced(text: str) -> Tuple[List[Tuple[int, str]], List[List[str]]]:
    """``(prose, blocks)``: the numbered lines outside fenced code blocks; each block's lines."""
    prose, blocks, block = [], [], None
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            if block is None:
                block = []
            else:
                blocks.append(block)
                block = None
        elif block is None:
            prose.append((number, line))
        else:
            block.append(line)
    assert block is None, "a fenced code block is never closed"
    return prose, blocks


def prose_text(path: str) -> str:
    """The document without its fenced code blocks and inline code spans (where no link is)."""
    prose, _ = split_fenced(read(path))
    text = "\n".join(line for _, line in prose)
    return re.sub(r"`[^`]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: str) -> Set[str]:
    """Every heading anchor of a Markdown file (a repeated heading gets -1, -2, ...)."""
    prose, _ = split_fenced(read(path))
    seen: Dict[str, int] = {}
    for _, line in prose:
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
    return {base if i == 0 else f"{base}-{i}" for base, n in seen.items() for i in range(n)}


def relative_links(path: str) -> List[str]:
    """The relative targets of a document's Markdown links and images and its HTML src/href."""
    text = prose_text(path)
    targets = re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    targets += re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", text)
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]


def tables(path: str) -> Iterator[Tuple[int, List[str]]]:
    """``(first line number, rows)`` of every Markdown table outside code blocks."""
    prose, _ = split_fenced(read(path))
    rows: List[str] = []
    start = previous = 0
    for number, line in prose + [(0, "")]:
        if line.lstrip().startswith("|") and (not rows or number == previous + 1):
            if not rows:
                start = number
            rows.append(line.strip())
            previous = number
            continue
        if rows:
            yield start, rows
        rows = []
        if line.lstrip().startswith("|"):
            start, previous, rows = number, number, [line.strip()]


def cells(row: str) -> List[str]:
    """A table row's cells: split on the pipes that are not escaped (``\\|``)."""
    inner = row.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", inner)]


def code_snippets(path: str) -> List[str]:
    """Every piece of code a document quotes: each command of a fenced block (backslash
    continuations joined) and each inline code span (line breaks as spaces)."""
    prose, blocks = split_fenced(read(path))
    snippets = []
    for block in blocks:
        snippets += re.sub(r"\\\n", " ", "\n".join(block)).splitlines()
    snippets += [span.replace("\n", " ")
                 for span in re.findall(r"`([^`]+)`", "\n".join(line for _, line in prose))]
    return snippets


def quoted_commands(path: str) -> List[Tuple[str, str, List[str]]]:
    """``(kind, target, flags)`` per quoted command: kind ``script`` for ``python X.py ...`` and
    for a span that starts with ``X.py --flag``, ``module`` for ``python -m X ...``; flags are
    the ``--name`` tokens after it (values and placeholders dropped)."""
    commands = []
    for snippet in code_snippets(path):
        for segment in re.split(r"&&|\|\||;|\||#", snippet):
            tokens = segment.split()
            for i, token in enumerate(tokens):
                after = tokens[i + 1:]
                if token in ("python", "python3") and after:
                    if after[0] == "-m" and len(after) > 1:
                        commands.append(("module", after[1], _flags(after[2:])))
                    elif after[0].endswith(".py"):
                        commands.append(("script", after[0], _flags(after[1:])))
                    break
                if i == 0 and token.endswith(".py") and after and after[0].startswith("--"):
                    commands.append(("script", token, _flags(after)))
                    break
    return commands


def _flags(tokens: List[str]) -> List[str]:
    return [token.split("=", 1)[0] for token in tokens if re.match(r"^--[A-Za-z]", token)]


def parser_flags(script: str) -> Set[str]:
    """The option strings a script's parser accepts: from its ``build_parser()`` when it has
    one (train.py builds its flags from the Config), else from the string literals of its
    ``add_argument`` calls (benchmarks and tools parse inside ``main``)."""
    path = os.path.join(ROOT, script)
    tree = ast.parse(read(path), filename=path)
    if any(isinstance(node, ast.FunctionDef) and node.name == "build_parser" for node in tree.body):
        if ROOT not in sys.path:
            sys.path.insert(0, ROOT)
        module = importlib.import_module(os.path.splitext(script)[0].replace(os.sep, "."))
        return set(module.build_parser()._option_string_actions)
    flags = {"-h", "--help"}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"):
            flags.update(arg.value for arg in node.args
                         if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                         and arg.value.startswith("-"))
    return flags


def module_script(module: str) -> str:
    """The repository file of ``python -m module``, or "" for a module from outside it."""
    parts = module.split(".")
    if not os.path.exists(os.path.join(ROOT, parts[0])) and not os.path.isfile(
            os.path.join(ROOT, parts[0] + ".py")):
        return ""
    return os.path.join(*parts) + ".py"


# --- the Config table, the set-up commands and the design notes' files ------------------------

def test_config_table_is_up_to_date():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "config_table.py"),
                             "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + "\nrun: python tools/config_table.py --write"


def test_config_table_describes_every_field():
    import dataclasses

    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import config_table
    finally:
        sys.path.remove(os.path.join(ROOT, "tools"))
    from common_definitions import Config

    docs = config_table.field_docs()
    for field in dataclasses.fields(Config):
        assert docs.get(field.name), f"Config.{field.name} has no entry in the Config docstring"
    table = config_table.config_table()
    assert table.count("\n") == len(dataclasses.fields(Config)) + 1


def test_setup_commands_are_the_ones_ci_runs():
    text = read(README)
    assert "pip install -r requirements.txt && python train.py --demo" in text
    assert "python -m pytest -q" in text
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as handle:
        ci = handle.read()
    assert re.search(r"^python -m pytest -q$", ci, re.MULTILINE)
    for heading in ("## Performance", "## Reliability"):
        assert heading in text


def test_linked_files_exist():
    text = read(README) + read(os.path.join(ROOT, "design", "architecture.md"))
    links = re.findall(r"\]\(((?:design|notebooks)/[^)#]+)\)", read(README))
    links += ["design/" + name for name in re.findall(r"\]\(([a-z_]+\.(?:md|png))\)", text)]
    assert links
    for link in links:
        assert os.path.isfile(os.path.join(ROOT, link)), link


# --- the README is short; links, tables and commands of both documents hold ---------------------

def test_readme_is_under_the_size_limit():
    size = len(read(README).encode("utf-8"))
    assert size < README_MAX_BYTES, (
        f"README.md is {size} bytes (limit {README_MAX_BYTES}): move measurements to "
        "design/results.md and keep the README to how to use SinGlow-TF2")


def test_results_document_exists_and_the_readme_points_to_it():
    assert os.path.isfile(RESULTS)
    assert "](design/results.md" in read(README)
    for heading in ("## Performance", "## Reliability"):
        assert heading in read(RESULTS)


def test_every_relative_link_resolves():
    checked = 0
    for doc in DOCS:
        folder = os.path.dirname(doc)
        for target in relative_links(doc):
            path, _, anchor = target.partition("#")
            full = os.path.normpath(os.path.join(folder, path)) if path else doc
            where = f"{os.path.relpath(doc, ROOT)}: ({target})"
            assert full.startswith(ROOT + os.sep), f"{where} leaves the repository"
            assert os.path.exists(full), f"{where}: no such file"
            if anchor and full.endswith(".md"):
                assert anchor in anchors(full), f"{where}: no heading with that anchor"
            checked += 1
    assert checked >= 10


def test_every_table_is_well_formed():
    found = 0
    for doc in DOCS:
        for start, rows in tables(doc):
            where = f"{os.path.relpath(doc, ROOT)}:{start}"
            assert len(rows) >= 2, f"{where}: a table needs a header and a separator row"
            width = len(cells(rows[0]))
            assert re.fullmatch(r"\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?", rows[1]), (
                f"{where}: the second row is not a separator (|---|---|)")
            for offset, row in enumerate(rows):
                count = len(cells(row))
                assert count == width, (
                    f"{where}+{offset}: {count} cells, the header has {width}: {row[:80]}")
            found += 1
    assert found >= 5


def test_table_checks_catch_a_bad_row(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("text\n\n| a | b |\n|---|---|\n| 1 \\| 2 | 3 |\n| 4 |\n\n"
                   "```\n| not | a table\n```\n")
    [(start, rows)] = list(tables(str(doc)))
    assert start == 3 and [len(cells(row)) for row in rows] == [2, 2, 2, 1]


def test_every_quoted_command_names_a_script_and_its_flags():
    checked = set()
    for doc in DOCS:
        for kind, target, flags in quoted_commands(doc):
            where = f"{os.path.relpath(doc, ROOT)}: {kind} {target}"
            script = target if kind == "script" else module_script(target)
            if not script:
                continue  # python -m pytest and the like
            assert os.path.isfile(os.path.join(ROOT, script)), f"{where}: no such file"
            accepted = parser_flags(script)
            unknown = [flag for flag in flags if flag not in accepted]
            assert not unknown, f"{where}: {script} does not accept {unknown}"
            checked.add(script)
    for script in ("train.py", "migrate.py", "evaluate.py", "export.py", "data_loader.py"):
        assert script in checked, f"the README quotes no command of {script}"


def test_command_checks_read_continuations_and_spans(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("Run `python train.py --demo\n--epochs 3` or `evaluate.py --songs 2`.\n\n"
                   "```bash\npython migrate.py --source a \\\n    --strength=1 --output b  # --x\n"
                   "python -m pytest -q && python export.py --out c\n```\n")
    assert sorted(quoted_commands(str(doc))) == sorted([
        ("script", "migrate.py", ["--source", "--strength", "--output"]),
        ("module", "pytest", []),
        ("script", "export.py", ["--out"]),
        ("script", "train.py", ["--demo", "--epochs"]),
        ("script", "evaluate.py", ["--songs"]),
    ])
    assert "--strength" in parser_flags("migrate.py")
    assert "--precision" in parser_flags(os.path.join("benchmarks", "bench_train.py"))


def test_exit_status_table_matches_the_cli_convention():
    from utils import cli

    text = read(README)
    statuses = {int(code) for code in re.findall(r"^\| (\d+) \|", text, re.MULTILINE)}
    assert statuses == {cli.EXIT_OK, cli.EXIT_FAILED, cli.EXIT_REFUSED, cli.EXIT_SIGINT,
                        cli.EXIT_SIGTERM}
