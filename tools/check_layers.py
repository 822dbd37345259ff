"""Check emolab's import structure: no cycle, layers import downwards only, no private name across modules,
no module over 500 lines.

Usage::

    python tools/check_layers.py [REPO_ROOT]     # REPO_ROOT holds emolab/ (default: this script's repo)

Exit 0 with a one-line summary when the tree is clean; exit 1 with one line per violation, grouped by rule,
each naming the file and line; exit 2 when the tree cannot be read (no emolab/ folder, a syntax error).

The rules (issue 17):

a) **No import cycle** between emolab modules. Every import counts: module level, inside functions, under
   ``if TYPE_CHECKING:``, and ``importlib.import_module("emolab....")`` with a constant name. Because a cycle
   that only closes inside a function still makes the modules impossible to understand (and to move) one at a
   time, lazy imports are no excuse. ``from emolab.pkg import name`` counts as importing ``emolab.pkg.name``
   when that is a submodule, and as importing ``emolab.pkg`` (its ``__init__``) otherwise. Relative imports
   are resolved. A package's parents are *not* counted as imported by ``import emolab.pkg.mod``: Python runs
   them first whatever imports them, so counting them would make every ``__init__`` that re-exports its
   submodules a cycle with each of them.
b) **Layers**: ``utils < data < models = viz < train < eval < experiments = bench < cli`` (``emolab/__init__``
   and ``__main__`` on top). A module imports modules of its own layer folder or of lower layers only; layers
   of the same rank (models and viz, experiments and bench) do not import each other. viz sits beside models:
   it draws arrays and needs only data, so the trainer (run figures) and the eval commands (robustness curves,
   attention) can draw. A subfolder belongs to its top folder's layer. A module outside every layer folder
   (other than the top ones) is itself a violation. The root package may be imported from any layer (for
   ``__version__``) as long as it imports no emolab module itself: then it is a leaf, not the top.
c) **No private name imported across modules**: ``from emolab.x import _name`` (leading underscore, not a
   dunder) from another module. A private *module* (``emolab/viz/_common.py``) may be imported by modules of
   its own package folder only.
d) **No module over 500 lines**, except the named exemptions in ``LINE_EXEMPTIONS`` below (an exemption that
   matches modules, none of them over the limit, is reported as stale).
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "emolab"
MAX_LINES = 500

#: Layer folders of emolab/ in import order: a module may import its own folder and the folders of lower rank.
LAYER_RANKS: dict[str, int] = {
    "utils": 0,
    "data": 1,
    "models": 2,
    "viz": 2,
    "train": 3,
    "eval": 4,
    "experiments": 5,
    "bench": 5,
    "cli": 6,
}
#: Modules directly in emolab/ that sit above every layer (the package's public face and ``python -m emolab``).
TOP_MODULES = {"emolab", "emolab.__main__"}
TOP_RANK = max(LAYER_RANKS.values()) + 1

#: Modules allowed over MAX_LINES (paths relative to the repo root, fnmatch patterns) and why. Keep it short:
#: an entry that matches modules but none over the limit is reported too, so the list cannot go stale.
#: Plot layout modules of emolab/viz/ are the other allowed kind; none is over the limit today, so none is listed.
LINE_EXEMPTIONS = {
    # The synthetic demo corpus: face drawing, prosody and noise synthesis are one long recipe whose steps
    # only make sense together (and whose output the demo metrics in the README depend on byte for byte).
    "emolab/data/synthetic/*.py": "data synthesis (the generated demo corpus)",
}


@dataclass(frozen=True)
class Import:
    """One import statement's edge: ``source`` imports ``target`` (both module names) at ``path:line``."""

    source: str
    target: str
    path: str
    line: int
    names: tuple[str, ...] = ()  # the names (not submodules) a ``from`` import takes from ``target``


@dataclass
class Tree:
    """The modules of one emolab/ folder: name → file path relative to the repo root, and their imports."""

    root: Path
    modules: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    imports: list[Import] = field(default_factory=list)


class TreeError(Exception):
    """The tree cannot be checked (missing folder, unparsable file)."""


def module_name(rel: Path) -> str:
    """``emolab/data/video.py`` → ``emolab.data.video``; ``emolab/data/__init__.py`` → ``emolab.data``."""
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(tree: Tree, name: str) -> bool:
    return tree.modules.get(name, "").endswith("__init__.py")


def resolve_relative(tree: Tree, source: str, module: str | None, level: int) -> str:
    """The absolute module a ``from ...module import`` in ``source`` refers to."""
    package = source if is_package(tree, source) else source.rpartition(".")[0]
    parts = package.split(".")
    if level - 1 > len(parts) - 1:
        raise TreeError(f"{tree.modules[source]}: relative import beyond the top package")
    base = parts[: len(parts) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def known_module(tree: Tree, name: str) -> str | None:
    """``name`` if it is a module of the tree, else its closest enclosing one (``emolab.x.attr`` → ``emolab.x``)."""
    while name:
        if name in tree.modules:
            return name
        name = name.rpartition(".")[0]
    return None


def collect_imports(tree: Tree, source: str, node: ast.AST) -> list[Import]:
    """Every emolab import anywhere in ``node`` (functions and ``if TYPE_CHECKING:`` blocks included)."""
    path = tree.modules[source]
    found: list[Import] = []
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            for alias in n.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    target = known_module(tree, alias.name)
                    if target:
                        found.append(Import(source, target, path, n.lineno))
        elif isinstance(n, ast.ImportFrom):
            base = resolve_relative(tree, source, n.module, n.level) if n.level else (n.module or "")
            if not (base == PACKAGE or base.startswith(PACKAGE + ".")):
                continue
            plain: list[str] = []
            for alias in n.names:
                sub = f"{base}.{alias.name}"
                if sub in tree.modules:  # `from emolab.pkg import mod`: imports the submodule
                    found.append(Import(source, sub, path, n.lineno))
                else:
                    plain.append(alias.name)
            target = known_module(tree, base)
            if plain and target:
                found.append(Import(source, target, path, n.lineno, tuple(plain)))
        elif isinstance(n, ast.Call) and _is_import_module_call(n):
            arg = n.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith(PACKAGE):
                target = known_module(tree, arg.value)
                if target:
                    found.append(Import(source, target, path, n.lineno))
    return found


def _is_import_module_call(n: ast.Call) -> bool:
    f = n.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    return name == "import_module" and len(n.args) >= 1


def load_tree(root: Path) -> Tree:
    """Parse every ``.py`` file under ``root/emolab``."""
    pkg = root / PACKAGE
    if not (pkg / "__init__.py").is_file():
        raise TreeError(f"{pkg}: no {PACKAGE} package here (expected {pkg / '__init__.py'})")
    tree = Tree(root)
    files = sorted(p for p in pkg.rglob("*.py") if "__pycache__" not in p.parts)
    for p in files:
        rel = p.relative_to(root)
        tree.modules[module_name(rel)] = rel.as_posix()
    for p in files:
        rel = p.relative_to(root)
        text = p.read_text(encoding="utf-8")
        tree.lines[module_name(rel)] = len(text.splitlines())
        try:
            node = ast.parse(text, filename=str(rel))
        except SyntaxError as e:
            raise TreeError(f"{rel}:{e.lineno}: cannot parse: {e.msg}") from e
        tree.imports.extend(collect_imports(tree, module_name(rel), node))
    return tree


# ---------------------------------------------------------------------------------------------- rules
def find_cycles(tree: Tree) -> list[list[Import]]:
    """One cycle (as its chain of import edges) per strongly connected group of modules, smallest first."""
    graph: dict[str, dict[str, Import]] = {m: {} for m in tree.modules}
    for imp in tree.imports:
        if imp.target != imp.source:
            graph[imp.source].setdefault(imp.target, imp)
    cycles = []
    for group in strongly_connected(graph):
        if len(group) > 1:
            cycles.append(shortest_cycle(graph, group))
    return sorted(cycles, key=lambda c: (len(c), c[0].source))


def strongly_connected(graph: dict[str, dict[str, Import]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative (no recursion limit on deep chains)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    group = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        group.add(w)
                        if w == v:
                            break
                    groups.append(group)
    return groups


def shortest_cycle(graph: dict[str, dict[str, Import]], group: set[str]) -> list[Import]:
    """The shortest cycle through the group's first module (breadth-first inside the group)."""
    start = min(group)
    parent: dict[str, Import] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        nxt = []
        for v in frontier:
            for w, imp in sorted(graph[v].items()):
                if w not in group:
                    continue
                if w == start:
                    chain = [imp]
                    while chain[0].source != start:
                        chain.insert(0, parent[chain[0].source])
                    return chain
                if w not in seen:
                    seen.add(w)
                    parent[w] = imp
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in its strongly connected group")


def layer_of(name: str) -> tuple[str, int] | None:
    """``(layer folder, rank)`` of a module; ``None`` for a module outside every layer folder."""
    if name in TOP_MODULES:
        return "top", TOP_RANK
    parts = name.split(".")
    if len(parts) >= 2 and parts[1] in LAYER_RANKS:
        return parts[1], LAYER_RANKS[parts[1]]
    return None


def layer_violations(tree: Tree) -> list[str]:
    out = []
    root_is_leaf = not any(imp.source == PACKAGE for imp in tree.imports)
    for name, path in sorted(tree.modules.items()):
        if layer_of(name) is None:
            layers = "/, ".join(LAYER_RANKS)
            out.append(f"{path}: module outside every layer folder (move it into one of {layers}/)")
    for imp in sorted(tree.imports, key=lambda i: (i.path, i.line)):
        if imp.target == PACKAGE and root_is_leaf:
            continue  # ``from emolab import __version__``: the root imports nothing, nothing can loop through it
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if src is None or dst is None or src[0] == dst[0] or dst[1] < src[1]:
            continue  # unplaced modules are reported once above; own folder and lower layers are fine
        how = "a higher" if dst[1] > src[1] else "a same-rank"
        out.append(f"{imp.path}:{imp.line}: {imp.source} (layer {src[0]}) imports {imp.target} "
                   f"({how} layer, {dst[0]})")
    return out


def private_violations(tree: Tree) -> list[str]:
    out = []
    for imp in sorted(tree.imports, key=lambda i: (i.path, i.line)):
        if imp.target == imp.source:
            continue
        private = [n for n in imp.names if _private(n)]
        if private:
            out.append(f"{imp.path}:{imp.line}: {imp.source} imports private name(s) {', '.join(private)} "
                       f"from {imp.target}")
        hidden = [p for p in imp.target.split(".") if _private(p)]
        if hidden:
            package = imp.target.rpartition(".")[0]
            if not (imp.source == package or imp.source.startswith(package + ".")):
                out.append(f"{imp.path}:{imp.line}: {imp.source} imports the private module {imp.target} "
                           f"from outside its package {package}")
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def size_violations(tree: Tree) -> list[str]:
    out = []
    for name, path in sorted(tree.modules.items()):
        n = tree.lines[name]
        if n > MAX_LINES and not any(fnmatch.fnmatch(path, pat) for pat in LINE_EXEMPTIONS):
            out.append(f"{path}: {n} lines (at most {MAX_LINES}; split it or add a commented exemption)")
    for pat, why in LINE_EXEMPTIONS.items():
        matched = [name for name, path in tree.modules.items() if fnmatch.fnmatch(path, pat)]
        if matched and not any(tree.lines[name] > MAX_LINES for name in matched):
            out.append(f"tools/check_layers.py: stale exemption {pat!r} ({why}): no module it matches is over "
                       f"{MAX_LINES} lines; remove it")
    return out


def check(root: Path) -> dict[str, list[str]]:
    """Every violation under ``root/emolab``, by rule (an empty list when the rule holds)."""
    tree = load_tree(root)
    cycles = []
    for chain in find_cycles(tree):
        steps = " -> ".join([chain[0].source, *(f"{i.target} ({i.path}:{i.line})" for i in chain)])
        cycles.append(f"import cycle: {steps}")
    return {
        "import cycles": cycles,
        "layers": layer_violations(tree),
        "private names": private_violations(tree),
        "module size": size_violations(tree),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=Path(__file__).resolve().parents[1],
                        help="repository root holding the emolab/ package (default: this script's repository)")
    args = parser.parse_args(argv)
    try:
        report = check(args.root)
    except TreeError as e:
        print(f"check_layers: {e}", file=sys.stderr)
        return 2
    total = sum(len(v) for v in report.values())
    if not total:
        n = len(load_tree(args.root).modules)
        print(f"check_layers: ok ({n} modules under {args.root / PACKAGE}: no import cycle, layers import "
              f"downwards, no private name imported, none over {MAX_LINES} lines but the exempt)")
        return 0
    for rule, lines in report.items():
        if lines:
            print(f"== {rule}: {len(lines)}")
            print("\n".join(lines))
    print(f"check_layers: {total} violation(s) under {args.root / PACKAGE}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
