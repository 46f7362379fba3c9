"""The layers stay as they are: no import cycles, no upward arrows (models know no optimizer, methods know no
engine, runner or command line, the engine knows no tracking)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "curvbench"


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


def test_no_upward_imports():
    graph = imports()
    for module, targets in graph.items():
        if module.startswith("curvbench.models"):
            assert not any(t.startswith("curvbench.methods") for t in targets), module
        if module.startswith("curvbench.methods"):
            assert not targets & {"curvbench.engine", "curvbench.runner", "curvbench.cli", "curvbench.tune",
                                  "curvbench.report", "curvbench.tracking", "curvbench.tracked_run"}, module
    assert not graph["curvbench.engine"] & {"curvbench.tracking", "curvbench.tracked_run", "curvbench.runner",
                                            "curvbench.cli"}
    # only the command line and `python -m curvbench` (its entry point) import the command line
    assert not any("curvbench.cli" in t for m, t in graph.items() if m not in ("curvbench.cli", "curvbench.__main__"))
    assert graph["curvbench.record"] == set()  # the vocabulary depends on nothing


def test_no_import_cycles():
    graph = {m: {t for t in ts if t in imports_keys and t not in (m, m.rsplit(".", 1)[0])} for m, ts in imports().items()
             for imports_keys in [set(imports())]}
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
