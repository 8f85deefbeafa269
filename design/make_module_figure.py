"""Draw SinGlow-TF2's packages and the imports between them, read from the source itself, and check
the layout they must keep.

Every top-level ``.py`` file and every module under ``utils/`` belongs to a *package*: a folder
under ``utils/`` (``utils.audio``, ``utils.runs``, ...), or one of the named groups of files
(``foundation``: ``common_definitions.py`` and the modules at the top of ``utils/``; ``model``;
``data_loader``; ``pipeline``; ``programs``: the command lines). The packages sit in the layers of
:data:`LAYERS`, and a module may import only modules of its own package or of a lower layer: never
a package above it, nor another package of its own layer. The imports are parsed from the files
(``ast``, at any depth of their code), so the figure cannot drift from the code. ``--check`` (and
drawing) exit 1 with one line per problem:

- an import that points up, or sideways into another package of the same layer;
- inference code (``migrate.py``, ``evaluate.py``, ``export.py``, ``utils.runs``,
  ``utils.migration``) that reaches training code (``utils.training``, ``pipeline``) through any
  chain of imports;
- an import circle between modules;
- a module in no package of :data:`LAYERS`, or more than :data:`MAX_TOP_MODULES` modules directly
  in ``utils/`` (the rest belong in packages);
- a module longer than :data:`MAX_MODULE_LINES` lines or a class longer than
  :data:`MAX_CLASS_LINES` (one idea each, readable in one sitting).

    python design/make_module_figure.py [--out design/modules.png] [--check]
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
from typing import Dict, List, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Layers from the bottom; each holds packages that import only themselves and lower layers.
LAYERS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("foundation", ("foundation",)),
    ("signal", ("utils.audio",)),
    ("flow, songs on disk, judges", ("utils.flow", "utils.data", "utils.evaluation")),
    ("model and data loader", ("model", "data_loader")),
    ("a trained run", ("utils.runs",)),
    ("migration", ("utils.migration",)),
    ("training", ("utils.training",)),
    ("trainer", ("pipeline",)),
    ("programs", ("programs",)),
)
# Top-level files that are packages of their own; every other one is a program.
FILE_PACKAGES = {"common_definitions": "foundation", "model": "model",
                 "data_loader": "data_loader", "pipeline": "pipeline"}
TRAINING = ("utils.training", "pipeline")
INFERENCE = ("migrate", "evaluate", "export", "utils.runs", "utils.migration")
# Modules directly in utils/, __init__.py included: the cross-cutting few.
MAX_TOP_MODULES = 6
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 300


def package_of(module: str) -> str:
    """The package a module belongs to (see the module docstring)."""
    parts = module.split(".")
    if parts[0] != "utils":
        return FILE_PACKAGES.get(module, "programs")
    return "foundation" if len(parts) == 2 else ".".join(parts[:2])


def modules() -> List[str]:
    """Every module of the project (tests, tools and design scripts excluded)."""
    found = [name[:-3] for name in sorted(os.listdir(ROOT)) if name.endswith(".py")]
    for folder, _, names in sorted(os.walk(os.path.join(ROOT, "utils"))):
        package = os.path.relpath(folder, ROOT).replace(os.sep, ".")
        found += [f"{package}.{name[:-3]}" for name in sorted(names)
                  if name.endswith(".py") and name != "__init__.py"]
    return found


def parse(module: str) -> Tuple[ast.Module, int]:
    """The syntax tree of ``module`` and its number of lines."""
    path = os.path.join(ROOT, *module.split(".")) + ".py"
    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    return ast.parse(source, path), source.count("\n")


def imports(module: str, known: Set[str]) -> Set[str]:
    """Project modules that ``module`` imports (at any depth of its code)."""
    tree, _ = parse(module)
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(name for name in names if name in known and name != module)
    return found


def layer_problems(graph: Dict[str, Set[str]]) -> List[str]:
    """Imports that point up, or sideways into another package of the same layer."""
    rank = {package: index for index, (_, packages) in enumerate(LAYERS) for package in packages}
    problems = []
    for source, targets in sorted(graph.items()):
        mine = package_of(source)
        for target in sorted(targets):
            theirs = package_of(target)
            if mine == theirs or theirs not in rank or mine not in rank:
                continue
            if rank[theirs] > rank[mine]:
                problems.append(f"{source} -> {target} ({mine} imports {theirs}, a higher layer)")
            elif rank[theirs] == rank[mine]:
                problems.append(f"{source} -> {target} ({mine} imports {theirs}, another package "
                                "of its layer)")
    return problems


def training_reached(graph: Dict[str, Set[str]]) -> List[str]:
    """Inference modules from which a chain of imports reaches training code."""
    problems = []
    for start in sorted(m for m in graph if package_of(m) in INFERENCE or m in INFERENCE):
        came_from = {start: None}
        queue = [start]
        while queue:
            module = queue.pop(0)
            if package_of(module) in TRAINING:
                chain = [module]
                while came_from[chain[-1]] is not None:
                    chain.append(came_from[chain[-1]])
                problems.append(" -> ".join(reversed(chain)) + " (inference reaches training code)")
                break
            for target in sorted(graph[module] - set(came_from)):
                came_from[target] = module
                queue.append(target)
    return problems


def circles(graph: Dict[str, Set[str]]) -> List[str]:
    """Every import circle (a strongly connected set of more than one module), one line each."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return [f"import circle: {' <-> '.join(component)}" for component in sorted(found)]


def layout_problems(names: List[str]) -> List[str]:
    """Modules in no package of LAYERS, too many modules directly in utils/, and modules or
    classes over their size."""
    placed = {package for _, packages in LAYERS for package in packages}
    problems = [f"{name} is in no package of LAYERS ({package_of(name)}): place it"
                for name in names if package_of(name) not in placed]
    top = [name for name in os.listdir(os.path.join(ROOT, "utils")) if name.endswith(".py")]
    if len(top) > MAX_TOP_MODULES:
        problems.append(f"utils/ holds {len(top)} modules directly, at most {MAX_TOP_MODULES}: "
                        "move the rest into packages")
    for name in names:
        tree, lines = parse(name)
        if lines > MAX_MODULE_LINES:
            problems.append(f"{name} has {lines} lines, at most {MAX_MODULE_LINES}: split it")
        for node in ast.walk(tree):
            length = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, ast.ClassDef) and length > MAX_CLASS_LINES:
                problems.append(f"{name}.{node.name} has {length} lines, at most "
                                f"{MAX_CLASS_LINES}: split it")
    return problems


# Where each package's box sits across its row (0 left, 1 right): spread so that the arrows of
# packages far apart in the layers do not all run down one column.
COLUMNS = {"foundation": 0.5, "utils.audio": 0.28, "utils.flow": 0.08, "utils.data": 0.45,
           "utils.evaluation": 0.82, "model": 0.14, "data_loader": 0.62, "utils.runs": 0.34,
           "utils.migration": 0.62, "utils.training": 0.3, "pipeline": 0.5, "programs": 0.74}


def draw(graph: Dict[str, Set[str]], out: str) -> None:
    """One row per layer, one box per package listing its modules; an arrow per pair of packages
    where one imports the other, thicker for more such imports."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    members: Dict[str, List[str]] = {}
    for module in sorted(graph):
        members.setdefault(package_of(module), []).append(module.split(".")[-1])
    positions: Dict[str, Tuple[float, float]] = {}
    for row, (_, packages) in enumerate(LAYERS):
        for column, package in enumerate(packages):
            x = COLUMNS.get(package, (column + 0.5) / len(packages))
            positions[package] = (10.0 * x, row * 2.0)
    edges: Dict[Tuple[str, str], int] = {}
    for source, targets in graph.items():
        for target in targets:
            pair = (package_of(source), package_of(target))
            if pair[0] != pair[1]:
                edges[pair] = edges.get(pair, 0) + 1
    fig, ax = plt.subplots(figsize=(13, 14))
    for (source, target), count in sorted(edges.items()):
        (x0, y0), (x1, y1) = positions[source], positions[target]
        ax.annotate("", xy=(x1, y1 + 0.35), xytext=(x0, y0 - 0.35), zorder=1,
                    arrowprops=dict(arrowstyle="-|>", color="0.55", lw=0.4 + 0.12 * count,
                                    alpha=0.8, shrinkA=0, shrinkB=0,
                                    connectionstyle="arc3,rad=0.12"))
    colours = ("#eeeeee", "#fce5cd", "#d9ead3", "#cfe2f3", "#fff2cc", "#ead1dc", "#f4cccc",
               "#f4cccc", "#d9d2e9")
    for row, (layer, packages) in enumerate(LAYERS):
        for package in packages:
            x, y = positions[package]
            names = members.get(package, [])
            title = package.replace("utils.", "utils/")
            lines = [", ".join(names[i:i + 3]) for i in range(0, len(names), 3)]
            label = title if names == [package] else title + "\n" + "\n".join(lines)
            ax.text(x, y, label, ha="center", va="center", fontsize=8.5, linespacing=1.3,
                    zorder=2, bbox=dict(boxstyle="round,pad=0.4", fc=colours[row], ec="0.3"))
        ax.text(-0.6, row * 2.0, layer, ha="right", va="center", fontsize=10, weight="bold")
    ax.set_xlim(-3.2, 10.6)
    ax.set_ylim(-0.9, 2.0 * len(LAYERS) - 1.2)
    ax.axis("off")
    ax.set_title("SinGlow-TF2's packages in their layers: an arrow points from a package to one "
                 "it imports (thicker: more imports)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "design", "modules.png"))
    parser.add_argument("--check", action="store_true", help="only check, draw nothing")
    args = parser.parse_args(argv)
    names = modules()
    graph = {module: imports(module, set(names)) for module in names}
    problems = (layout_problems(names) + layer_problems(graph) + training_reached(graph)
                + circles(graph))
    for line in problems:
        print(f"layering: {line}", file=sys.stderr)
    if not args.check:
        draw(graph, args.out)
        print(f"wrote {args.out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
