"""The package's import graph, read from the source: no circles, and a leaf for the settings."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "chunkflow"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path, runtime_only: bool = False) -> set[str]:
    """The chunkflow modules that ``path`` imports anywhere (functions included); with
    ``runtime_only``, leaving out the imports under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    if runtime_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
                node.body = []
    modules = {p.stem if p.stem != "__init__" else "" for p in PACKAGE.rglob("*.py")}
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("chunkflow")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("chunkflow"):
            for alias in node.names:  # `from chunkflow import view` imports a module
                full = f"{node.module}.{alias.name}"
                names.add(full if alias.name in modules and _exists(full) else node.module)
    return names


def _exists(name: str) -> bool:
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def import_graph(runtime_only: bool = False) -> dict[str, set[str]]:
    return {module_name(p): package_imports(p, runtime_only) for p in sorted(PACKAGE.rglob("*.py"))}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = "open", stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node], _ = "done", stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_circle():
    graph = import_graph()
    assert len(graph) > 20 and "chunkflow.volumes" in graph["chunkflow.plan.run_plan"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_settings_and_geometry_are_leaves():
    for leaf in ("settings.py", "geometry/boxes.py", "errors.py"):
        assert package_imports(PACKAGE / leaf, runtime_only=True) == set(), leaf


# The pipeline's stages, lowest first: a module imports only from its own stage or those before
# it (the leaves errors and settings, and config, sit at the top of the folder but low here).
STAGES = (
    "errors",
    "geometry",
    "settings",
    "volumes",
    "zoo",
    "config",
    "engine",
    "plan",
    "state",
    "job",
    "inspect",
    "app",
)


def stage(module: str) -> str:
    """The stage of a chunkflow module: its subpackage, or the name of a top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "chunkflow"


def test_every_module_lives_in_a_stage():
    for module in import_graph():
        if module not in ("chunkflow", "chunkflow.__main__"):
            assert stage(module) in STAGES, f"{module} is in no stage of {STAGES}"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """The imports of ``graph`` from a stage to a later one, as ``"importer -> imported"``."""
    upward = []
    for module, targets in sorted(graph.items()):
        if module in ("chunkflow", "chunkflow.__main__"):
            continue  # the public API and `python -m chunkflow`: above every stage
        rank = STAGES.index(stage(module))
        for target in sorted(targets - {"chunkflow"}):
            if STAGES.index(stage(target)) > rank:
                upward.append(f"{module} -> {target}")
    return upward


def test_imports_go_downward_only():
    upward = upward_imports(import_graph(runtime_only=True))
    assert not upward, "imports against the pipeline's order: " + ", ".join(upward)


def test_the_stage_check_finds_an_upward_import():
    graph = {
        "chunkflow.plan.run_plan": {"chunkflow.volumes", "chunkflow.state.markers"},
        "chunkflow.app.cli": {"chunkflow.plan.run_plan", "chunkflow.errors"},
        "chunkflow": {"chunkflow.app.cli"},
    }
    assert upward_imports(graph) == ["chunkflow.plan.run_plan -> chunkflow.state.markers"]


# The names of the run's state files and folders (chunkflow/state/run_state.py's layout).
STATE_NAMES = {
    "blocks", "pieces", "jobs", "output", "settings", "configs", "plans", "model_checks", "logs",
    "finished.json", "snakemake.json",
    "summary.json", "summary.txt", "report.html", "verify.json", "verified.jsonl", "progress.json",
}  # fmt: skip
STATE_SUFFIXES = (".json", ".jsonl", ".yaml", ".log", ".npy")


def state_path_joins(source: str) -> list[str]:
    """The ``path / "name"`` joins in ``source`` whose right side is a name of the run's state
    (``STATE_NAMES``) or an f-string naming a state file (``STATE_SUFFIXES``)."""
    joins = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            right = node.right
            named = isinstance(right, ast.Constant) and right.value in STATE_NAMES
            formatted = isinstance(right, ast.JoinedStr) and any(
                isinstance(part, ast.Constant) and str(part.value).endswith(STATE_SUFFIXES)
                for part in right.values
            )
            if named or formatted:
                joins.append(ast.unparse(node))
    return joins


def test_only_the_run_state_joins_paths_under_the_state_dir():
    owner = PACKAGE / "state" / "run_state.py"
    assert len(state_path_joins(owner.read_text())) >= 12  # the layout, in one place
    elsewhere = {
        str(p.relative_to(PACKAGE)): joins
        for p in sorted(PACKAGE.rglob("*.py"))
        if p != owner and (joins := state_path_joins(p.read_text()))
    }
    assert not elsewhere, f"paths under the state dir built outside RunState: {elsewhere}"


def test_the_state_path_finder_finds_joins():
    source = 'a = Path(d) / "blocks" / fp\nb = root / f"{block}.json"\nc = x / "y" / "z.txt"\n'
    assert sorted(state_path_joins(source)) == ["Path(d) / 'blocks'", "root / f'{block}.json'"]
