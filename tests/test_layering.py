"""The package's layering, read from its own imports (ast; an import inside a function counts).

* The runtime (every module outside ``sessctl/cli/``) never imports click or rich.
* The runtime never imports ``sessctl.cli``: the command line is a client of the library.
* No two modules import each other, directly or round a longer cycle.

``sessctl/__main__.py`` is the command's entry point (``python -m sessctl``): it belongs
to the command line. Imports under ``if TYPE_CHECKING:`` never run, so they do not count.
Importing a submodule also runs its package's ``__init__``; that implicit edge is not
counted either (only what a module names).

The checks run on the real package and on small fake packages in tmp_path, so that the
checks themselves are seen to fail.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import sessctl

CLI_ONLY = {"click", "rich"}


class Module:
    def __init__(self, name: str, path: Path, is_package: bool) -> None:
        self.name = name
        self.path = path
        self.is_package = is_package
        self.imports: list[tuple[str, int]] = []  # (absolute module name, line)


def _type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom, at any depth, except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if _type_checking_block(child):
                stack.extend(child.orelse)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            stack.append(child)


def read_package(root: Path, package: str) -> dict[str, Module]:
    """The modules of ``root/package``, each with the absolute names it imports."""
    modules: dict[str, Module] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules[".".join(parts)] = Module(".".join(parts), path, is_package)
    for mod in modules.values():
        tree = ast.parse(mod.path.read_text(), str(mod.path))
        here = mod.name.split(".") if mod.is_package else mod.name.split(".")[:-1]
        for node in _import_nodes(tree):
            if isinstance(node, ast.Import):
                mod.imports += [(alias.name, node.lineno) for alias in node.names]
                continue
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                # `from pkg import mod` names the module; `from mod import name` names mod.
                mod.imports.append((sub if sub in modules else target, node.lineno))
    return modules


def _owner(name: str, modules: dict[str, Module]) -> str | None:
    """The package module an imported name resolves to (its longest known prefix)."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def _is_cli(name: str, package: str) -> bool:
    cli = f"{package}.cli"
    return name == cli or name.startswith(cli + ".") or name == f"{package}.__main__"


def graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for mod in modules.values():
        for imported, _ in mod.imports:
            owner = _owner(imported, modules)
            if owner is not None and owner != mod.name:
                edges[mod.name].add(owner)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a path back to its start) per strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(edges):
        if v not in index:
            visit(v)

    found = []
    for group in groups:
        start = min(group)
        # Shortest way back to start inside the group (breadth first).
        paths = {start: [start]}
        queue = [start]
        cycle = None
        while queue and cycle is None:
            v = queue.pop(0)
            for w in sorted(edges[v] & group):
                if w == start:
                    cycle = paths[v] + [start]
                    break
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    queue.append(w)
        found.append(cycle)
    return sorted(found)


def problems(root: Path, package: str) -> list[str]:
    """Every breach of the layering, one line each (empty when the package is clean)."""
    modules = read_package(root, package)
    found = []
    for mod in modules.values():
        if _is_cli(mod.name, package):
            continue
        where = mod.path.relative_to(root)
        for imported, line in mod.imports:
            if imported.split(".")[0] in CLI_ONLY:
                found.append(f"{where}:{line}: the runtime imports {imported} (only {package}/cli/ may)")
            elif _is_cli(imported, package):
                found.append(f"{where}:{line}: the runtime imports {imported}")
    for cycle in cycles(graph(modules)):
        found.append("import cycle: " + " -> ".join(cycle))
    return found


# -- the real package -------------------------------------------------------------------------

PACKAGE_ROOT = Path(sessctl.__file__).resolve().parent.parent


def test_the_runtime_never_imports_click_rich_or_the_cli():
    found = [p for p in problems(PACKAGE_ROOT, "sessctl") if not p.startswith("import cycle")]
    assert found == [], "\n".join(found)


def test_no_two_modules_of_the_package_import_each_other():
    found = [p for p in problems(PACKAGE_ROOT, "sessctl") if p.startswith("import cycle")]
    assert found == [], "\n".join(found)


def test_importing_every_runtime_module_loads_no_cli():
    """What the ast says, seen at run time: the whole runtime, imported, brings in no
    sessctl.cli and no rich (click is Flask's own dependency, so it is not asked here)."""
    runtime = sorted(
        name for name in read_package(PACKAGE_ROOT, "sessctl") if not _is_cli(name, "sessctl")
    )
    assert "sessctl.middleware" in runtime and "sessctl.session" in runtime
    code = (
        "import importlib, sys\n"
        f"for name in {runtime!r}: importlib.import_module(name)\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith(('sessctl.cli', 'rich')))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


# -- the checks themselves, on fake packages ---------------------------------------------------


def write_package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


CLEAN = {
    "fake/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .store import Store\n",
    "fake/store.py": "import json\nfrom .errors import Gone\n",
    "fake/errors.py": "class Gone(Exception): ...\n",
    "fake/session.py": """
        from typing import TYPE_CHECKING
        from . import store
        if TYPE_CHECKING:
            from fake.cli import app  # types only: never runs
        def later():
            from .errors import Gone
            return Gone
        """,
    "fake/cli/__init__.py": "import click\nfrom .app import main\nfrom ..session import later\n",
    "fake/cli/app.py": "import rich\nfrom fake import store\nfrom . import render\n",
    "fake/cli/render.py": "from rich.table import Table\n",
    "fake/__main__.py": "from fake.cli import main\n",
}


def test_a_clean_fake_package_passes(tmp_path):
    write_package(tmp_path, CLEAN)
    assert problems(tmp_path, "fake") == []
    edges = graph(read_package(tmp_path, "fake"))
    assert edges["fake.session"] == {"fake.store", "fake.errors"}  # the function-level import counts
    assert edges["fake.cli"] == {"fake.cli.app", "fake.session"}
    assert edges["fake.cli.app"] == {"fake.store", "fake.cli.render"}


def test_a_fake_package_with_every_fault_fails(tmp_path):
    write_package(tmp_path, {
        **CLEAN,
        # click imported inside a function of the runtime, rich at the top of another module
        "fake/demo.py": "def run():\n    import click.testing\n    from fake.cli import app\n",
        "fake/report.py": "from rich.console import Console\n",
        # store <-> session through a function-level import
        "fake/store.py": "from .errors import Gone\ndef session():\n    from .session import later\n",
        # a longer cycle: a -> b -> c -> a, through relative imports of a subpackage
        "fake/sub/__init__.py": "",
        "fake/sub/a.py": "from . import b\n",
        "fake/sub/b.py": "from .c import thing\n",
        "fake/sub/c.py": "def f():\n    from ..sub.a import x\n",
    })
    assert problems(tmp_path, "fake") == [
        "fake/demo.py:2: the runtime imports click.testing (only fake/cli/ may)",
        "fake/demo.py:3: the runtime imports fake.cli.app",
        "fake/report.py:1: the runtime imports rich.console (only fake/cli/ may)",
        "import cycle: fake.session -> fake.store -> fake.session",
        "import cycle: fake.sub.a -> fake.sub.b -> fake.sub.c -> fake.sub.a",
    ]
