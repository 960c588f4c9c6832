"""The package's shape: dependencies point one way (no import cycles), small modules, one strategy
interface that no other layer bypasses, and every strategy's controls in the built-in suites."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import adaptive_lora
from adaptive_lora.strategies import all_strategies
from adaptive_lora.sweep.suite import builtin_suites, load_suite

PACKAGE = Path(adaptive_lora.__file__).parent
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Package modules `path` imports, at any depth (inside functions too)."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *(node.module.split(".") if node.module else [])]) if node.level else node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found |= {c for c in candidates if c.startswith("adaptive_lora")}
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {t for t in imports_of(path) if t in modules and t != name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_inside_the_package():
    graph = import_graph()
    assert len(graph) > 40 and "adaptive_lora.training" in graph["adaptive_lora.sweep.executors"]
    assert find_cycle(graph) is None


@pytest.mark.parametrize(
    "layer, forbidden",
    [
        ("adaptive_lora.schema", ("training", "sweep", "search", "report", "strategies", "cli")),
        ("adaptive_lora.report", ("training", "strategies", "planning", "cli", "models", "loss", "search")),
        ("adaptive_lora.strategies", ("training", "sweep", "search", "report", "cli", "planning")),
        ("adaptive_lora.evaluation", ("training", "sweep", "search", "report", "cli", "strategies", "planning")),
        ("adaptive_lora.data", ("evaluation", "strategies", "training", "sweep", "search", "report", "cli", "planning")),
        ("adaptive_lora.training", ("sweep", "search", "report", "cli")),
        ("adaptive_lora.sweep", ("search", "report", "cli")),
        ("adaptive_lora.search", ("report", "cli")),
    ],
)
def test_dependencies_point_one_way(layer, forbidden):
    graph = import_graph()
    for module, targets in graph.items():
        if module == layer or module.startswith(layer + "."):
            bad = [t for t in targets if any(t == f"adaptive_lora.{f}" or t.startswith(f"adaptive_lora.{f}.") for f in forbidden)]
            assert not bad, f"{module} imports {bad}"


def test_no_module_is_over_400_lines():
    long = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long


def test_only_the_strategies_package_knows_strategy_names():
    """Training, sweeps and reports go through the Strategy interface; no `strategy == "eva"` switches."""
    names = {s.name for s in all_strategies()} - {"uniform"}  # uniform is the report's default baseline, by design
    for path in PACKAGE.rglob("*.py"):
        if "strategies" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(isinstance(c, ast.Constant) and c.value in names for c in node.comparators):
                pytest.fail(f"{module_name(path)} line {node.lineno} compares with a strategy name")


def test_every_strategy_that_changes_more_than_ranks_has_its_controls_in_the_built_in_suites():
    changing = [s for s in all_strategies() if s.changes]
    assert changing, "EVA and AdaLoRA change initialisation / dynamics"
    for name in builtin_suites():
        entries = load_suite(name).data["strategies"]
        for strategy in changing:
            if not any(e.get("strategy") == strategy.name and e.get("role", "strategy") == "strategy" for e in entries):
                continue
            for control in strategy.controls:
                match = [
                    e
                    for e in entries
                    if e.get("strategy") == strategy.name
                    and e.get("role") == "control"
                    and (e.get("params") or {}).items() >= control["params"].items()
                ]
                assert match, f"suite {name}: {strategy.name} lacks its control {control['label']!r}"


def test_every_built_in_suite_has_a_capacity_control():
    for name in builtin_suites():
        roles = {spec.role for spec in load_suite(name).runs}
        assert "capacity-control" in roles, name
