"""The import graph of a package: modules, import edges (module level and inside functions), cycles, and who
imports the report and the run vocabulary.

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
into_report = sorted(a for a, b in edges if b == f"{pkg}.report")
print("modules importing report:", ", ".join(into_report) or "none")
into_record = sorted(a for a, b in edges if b == f"{pkg}.record")
print("modules importing record:", ", ".join(into_record) or "none")
