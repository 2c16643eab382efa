"""The layering of docs/architecture.md §3 as a checked contract: which package may import what.

    cli → search → {engine, tracking} → {resetting, data, models, config and the other
    top-level modules}

Only `tracking` talks to MLflow, only `search` imports Ray and Optuna, `recommend` uses no
module inside `search`, and the CLI imports no Ray itself (it calls functions of `search`).
Imports are read from the source with `ast`, those inside functions included; imports under
`if TYPE_CHECKING:` are left out, as they never run.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

import reset_tune

PACKAGE_ROOT = Path(reset_tune.__file__).parent
TOP_LEVEL = "(top-level modules)"  # reset_tune/*.py: config, names, plots, errors, ...

_THIRD_PARTY_SERVICES = ("ray", "optuna", "mlflow")
_HIGHER_LAYERS = (
    "reset_tune.search",
    "reset_tune.tracking",
    "reset_tune.recommend",
    "reset_tune.cli",
)
_LOWER_LAYER_BANS = _THIRD_PARTY_SERVICES + _HIGHER_LAYERS

# package -> (what its modules may not import, whether the rule holds for everything they reach)
# A name bans that module and every module below it; "reset_tune.search." (trailing dot) bans the
# modules inside `search` but not the package's public face, `reset_tune.search` itself.
# "Reach": the rule holds for the whole chain of imports from the package's modules, not only for
# the imports they write themselves (the CLI and search must call down, so theirs are direct only).
RULES: dict[str, tuple[tuple[str, ...], bool]] = {
    "engine": (_LOWER_LAYER_BANS, True),
    "data": (_LOWER_LAYER_BANS, True),
    "models": (_LOWER_LAYER_BANS, True),
    "resetting": (_LOWER_LAYER_BANS, True),
    TOP_LEVEL: (_LOWER_LAYER_BANS, True),
    # tracking sits beside the engine, under search: it reaches neither
    "tracking": (
        (
            "ray",
            "optuna",
            "reset_tune.engine",
            "reset_tune.search",
            "reset_tune.recommend",
            "reset_tune.cli",
        ),
        True,
    ),
    "recommend": (("ray", "optuna", "mlflow", "reset_tune.search.", "reset_tune.cli"), False),
    "search": (("mlflow", "reset_tune.recommend", "reset_tune.cli"), False),
    "cli": (_THIRD_PARTY_SERVICES, False),
    # Renders and checks manifests: reads search's spec and store settings, runs nothing.
    "deploy": (
        (
            "ray",
            "optuna",
            "mlflow",
            "reset_tune.tracking",
            "reset_tune.recommend",
            "reset_tune.cli",
        ),
        False,
    ),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_of(module: str) -> str:
    if module == "reset_tune.__main__":  # `python -m reset_tune` is the CLI
        return "cli"
    parts = module.split(".")
    is_subpackage = len(parts) > 1 and (PACKAGE_ROOT / parts[1]).is_dir()
    return parts[1] if is_subpackage else TOP_LEVEL


def _is_type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, module: str) -> set[str]:
    """Every dotted name `path` imports, at module level or inside functions."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST) -> None:
        if _is_type_checking_block(node):
            assert isinstance(node, ast.If)
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            # `from package import module` imports that module too
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def _import_graph() -> dict[str, set[str]]:
    """Module -> the names it imports: project modules resolved, third-party names as written."""
    graph = {
        _module_name(path): (path, set())
        for path in sorted(PACKAGE_ROOT.rglob("*.py"))
        if "__pycache__" not in path.parts
    }
    resolved: dict[str, set[str]] = {}
    for module, (path, _) in graph.items():
        names: set[str] = set()
        for name in _imports(path, module):
            if name.split(".")[0] != "reset_tune":
                names.add(name)
                continue
            # the longest prefix that is a module; importing it runs its parent packages too
            parts = name.split(".")
            while ".".join(parts) not in graph:
                parts.pop()
            names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        names.discard(module)
        resolved[module] = names
    return resolved


def _banned(name: str, bans: tuple[str, ...]) -> str | None:
    for ban in bans:
        if ban.endswith("."):
            if name.startswith(ban):
                return ban
        elif name == ban or name.startswith(ban + "."):
            return ban
    return None


def _violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module in sorted(graph):
        bans, through_reach = RULES[_package_of(module)]
        # breadth-first over what `module` imports (and, for reach rules, what those import)
        came_from: dict[str, str | None] = {module: None}
        queue = deque([module])
        while queue:
            current = queue.popleft()
            for name in sorted(graph.get(current, ())):
                if name in came_from:
                    continue
                came_from[name] = current
                ban = _banned(name, bans)
                if ban is not None:
                    chain = [name]
                    while (step := came_from[chain[-1]]) is not None:
                        chain.append(step)
                    problems.append(
                        f"{_package_of(module)}: {' → '.join(reversed(chain))} (bans {ban})"
                    )
                elif through_reach and name in graph:
                    queue.append(name)
    return problems


def test_every_package_imports_only_what_its_layer_allows() -> None:
    graph = _import_graph()
    assert {_package_of(module) for module in graph} <= set(RULES), "a package without a rule"
    assert _violations(graph) == []


def test_the_check_sees_a_violation_inside_a_function_and_through_a_chain(tmp_path: Path) -> None:
    """The check itself can fail: a lazy import of Ray in the CLI, and tracking → plots → engine."""
    graph = _import_graph()
    graph["reset_tune.cli.main"] = graph["reset_tune.cli.main"] | {"ray"}
    graph["reset_tune.plots"] = graph["reset_tune.plots"] | {"reset_tune.engine.result"}
    problems = _violations(graph)
    assert "cli: reset_tune.cli.main → ray (bans ray)" in problems
    assert any(
        p.startswith("tracking: ") and "reset_tune.plots → reset_tune.engine.result" in p
        for p in problems
    )
    source = "def f():\n    import ray\n\nif TYPE_CHECKING:\n    import optuna\n"
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert _imports(path, "reset_tune.cli.probe") == {"ray"}


@pytest.mark.integration  # the subprocess imports torch (about 10 s)
def test_engine_and_cli_load_no_ray_in_a_fresh_interpreter() -> None:
    code = (
        "import json, sys\n"
        "import reset_tune.engine\n"
        "engine = sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'optuna', 'mlflow'})\n"
        "import reset_tune.cli.main\n"
        "cli = sorted({m.split('.')[0] for m in sys.modules} & {'ray'})\n"
        "print(json.dumps({'engine': engine, 'cli': cli}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"engine": [], "cli": []}
