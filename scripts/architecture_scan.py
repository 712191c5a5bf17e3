"""Measure the package's architecture: import cycles, imports inside functions, process state.

A maintainer's tool, not library runtime.  It reads the sources with ``ast`` (nothing is
imported), so it runs in any Python 3.11 without torch:

    python scripts/architecture_scan.py            # text report
    python scripts/architecture_scan.py --json     # the same figures as JSON

Figures: internal import edges (module level and inside functions), strongly connected
components of the import graph (every import counts, lazy ones included: a cycle through a
function-level import is still a cycle), module-level mutable globals (names bound at module
level to a list/dict/set literal or constructor call, or to an instance of a class the module
defines, or rebound through ``global``),
``global`` statements, module-level locks, private cross-module reads (``from x import _y`` or
``x._y`` of a sibling module), private cross-module writes (``x._y = ...`` where ``x`` is a
module of the package), and the line counts of the largest modules and of each built-in patch.
Imports under ``if TYPE_CHECKING:`` never run, but a cycle through them is still a cycle
between two modules that need each other: they count for the cycles, and are reported apart.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "blackwell_compat"
_MUTABLE_CALLS = {
    "dict",
    "list",
    "set",
    "defaultdict",
    "OrderedDict",
    "WeakKeyDictionary",
    "WeakValueDictionary",
    "WeakSet",
    "local",
    "deque",
    "Counter",
}
_LOCK_CALLS = {"Lock", "RLock", "Condition"}


def _module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


class _Scanner(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: set[str]) -> None:
        self.module, self.is_package, self.known = module, is_package, known
        self.depth = 0
        self.edges: list[tuple[str, bool]] = []  # (target, inside a function)
        self.type_only: list[str] = []  # targets imported under ``if TYPE_CHECKING:``
        self.checking = False
        self.private_reads: list[str] = []
        self.private_writes: list[str] = []
        self.module_aliases: dict[str, str] = {}  # local name -> internal module it names
        self.global_statements = 0
        self.global_names: set[str] = set()

    def _target(self, name: str) -> str | None:
        while name and name not in self.known:
            name = name.rpartition(".")[0]
        return name or None

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        # ``if TYPE_CHECKING:`` imports never run: they are kept apart (cycles only).
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            self.checking = True
            for child in node.body:
                self.visit(child)
            self.checking = False
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _edge(self, target: str | None) -> None:
        if not target or target == self.module:
            return
        if self.checking:
            self.type_only.append(target)
        else:
            self.edges.append((target, self.depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.startswith(PACKAGE):
                self._edge(self._target(alias.name))
                if alias.asname and alias.name in self.known:
                    self.module_aliases[alias.asname] = alias.name

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve(self.module, self.is_package, node)
        if not base.startswith(PACKAGE):
            return
        for alias in node.names:
            full = f"{base}.{alias.name}"
            target = self._target(full) if full in self.known else self._target(base)
            self._edge(target)
            if full in self.known:
                self.module_aliases[alias.asname or alias.name] = full
            if (
                alias.name.startswith("_")
                and not alias.name.startswith("__")
                and full not in self.known
            ):
                self.private_reads.append(f"{base}.{alias.name}")

    def _writes(self, targets: list[ast.expr]) -> None:
        for target in targets:
            if isinstance(target, (ast.Tuple, ast.List)):
                self._writes(list(target.elts))
            elif (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id in self.module_aliases
                and target.attr.startswith("_")
                and not target.attr.startswith("__")
            ):
                owner = self.module_aliases[target.value.id]
                if owner != self.module:
                    self.private_writes.append(f"{owner}.{target.attr}")

    def visit_Assign(self, node: ast.Assign) -> None:
        self._writes(node.targets)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._writes([node.target])
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._writes([node.target])
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> None:
        self.global_statements += 1
        self.global_names.update(node.names)


def _module_globals(tree: ast.Module) -> tuple[set[str], int]:
    mutable: set[str] = set()
    locks = 0
    # An instance of a class the module defines holds state too (``local = _ThreadState()``).
    own_classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if value is None:
            continue
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        # UPPER_CASE tables and ``__all__`` are constants by convention; lower-case names bound
        # to containers are state.
        names = [n for n in names if not n.lstrip("_").isupper() and not n.startswith("__")]
        if isinstance(value, (ast.List, ast.Dict, ast.Set)):
            mutable.update(names)
        elif isinstance(value, ast.Call):
            func = value.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if fname in _LOCK_CALLS:
                locks += 1
                continue
            if fname in ("getLogger", "TypeVar"):
                continue
            if fname in _MUTABLE_CALLS or fname in own_classes:
                mutable.update(names)
    return mutable, locks


def _sccs(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def scan(root: Path = ROOT) -> dict[str, object]:
    files = sorted((root / PACKAGE).rglob("*.py"))
    modules = {_module_name(f, root): f for f in files}
    known = set(modules)
    graph: dict[str, set[str]] = defaultdict(set)
    inside = total = type_only = 0
    private: list[str] = []
    writes: list[str] = []
    global_statements = 0
    mutable_globals: dict[str, list[str]] = {}
    locks = 0
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        scanner = _Scanner(name, path.name == "__init__.py", known)
        scanner.visit(tree)
        for target, in_function in scanner.edges:
            # A package's own submodules importing the package (or the reverse) is not a
            # layering edge worth counting twice; keep the edge anyway for cycles.
            graph[name].add(target)
            total += 1
            inside += in_function
        for target in scanner.type_only:
            graph[name].add(target)
            type_only += 1
        private.extend(f"{name}: {p}" for p in scanner.private_reads)
        writes.extend(f"{name}: {p}" for p in scanner.private_writes)
        global_statements += scanner.global_statements
        mutable, module_locks = _module_globals(tree)
        mutable |= scanner.global_names
        if mutable:
            mutable_globals[name] = sorted(mutable)
        locks += module_locks
    # Edges to a package's __init__ from its own submodules are how relative imports of the
    # package's public names look; they are cycles only if __init__ imports them back.
    cycles = _sccs(graph)
    lines = {
        name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules.items()
    }
    largest = sorted(lines.items(), key=lambda kv: -kv[1])[:8]
    patches = {
        name: count
        for name, count in sorted(lines.items())
        if name.startswith(f"{PACKAGE}.patches.") and count > 1
    }
    return {
        "modules": len(modules),
        "internal_imports": total,
        "imports_inside_functions": inside,
        "type_only_imports": type_only,
        "cycles": cycles,
        "private_cross_module_imports": sorted(private),
        "private_cross_module_writes": sorted(writes),
        "module_globals": sum(len(v) for v in mutable_globals.values()),
        "modules_with_state": len(mutable_globals),
        "state_by_module": mutable_globals,
        "module_locks": locks,
        "global_statements": global_statements,
        "largest_modules": dict(largest),
        "patch_lines": patches,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    result = scan()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"modules: {result['modules']}")
    print(
        f"internal imports: {result['internal_imports']} "
        f"({result['imports_inside_functions']} inside functions; "
        f"{result['type_only_imports']} more under TYPE_CHECKING)"
    )
    cycles = result["cycles"]
    assert isinstance(cycles, list)
    print(f"import cycles (strongly connected components): {len(cycles)}")
    for component in cycles:
        print("  " + " <-> ".join(component))
    private = result["private_cross_module_imports"]
    assert isinstance(private, list)
    print(f"private cross-module imports: {len(private)}")
    for item in private:
        print(f"  {item}")
    writes = result["private_cross_module_writes"]
    assert isinstance(writes, list)
    print(f"private cross-module writes: {len(writes)}")
    for item in writes:
        print(f"  {item}")
    print(
        f"module-level mutable globals: {result['module_globals']} in "
        f"{result['modules_with_state']} modules; module locks: {result['module_locks']}; "
        f"global statements: {result['global_statements']}"
    )
    state = result["state_by_module"]
    assert isinstance(state, dict)
    for name, names in state.items():
        print(f"  {name}: {', '.join(names)}")
    print("largest modules (lines):")
    largest = result["largest_modules"]
    assert isinstance(largest, dict)
    for name, count in largest.items():
        print(f"  {count:5d} {name}")
    print("built-in patches (lines):")
    patch_lines = result["patch_lines"]
    assert isinstance(patch_lines, dict)
    for name, count in patch_lines.items():
        print(f"  {count:5d} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
