"""Private names imported across modules, and import cycles, in the repository's packages.

An underscore means "only this module uses it": a name another module needs is public, or it
moves to where it is used, and the modules import each other without cycles. This script
reads the sources with `ast` (nothing is imported) and lists what breaks either rule:

* ``private``: a module imports a name with a leading underscore from another module
  (``from fdcam.results import _row``), or reads one as an attribute of an imported module
  (``results._row``), at the top or lazily inside a function;
* ``cycle``: modules that import each other, directly or through others, counting the
  imports inside functions (a lazy import only postpones a cycle). Imports under
  ``if TYPE_CHECKING:`` are left out: they never run.

Usage: ``python -m scripts.check_imports [--root DIR] [PACKAGE ...]`` (default: fdcam and
scripts under the repository root). Exit status 1 when anything is reported, 0 otherwise.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fdcam", "scripts")


@dataclass(frozen=True)
class PrivateImport:
    """`module` (at `path`:`line`) uses `name`, private to `source`."""

    path: Path
    line: int
    module: str
    source: str
    name: str

    def __str__(self) -> str:
        return f"private: {self.path}:{self.line}: {self.module} uses {self.source}.{self.name}"


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def module_files(root: Path, packages: Sequence[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the packages under `root`."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, skipping the bodies of ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module name of a (possibly relative) ``from … import``."""
    if not node.level:
        return node.module or ""
    package = module.split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def analyse(root: Path, packages: Sequence[str]) -> tuple[list[PrivateImport], list[list[str]]]:
    """(private imports across modules, import cycles) of the packages under `root`."""
    modules = module_files(root, packages)
    private: list[PrivateImport] = []
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        shown = path.relative_to(root)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        aliases: dict[str, str] = {}  # local name -> one of our modules
        nodes = list(_runtime_nodes(tree))
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        edges[module].add(alias.name)
                        if alias.asname:
                            aliases[alias.asname] = alias.name
                    private.extend(PrivateImport(shown, node.lineno, module, alias.name, part)
                                   for part in alias.name.split(".")[1:] if is_private(part)
                                   and alias.name.split(".")[0] in packages)
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(module, path, node)
                if source.split(".")[0] not in packages:
                    continue
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    if submodule in modules:  # from package import module
                        edges[module].add(submodule)
                        aliases[alias.asname or alias.name] = submodule
                    elif source in modules:
                        edges[module].add(source)
                    if is_private(alias.name) and source != module:
                        private.append(PrivateImport(shown, node.lineno, module, source,
                                                     alias.name))
        for node in nodes:
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in aliases and is_private(node.attr) \
                    and aliases[node.value.id] != module:
                private.append(PrivateImport(shown, node.lineno, module,
                                             aliases[node.value.id], node.attr))
        edges[module].discard(module)
    return sorted(set(private), key=lambda p: (str(p.path), p.line, p.name)), cycles(edges)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle ``[a, b, …, a]`` per strongly connected component of two or more modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(_one_cycle(component, edges) for component in components)


def _one_cycle(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """The shortest cycle through the component's first module (breadth-first)."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges[v] & members):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return component  # unreachable for a strongly connected component


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="*", default=list(PACKAGES))
    parser.add_argument("--root", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    private, found = analyse(args.root, args.packages)
    for item in private:
        print(item)
    for cycle in found:
        print("cycle: " + " -> ".join(cycle))
    print(f"{len(private)} private name(s) imported across modules, {len(found)} import "
          f"cycle(s) in {', '.join(args.packages)}")
    return 1 if private or found else 0


if __name__ == "__main__":
    sys.exit(main())
