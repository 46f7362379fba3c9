"""The import graph of a package: modules, import edges (module level and inside functions), cycles, upward
imports between the layers of tests/test_import_graph.py, modules per package, who imports the run vocabulary,
and the longest functions.

    python benchmarks/import_graph.py curvbench
"""
import ast
import sys
from pathlib import Path

root = Path(sys.argv[1]); pkg = root.name
mods = {}
for p in root.rglob("*.py"):
    rel = p.relative_to(root.parent).with_suffix("")
    name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
    mods[name] = p
edges = set()
for name, p in mods.items():
    tree = ast.parse(p.read_text())
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            if t.startswith(pkg) and t in mods and t != name:
                edges.add((name, t))
# collapse "curvbench.X.Y" imports of package members
graph = {m: sorted({b for a, b in edges if a == m}) for m in mods}
# cycles via DFS (ignoring package __init__ re-exports)
def cycles():
    out = []; color = {}
    def visit(m, stack):
        color[m] = 1; stack.append(m)
        for n in graph[m]:
            if n == m.rsplit(".", 1)[0]:  # a module importing its own package: not an arrow between peers
                continue
            if color.get(n) == 1:
                out.append(stack[stack.index(n):] + [n])
            elif not color.get(n):
                visit(n, stack)
        stack.pop(); color[m] = 2
    for m in sorted(graph):
        if not color.get(m): visit(m, [])
    return out
cyc = cycles()
print(f"modules {len(mods)}, import edges {len(edges)}, cycles {len(cyc)}")
for c in cyc: print("  cycle:", " -> ".join(c))
LAYERS = {"models": 1, "methods": 2, "tasks": 2, "recipe": 3, "tracking": 3, "training": 4, "report": 5,
          "search": 6, "cli": 7}  # as tests/test_import_graph.py; a flat module sits on the ground floor (0)
def package(m):
    parts = m.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (root / parts[1]).is_dir()) else ""
def layer(m):
    return LAYERS.get(package(m), 0)
upward = sorted(f"{a} -> {b}" for a, b in edges if not a.endswith("__main__") and package(a) != package(b)
                and layer(b) >= layer(a) and layer(b) > 0)
print(f"upward or sideways imports between packages: {len(upward)}")
for u in upward: print("  ", u)
per = {}
for m in mods:
    per.setdefault(package(m) or "(top level)", []).append(m)
print("modules per package:", ", ".join(f"{k} {len(v)}" for k, v in sorted(per.items())))
into_record = sorted(a for a, b in edges if b == f"{pkg}.record")
print("modules importing record:", ", ".join(into_record) or "none")

lengths = []
for name, p in mods.items():
    for node in ast.walk(ast.parse(p.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lengths.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}"))
print("longest functions:", ", ".join(f"{n} ({k} lines)" for k, n in sorted(lengths, reverse=True)[:8]))
