"""The dependency direction of ARCHITECTURE.md, checked on the source with ``ast``.

Every ``import`` counts: at module level, inside functions (a lazy import is still a dependency),
under ``if TYPE_CHECKING:``, and ``importlib.import_module("pkg...")`` with a literal (or f-string)
name. Allowed ("may import"):

    frontend    nothing of ours
    engine      frontend
    separation  frontend, engine          (never generation: a pipeline chaining them is voxsep's)
    generation  frontend, engine          (never separation)
    evaluation  frontend                  (no model code: it is handed callables)
    voxsep      frontend, engine, separation, generation, evaluation   (never bench)
    bench       everything: a leaf that nothing imports

``recipes/`` holds configs and scripts, not a package: nothing imports it. A second check finds
import cycles between the modules of one package (runtime imports only: ``TYPE_CHECKING`` blocks
are skipped, and so are a package ``__init__``'s imports of its own submodules); a cycle hidden by
a function-level import still counts.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

ALLOWED: dict[str, set[str]] = {
    "frontend": set(),
    "engine": {"frontend"},
    "separation": {"frontend", "engine"},
    "generation": {"frontend", "engine"},
    "evaluation": {"frontend"},
    "voxsep": {"frontend", "engine", "separation", "generation", "evaluation"},
    "bench": {"frontend", "engine", "separation", "generation", "evaluation", "voxsep"},
}
OURS = set(ALLOWED) | {"recipes", "tests"}


# ---------------------------------------------------------------------------------- the checker
def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _literal_module(node: ast.Call) -> str | None:
    """``importlib.import_module("a.b")`` / ``import_module(f"a.{x}")`` -> ``"a.b"`` / ``"a."``."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in ("import_module", "__import__") or not node.args:
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        return str(arg.values[0].value)
    return None


def imports_of(source: str, module: str, is_package: bool = False,
               type_checking: bool = True) -> list[tuple[str, int]]:
    """``(imported module name, line)`` for every import in ``source``, the module ``module``.

    Relative imports are resolved against ``module`` (``is_package``: the source is its
    ``__init__``). ``from a import b`` gives ``a.b`` (a submodule or a name in ``a``: the caller
    decides). ``type_checking=False`` skips ``if TYPE_CHECKING:`` bodies.
    """
    tree = ast.parse(source)
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test) and not type_checking:
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package_parts[:len(package_parts) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                found.append((f"{base}.{alias.name}" if alias.name != "*" else base, node.lineno))
        elif isinstance(node, ast.Call):
            name = _literal_module(node)
            if name:
                found.append((name.rstrip("."), node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def layering_violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """One line per import in ``source`` (module ``module``) that ARCHITECTURE.md forbids."""
    package = module.split(".")[0]
    allowed = ALLOWED[package] | {package}
    out = []
    for name, line in imports_of(source, module, is_package):
        top = name.split(".")[0]
        if top in OURS and top not in allowed:
            out.append(f"{module}:{line} imports {name} ({package} may import: "
                       f"{', '.join(sorted(ALLOWED[package])) or 'nothing of ours'})")
    return out


def _modules(package: str) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package ``__init__``) for every ``.py`` file of ``package``."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_package)
    return out


def import_cycles(sources: dict[str, tuple[str, bool]]) -> list[list[str]]:
    """Cycles (strongly connected groups of 2+ modules, or a module importing itself) among
    ``sources`` (module name -> (source, is_package)), runtime imports only."""
    graph: dict[str, set[str]] = {}
    for module, (source, is_package) in sources.items():
        edges = set()
        for name, _ in imports_of(source, module, is_package, type_checking=False):
            # "from a import b": the submodule a.b if there is one, else the package a
            target = name if name in sources else name.rpartition(".")[0] if name.rpartition(".")[0] in sources else None
            # a package's __init__ may gather its own submodules (a registry imports its members
            # at the end); Python initialises the package before any submodule anyway
            if target is None or target == module or (is_package and target.startswith(module + ".")):
                continue
            edges.add(target)
        graph[module] = edges
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph[v]:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles


# ---------------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_follow_the_dependency_direction(package):
    modules = _modules(package)
    assert modules, f"no modules found in {package}/"
    bad = []
    for module, (path, is_package) in modules.items():
        bad += layering_violations(path.read_text(), module, is_package)
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_has_no_import_cycles(package):
    sources = {m: (p.read_text(), is_pkg) for m, (p, is_pkg) in _modules(package).items()}
    assert import_cycles(sources) == []


def test_recipes_are_not_a_package():
    assert not (ROOT / "recipes" / "__init__.py").exists()


def test_checker_catches_upward_imports():
    # a new function-level upward import in separation is caught, with its line
    source = "import torch\nfrom frontend import load_audio\n\n\ndef f():\n    from voxsep.registry import load_model\n"
    bad = layering_violations(source, "separation.newmodule")
    assert len(bad) == 1 and "separation.newmodule:6 imports voxsep.registry" in bad[0]
    # sideways (separation <-> generation), evaluation -> model code, voxsep -> bench, to recipes
    assert layering_violations("import separation.model\n", "generation.x")
    assert layering_violations("from separation import model\n", "evaluation.x")
    assert layering_violations("from engine.checkpoint import load_checkpoint\n", "evaluation.x")
    assert layering_violations("import importlib\nimportlib.import_module(f'bench.{name}')\n", "voxsep.commands.x")
    assert layering_violations("if TYPE_CHECKING:\n    from voxsep import cli\n", "frontend.x")
    assert layering_violations("from recipes.tts_separation import x\n", "voxsep.x")
    # relative imports resolve against the module
    assert imports_of("from .model import X\n", "separation.losses") == [("separation.model.X", 1)]
    assert imports_of("from . import model\n", "separation", is_package=True) == [("separation.model", 1)]
    # what is allowed passes
    assert layering_violations("from frontend import load_audio\nimport engine.checkpoint\n", "generation.x") == []
    assert layering_violations("import bench.metrics\nimport voxsep.cli\n", "bench.y") == []


def test_cycle_finder_sees_function_level_imports():
    sources = {
        "pkg": ("", True),
        "pkg.a": ("from pkg.b import g\n", False),
        "pkg.b": ("def g():\n    from pkg.a import f\n", False),
        "pkg.c": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import f\n", False),
    }
    assert import_cycles(sources) == [["pkg.a", "pkg.b"]]
    # a package __init__ that gathers (registers) its submodules is not a cycle
    registry = {"reg": ("from reg import a\n", True), "reg.a": ("from reg import register\n", False)}
    assert import_cycles(registry) == []
    # a type-only import does not make a cycle
    sources["pkg.a"] = ("from pkg.c import h\n", False)
    sources["pkg.b"] = ("", False)
    assert import_cycles(sources) == []
