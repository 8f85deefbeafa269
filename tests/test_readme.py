"""README.md stays true to the code: its Config table is generated from the dataclass, its
set-up commands are the ones CI runs, and the files it links to exist."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def readme() -> str:
    with open(README, encoding="utf-8") as handle:
        return handle.read()


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
    text = readme()
    assert "pip install -r requirements.txt && python train.py --demo" in text
    assert "python -m pytest -q" in text
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as handle:
        ci = handle.read()
    assert re.search(r"^python -m pytest -q$", ci, re.MULTILINE)
    for heading in ("## Performance", "## Reliability"):
        assert heading in text


def test_linked_files_exist():
    text = readme() + open(os.path.join(ROOT, "design", "architecture.md"), encoding="utf-8").read()
    links = re.findall(r"\]\(((?:design|notebooks)/[^)#]+)\)", readme())
    links += ["design/" + name for name in re.findall(r"\]\(([a-z_]+\.(?:md|png))\)", text)]
    assert links
    for link in links:
        assert os.path.isfile(os.path.join(ROOT, link)), link
