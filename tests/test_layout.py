"""The layout of the code: packages in their layers (design/make_module_figure.py --check), one
registry of migration methods, and command lines that check their flags before TensorFlow loads."""

import os
import subprocess
import sys

from tests.conftest import ROOT, run_python


def test_packages_keep_their_layers_and_sizes_and_import_no_circle():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "design", "make_module_figure.py"),
                             "--check"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_every_migration_method_is_a_class_of_the_one_registry():
    from utils.migration.method import MigrationMethod
    from utils.migration.registry import METHODS, method_class

    assert list(METHODS) == ["midpoint", "shift", "match", "eq", "convert"]
    for name, method in METHODS.items():
        assert issubclass(method, MigrationMethod) and method.name == name and method.help
        assert method_class(name) is method
    assert [n for n, m in METHODS.items() if m.conditional] == ["convert"]
    assert [n for n, m in METHODS.items() if not m.uses_model] == ["eq"]


def test_migrate_and_evaluate_refuse_bad_flags_before_tensorflow_loads(tmp_path):
    missing = str(tmp_path / "none")
    result = run_python(f"""
        import sys
        import evaluate
        import migrate
        codes = [
            migrate.main(["--checkpoint_dir", {missing!r}, "--source", {missing!r},
                          "--output", "out.wav"]),
            migrate.main(["--checkpoint_dir", {missing!r}, "--source", {missing!r},
                          "--output", "out.wav", "--method", "average"]),
            evaluate.main(["--checkpoint_dir", {missing!r}, "--virtual", {missing!r},
                           "--real", {missing!r}, "--json", "out.json"]),
        ]
        assert "tensorflow" not in sys.modules, "TensorFlow was imported"
        print(codes)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[2, 2, 2]"
