"""The architecture holds: one registry of frameworks, layers that import downwards only, every
framework's trainer satisfying the Trainer protocol."""

from __future__ import annotations

import ast
import subprocess
import sys
import types
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from services.common import frameworks
from tests.conftest import ROOT, venv_python

PACKAGES = ("orchestrator", "services", "benchmarks")


def first_party_imports(path: Path) -> tuple[set[str], list[str]]:
    """(modules of ours that path imports at its top level, those it imports inside functions)."""
    module = _module_name(path)
    top, nested = set(), []
    tree = ast.parse(path.read_text())
    nested_nodes = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
        for n in ast.walk(f)
    }
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:  # relative: resolve against this module's package
                package = module.rsplit(".", node.level)[0]
                base = f"{package}.{base}"
            # `from orchestrator import cli` imports orchestrator.cli.
            names = [
                f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base for a in node.names
            ]
        ours = [n for n in names if n.split(".")[0] in PACKAGES]
        (nested.extend if id(node) in nested_nodes else top.update)(ours)
    return top, nested


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def graph() -> dict[str, set[str]]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[_module_name(path)] = first_party_imports(path)[0]
    return {m: {i for i in imports if i in modules and i != m} for m, imports in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first search, as the list of modules around it."""
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_cycle_detection_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_first_party_imports_are_an_acyclic_graph():
    edges = graph()
    assert edges.get("orchestrator.cli")  # the graph is real
    assert cycles(edges) == []


# The orchestrator's rooms, top to bottom: a module imports only from its own room and the rooms
# below it (errors.py, at the bottom, is for everyone). The report sits above running only to
# name the parity check's tolerances.
ROOMS = ("cli", "commands", "friction", "report", "running", "inputs", "data", "results", "errors")


def room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "orchestrator" or len(parts) == 1 or parts[1] == "__main__":
        return None
    return parts[1]


def test_every_orchestrator_module_is_in_a_room():
    rooms = {room(m) for m in graph()} - {None}
    assert rooms == set(ROOMS)


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    """Every import of a module from a room above its own."""
    upward = []
    for module, imports in sorted(edges.items()):
        here = room(module)
        for imported in sorted(imports):
            there = room(imported)
            if here and there and ROOMS.index(there) < ROOMS.index(here):
                upward.append(f"{module} -> {imported}")
    return upward


def test_room_rules_catch_a_planted_upward_import():
    planted = {"orchestrator.results.schema": {"orchestrator.commands.run"}}
    assert upward_imports(planted) == ["orchestrator.results.schema -> orchestrator.commands.run"]
    assert upward_imports({"orchestrator.commands.run": {"orchestrator.results.schema"}}) == []


def test_the_orchestrator_imports_only_downwards_between_rooms():
    assert upward_imports(graph()) == []


def test_no_function_level_imports_of_our_own_modules_in_the_orchestrator():
    # Function-level imports are how cycles hide; the orchestrator imports at the top only.
    nested = {
        str(path.relative_to(ROOT)): found
        for path in sorted((ROOT / "orchestrator").rglob("*.py"))
        if (found := first_party_imports(path)[1])
    }
    assert nested == {}


def test_the_orchestrator_never_imports_a_framework():
    for path in sorted((ROOT / "orchestrator").rglob("*.py")):
        source = path.read_text()
        for framework in ("torch", "tensorflow", "keras", "jax", "flax"):
            assert f"import {framework}" not in source, (path, framework)


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of the packages outside ours and the standard library that path imports,
    except under `try: ... except ImportError` (optional: the module runs without them)."""
    tree = ast.parse(path.read_text())
    optional = {
        id(n)
        for t in ast.walk(tree)
        if isinstance(t, ast.Try)
        and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
            for h in t.handlers
        )
        for stmt in t.body
        for n in ast.walk(stmt)
    }
    names = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    # `fwbench` is our generated protobuf code.
    return names - set(PACKAGES) - {"fwbench"} - sys.stdlib_module_names


def reachable(module: str) -> set[str]:
    """module and every first-party module it imports, at any depth, at the top or in functions."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        path = ROOT.joinpath(*name.split("."))
        path = path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"
        if name in seen or not path.exists():
            continue
        seen.add(name)
        top, nested = first_party_imports(path)
        todo.extend(i if _is_module(i) else i.rsplit(".", 1)[0] for i in top | set(nested))
    return seen


def installed_by(requirements: Path) -> set[str]:
    """The distributions a requirements file installs: those it names and their dependencies."""
    names = [
        Requirement(line.split("#")[0].strip()).name
        for line in requirements.read_text().splitlines()
        if line.split("#")[0].strip() and not line.startswith("-")
    ]
    found: set[str] = set()
    while names:
        name = names.pop().lower().replace("_", "-")
        if name in found:
            continue
        found.add(name)
        for spec in metadata.requires(name) or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                names.append(requirement.name)
    return found


def test_the_orchestrators_image_installs_every_package_its_code_imports():
    # The image installs orchestrator/requirements.txt only; the test venv has more (the services'
    # runtime), so an import that only the services' requirements satisfy passes every other
    # test and fails the orchestrator's container at start-up.
    installed = installed_by(ROOT / "orchestrator" / "requirements.txt")
    providers = metadata.packages_distributions()
    missing = {}
    for module in sorted({m for p in (ROOT / "orchestrator").rglob("*.py") for m in
                          reachable(_module_name(p))}):  # fmt: skip
        path = ROOT.joinpath(*module.split("."))
        path = path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"
        for name in third_party_imports(path):
            dists = {d.lower().replace("_", "-") for d in providers.get(name, [name])}
            if not dists & installed:
                missing.setdefault(name, module)
    assert missing == {}, f"imported but not in orchestrator/requirements.txt: {missing}"


def test_every_framework_folder_is_in_the_registry_and_back():
    folders = {
        p.parent.name for p in (ROOT / "services").glob("*/trainer.py") if p.parent.name != "common"
    }
    assert folders == set(frameworks.NAMES)
    for framework in frameworks.FRAMEWORKS.values():
        for path in (framework.requirements, framework.dockerfile, framework.folder / "models.py"):
            assert path.exists(), path
        assert (framework.folder / "smoke.py").exists()  # the shared-environment probe's step


def test_the_trainer_check_names_what_a_module_lacks():
    good = types.ModuleType("good")
    good.describe = lambda: None
    good.inspect = lambda request: None
    good.train = lambda spec, recorder: None
    frameworks.check_trainer(good)
    bad = types.ModuleType("bad")
    bad.describe = lambda: None
    bad.train = lambda spec: None
    with pytest.raises(TypeError) as error:
        frameworks.check_trainer(bad)
    assert "no function inspect(request)" in str(error.value)
    assert "train(spec) should take (spec, recorder)" in str(error.value)


@pytest.mark.framework
@pytest.mark.parametrize("name", frameworks.NAMES)
def test_every_registered_trainer_satisfies_the_protocol(name):
    # In the framework's own environment, as the worker loads it.
    result = subprocess.run(
        [venv_python(name), "-c", f"from services.common import frameworks; "
         f"print(frameworks.get({name!r}).load_trainer().__name__)"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"services.{name}.trainer"


def test_docs_architecture_names_every_module_in_its_layer():
    # The one-page map (docs/architecture.md) lists each module of orchestrator/ and
    # services/common/ under its own heading, so a new module cannot go unmentioned.
    doc = (ROOT / "docs" / "architecture.md").read_text()
    diagram = doc.split("```", 2)[1]
    layers = {
        "orchestrator": diagram.split("\norchestrator/", 1)[1].split("\nservices/common/", 1)[0],
        "services/common": diagram.split("\nservices/common/", 1)[1].split("\nservices/<", 1)[0],
    }
    for layer, text in layers.items():
        modules = {
            p.stem for p in (ROOT / layer).glob("*.py") if p.stem not in ("__init__", "__main__")
        }
        missing = sorted(m for m in modules if f"{m}.py" not in text.split())
        assert missing == [], f"docs/architecture.md's {layer}/ lacks {missing}"
