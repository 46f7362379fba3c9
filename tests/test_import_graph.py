"""The layers stay as they are: no import cycles, and every import points down.

    cli -> search -> report, training -> recipe, tracking -> methods, tasks -> models -> the ground floor

(search writes its protocols' reports; the report reads runs and knows nothing of training or searches; a model
knows no optimizer; a method knows no task, engine or tracking; the vocabulary in `record` depends on nothing.)"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "curvbench"

# the height of each package; the ground floor (errors, record, schema, imports, plugins, stopping) is 0
LAYERS = {"models": 1, "methods": 2, "tasks": 2, "recipe": 3, "tracking": 3, "training": 4, "report": 5,
          "search": 6, "cli": 7}
ENTRY_POINTS = {"curvbench.__main__", "curvbench.cli.__main__"}  # `python -m`: may import the command line


def imports() -> dict[str, set[str]]:
    out = {}
    for p in ROOT.rglob("*.py"):
        rel = p.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        found = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        out[name] = {m for m in found if m.startswith("curvbench")}
    return out


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def layer_of(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def test_every_module_lives_in_a_layer_and_the_top_level_is_the_ground_floor():
    ground = {"__init__", "__main__", "errors", "record", "schema", "imports", "plugins", "stopping"}
    top = {p.stem for p in ROOT.glob("*.py")}
    assert top == ground, top - ground
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(LAYERS), packages ^ set(LAYERS)


def test_every_import_points_down_or_stays_in_its_package():
    upward = []
    for module, targets in imports().items():
        if module in ENTRY_POINTS:
            continue
        for t in targets:
            same_package = package_of(module) is not None and package_of(t) == package_of(module)
            if not same_package and layer_of(t) > layer_of(module):
                upward.append(f"{module} -> {t}")
            elif not same_package and layer_of(t) == layer_of(module) and layer_of(t) > 0:
                upward.append(f"{module} -> {t} (sideways)")
    assert not upward, "\n".join(sorted(upward))


def test_the_vocabulary_depends_on_nothing_and_a_model_knows_no_optimizer():
    graph = imports()
    assert graph["curvbench.record"] == set()
    assert not any(t.startswith("curvbench.methods") for m, ts in graph.items() if m.startswith("curvbench.models")
                   for t in ts)


def test_no_import_cycles():
    found = imports()
    graph = {m: {t for t in ts if t in found and t not in (m, m.rsplit(".", 1)[0])} for m, ts in found.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for n in graph[m]:
            assert state.get(n) != 1, " -> ".join(path + [m, n])
            if n not in state:
                visit(n, path + [m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])
