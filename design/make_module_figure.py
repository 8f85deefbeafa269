"""Draw SinGlow-TF2's modules and the imports between them, read from the source itself.

Every top-level ``.py`` file and every module under ``utils/`` is a box, placed in the layer that
DESIGN.md gives it (foundation: the Config and the error and file helpers; utilities; model and
data; run folders and inference; training; programs); an arrow ``a -> b`` means "a imports b". The imports are parsed from the files (``ast``), so the figure
cannot drift from the code, and the script exits 1 naming any import that points the wrong way
(from a lower layer to a higher one, or from inference code into the training module).

    python design/make_module_figure.py [--out design/modules.png]
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
from typing import Dict, List, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Layers from the bottom; a module may import only modules of its own layer or below. A module
# under utils/ that builds on the model or the data loader (the run-folder loader, whole-song
# inference) sits in "run folders and inference", above them and below training.
LAYERS = ("foundation", "utilities", "model and data", "run folders and inference", "training",
          "programs")
# The foundation: the Config and the two helpers it shares with every layer (errors, files), which
# import no project module at all.
TOP_LEVEL = {
    "common_definitions": "foundation",
    "utils.errors": "foundation",
    "utils.files": "foundation",
    "model": "model and data",
    "data_loader": "model and data",
    "pipeline": "training",
}
# Inference code never imports the training module.
INFERENCE = ("migrate", "evaluate", "export")


def modules() -> Dict[str, str]:
    """module name -> layer, for every module of the project (tests and tools excluded)."""
    found = {}
    for name in sorted(os.listdir(ROOT)):
        if name.endswith(".py"):
            stem = name[:-3]
            found[stem] = TOP_LEVEL.get(stem, "programs")
    for folder, _, names in sorted(os.walk(os.path.join(ROOT, "utils"))):
        package = os.path.relpath(folder, ROOT).replace(os.sep, ".")
        for name in sorted(names):
            if name.endswith(".py") and name != "__init__.py":
                module = f"{package}.{name[:-3]}"
                found[module] = TOP_LEVEL.get(module, "utilities")
    return found


def imports(module: str, known: Set[str]) -> Set[str]:
    """Project modules that ``module`` imports (at any depth of its code)."""
    path = os.path.join(ROOT, *module.split(".")) + ".py"
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(name for name in names if name in known and name != module)
    return found


def check(graph: Dict[str, Set[str]], layer_of: Dict[str, str]) -> List[str]:
    """Imports that break the layering, as ``a -> b (why)`` lines."""
    rank = {layer: index for index, layer in enumerate(LAYERS)}
    problems = []
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            if rank[layer_of[target]] > rank[layer_of[source]]:
                problems.append(f"{source} -> {target} (imports a higher layer)")
            if source in INFERENCE and target == "pipeline":
                problems.append(f"{source} -> {target} (inference imports training code)")
    return problems


def draw(graph: Dict[str, Set[str]], layer_of: Dict[str, str], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: Dict[str, List[str]] = {layer: [] for layer in LAYERS}
    for module, layer in layer_of.items():
        rows[layer].append(module)
    positions: Dict[str, Tuple[float, float]] = {}
    # A crowded layer is drawn as two staggered rows, so the figure stays readable.
    per_row = 13
    width = min(max(len(r) for r in rows.values()), per_row)
    for y, layer in enumerate(LAYERS):
        names = rows[layer]
        lines = [names[i:i + per_row] for i in range(0, len(names), per_row)] or [[]]
        for line_index, line in enumerate(lines):
            offset = (line_index - (len(lines) - 1) / 2) * 0.8
            for x, name in enumerate(line):
                positions[name] = ((x + 0.5) * width / max(len(line), 1), y * 2.0 + offset)
    fig, ax = plt.subplots(figsize=(max(12, 1.6 * width), 11))
    for source, targets in graph.items():
        for target in targets:
            (x0, y0), (x1, y1) = positions[source], positions[target]
            ax.annotate("", xy=(x1, y1 + 0.25), xytext=(x0, y0 - 0.25),
                        arrowprops=dict(arrowstyle="->", color="0.6", lw=0.7,
                                        shrinkA=4, shrinkB=4))
    colours = dict(zip(LAYERS, ("#eeeeee", "#d9ead3", "#cfe2f3", "#fff2cc", "#f4cccc",
                                  "#d9d2e9")))
    for name, (x, y) in positions.items():
        ax.text(x, y, name.replace("utils.", "utils/\n"), ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round,pad=0.3", fc=colours[layer_of[name]], ec="0.3"))
    for y, layer in enumerate(LAYERS):
        ax.text(-0.6, y * 2.0, layer, ha="right", va="center", fontsize=10, weight="bold")
    ax.set_xlim(-3.5, width + 0.5)
    ax.set_ylim(-1.4, 2.0 * len(LAYERS) - 0.6)
    ax.axis("off")
    ax.set_title("SinGlow-TF2 modules; an arrow points from a module to one it imports")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "design", "modules.png"))
    parser.add_argument("--check", action="store_true", help="only check the layering")
    args = parser.parse_args(argv)
    layer_of = modules()
    graph = {m: imports(m, set(layer_of)) for m in layer_of}
    upper = {"model and data", "run folders and inference"}
    changed = True
    while changed:  # until every utils module that builds on the model or data is lifted
        changed = False
        for module, targets in graph.items():
            if (layer_of[module] == "utilities"
                    and any(layer_of[t] in upper for t in targets)):
                layer_of[module] = "run folders and inference"
                changed = True
    problems = check(graph, layer_of)
    for line in problems:
        print(f"layering: {line}", file=sys.stderr)
    if not args.check:
        draw(graph, layer_of, args.out)
        print(f"wrote {args.out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
