"""The code's shape: no import circles, no module reaching for another's private names.

Read with ``ast`` from the files of ``edge/``, ``training/`` and ``export/`` (nothing is
imported): every ``import`` counts, at module level, inside functions and under
``TYPE_CHECKING`` alike. A circle is a set of modules that import each other, directly or
through others; a private name is one with a leading underscore (not a dunder), taken from
another of these modules by ``from M import _name`` or as ``M._name``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "training", "export")

CHECKED = PACKAGES


def _sources() -> dict[str, tuple[str, bool]]:
    """Module name -> (its source, whether it is a package's ``__init__``)."""
    sources = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            sources[".".join(parts)] = (path.read_text(), path.name == "__init__.py")
    return sources


def _own(name: str, modules: dict) -> str | None:
    """The longest prefix of the dotted ``name`` that is one of ``modules``."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".")
    if not is_package:
        package.pop()
    package = package[:len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _scan(sources: dict[str, tuple[str, bool]]
          ) -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """(module -> the modules it imports, [(module, from module, private name)])."""
    graph: dict[str, set[str]] = {m: set() for m in sources}
    private: list[tuple[str, str, str]] = []
    for module, (text, is_package) in sources.items():
        tree = ast.parse(text, module)
        aliases: dict[str, str] = {}  # a local name bound to one of the modules (or a package)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _own(alias.name, sources)
                    if target:
                        graph[module].add(target)
                        local = alias.asname or alias.name.split(".")[0]
                        aliases[local] = alias.name if alias.asname else local
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, is_package, node)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    target = full if full in sources else _own(base, sources)
                    if not target:
                        continue
                    graph[module].add(target)
                    if full in sources:
                        aliases[alias.asname or alias.name] = full
                    elif _private(alias.name):
                        private.append((module, target, alias.name))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                dotted = _dotted(node.value)
                head, _, rest = (dotted or "").partition(".")
                if head not in aliases:
                    continue
                target = ".".join(filter(None, [aliases[head], rest]))
                if target in sources and target != module:
                    private.append((module, target, node.attr))
        graph[module].discard(module)
    return graph, private


def _circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


SOURCES = _sources()
GRAPH, PRIVATE = _scan(SOURCES)


def test_the_scan_sees_the_imports_it_should() -> None:
    """The checks below would pass on an empty graph: make sure this one is real."""
    assert {"training.loop", "training.train", "export.onnx_models"} <= set(SOURCES)
    assert "training.loop" in GRAPH["training.train"]
    assert "training.loop" in GRAPH["training.anp"]
    assert "export.onnx_models" in GRAPH["export.anp_onnx"]
    assert "training.data" in GRAPH["training.loop"]  # from training import data as tdata
    assert "edge.synth.common" in GRAPH["edge.synth"]  # from edge.synth import common


@pytest.mark.parametrize("package", CHECKED)
def test_no_import_circles(package: str) -> None:
    circles = [sorted(c) for c in _circles(GRAPH) if any(m.split(".")[0] == package for m in c)]
    assert not circles, f"import circles: {circles}; move what both need into a third module"


@pytest.mark.parametrize("package", CHECKED)
def test_no_module_imports_a_private_name_of_another(package: str) -> None:
    found = sorted({p for p in PRIVATE if p[0].split(".")[0] == package})
    assert not found, (f"private names used across modules (module, from, name): {found}; "
                       "make the name public or move the code that needs it")


COMMAND_FUNCTIONS = {"run", "main", "options_from", "add_arguments"}  # parse and hand over


def _namespace_parameters(text: str) -> list[str]:
    """Functions outside a command's own that take parsed flags: a parameter annotated
    ``argparse.Namespace``, or an unannotated one called ``args``."""
    found = []
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) \
                or node.name in COMMAND_FUNCTIONS:
            continue
        for arg in node.args.posonlyargs + node.args.args + node.args.kwonlyargs:
            annotation = ast.unparse(arg.annotation) if arg.annotation else ""
            if "Namespace" in annotation or (arg.arg == "args" and not annotation):
                found.append(f"{node.name}({arg.arg})")
    return found


@pytest.mark.parametrize("package", CHECKED)
def test_library_code_takes_typed_arguments_not_parsed_flags(package: str) -> None:
    found = {module: names for module, (text, _) in SOURCES.items()
             if module.split(".")[0] == package and (names := _namespace_parameters(text))}
    assert not found, (f"functions taking an argparse.Namespace: {found}; give them typed "
                       "options (a dataclass or pydantic model) built by the command's run()")


def test_the_detectors_catch_what_they_look_for() -> None:
    """A made-up package with a circle through a function-level import and both kinds of
    private access; the real tree is checked above with the same functions."""
    sources = {
        "pkg": ("", True),
        "pkg.a": ("from pkg import b\n", False),
        "pkg.b": ("def f():\n    from pkg.c import helper\n", False),
        "pkg.c": ("import pkg.a as first\nfrom . import d\nfrom .d import _hidden\n"
                  "first._secret\nd.public._not_a_module\n", False),
        "pkg.d": ("import numpy as np\nnp._private\n_own = 1\n", False),
    }
    graph, private = _scan(sources)
    assert graph["pkg.c"] == {"pkg.a", "pkg.d"}
    assert _circles(graph) == [frozenset({"pkg.a", "pkg.b", "pkg.c"})]
    assert sorted(private) == [("pkg.c", "pkg.a", "_secret"), ("pkg.c", "pkg.d", "_hidden")]
    assert _namespace_parameters(
        "def run(args): pass\ndef read_choice(args): pass\n"
        "def fit(options: argparse.Namespace): pass\ndef ok(args: ModelArgs): pass\n"
    ) == ["read_choice(args)", "fit(options)"]
