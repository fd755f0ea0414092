"""The package's structure (issue 13): no import circles among its modules, no module over 600 lines.

The import graph is read from the source (ast), not from what happens to be imported: every
`import` and `from ... import` anywhere in a module (at the top or inside a function) is an edge, and
so is `import_module("...")` of one of the package's modules; the backend registry imports by name
too, so opdsl.backends has an edge to each registered backend's module.
A function-level import that exists to break a circle is still a circle; one that must stay says
why on its line, `# import cycle: <reason>`, and is then left out (the test lists those).
"""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import networkx as nx

# the package's import names and their directories (pyproject.toml maps passes/, backends/ and grammar/
# into opdsl): wherever it is installed from
PACKAGES = ("opdsl", "opdsl.passes", "opdsl.backends", "opdsl.grammar")
MAX_LINES = 600
JUSTIFIED = "# import cycle:"


def package_modules(packages=PACKAGES) -> dict[str, Path]:
    """{dotted module name: file} of every module of the packages, subpackages included."""
    roots = {name: Path(importlib.util.find_spec(name).submodule_search_locations[0]) for name in packages}
    mapped = set(roots.values())
    out = {}
    for name, root in roots.items():
        for f in sorted(root.rglob("*.py")):
            rel = f.relative_to(root)
            if "__pycache__" in rel.parts or any((root / Path(*rel.parts[:i])) in mapped
                                                 for i in range(1, len(rel.parts))):
                continue          # a directory that is another mapped package is listed under that name
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([name] + parts)] = f
    return out


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of `from <level dots><target> import ...` in `module`."""
    if not level:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def import_graph(modules: dict[str, Path], by_name: dict | None = None) -> tuple[nx.DiGraph, list[tuple]]:
    """(graph with an edge per import, each labelled with its lines; the justified imports left out,
    as (module, line, text)).  by_name: {module: modules it imports by a name it is given}."""
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    justified = []
    for mod, targets in (by_name or {}).items():
        for t in targets:
            g.add_edge(mod, t, lines=[0])

    def known(name):             # the module itself, or the package that defines the name
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    for mod, path in modules.items():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(text)):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_package, node.level, node.module)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) \
                    in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                targets = [node.args[0].value]
            line = lines[node.lineno - 1] if hasattr(node, "lineno") else ""
            if targets and JUSTIFIED in line:
                reason = line.split(JUSTIFIED, 1)[1].strip()
                assert reason, f"{mod}:{node.lineno}: `{JUSTIFIED}` without a reason"
                justified.append((mod, node.lineno, line.strip()))
                continue
            for t in targets:
                t = known(t)
                if t and t != mod:
                    g.add_edge(mod, t)
                    g.edges[mod, t].setdefault("lines", []).append(node.lineno)
    return g, justified


def circles(g: nx.DiGraph) -> list[str]:
    """One shortest circle through each strongly connected group of modules, as `a:3 -> b:10 -> a`
    (each module with the line of its import of the next)."""
    out = []
    for group in nx.strongly_connected_components(g):
        if len(group) < 2:
            continue
        sub = g.subgraph(group)
        start = min(group)
        best = min((nx.shortest_path(sub, nxt, start) for nxt in sub.successors(start)), key=len)
        path = [start] + best
        out.append(" -> ".join(f"{a}:{sub.edges[a, b]['lines'][0]}" for a, b in zip(path, path[1:]))
                   + f" -> {start}  (group: {', '.join(sorted(group))})")
    return sorted(out)


def test_no_import_circles():
    modules = package_modules()
    assert "opdsl.backends.tvm.builder" in modules and "opdsl.passes.lower" in modules   # all of it is read
    from opdsl import backends
    g, justified = import_graph(modules, {"opdsl.backends": list(backends.modules().values())})
    found = circles(g)
    assert not found, "import circles:\n" + "\n".join(found)
    for mod, line, text in justified:    # listed in the report (-rA), each with its reason on the line
        print(f"justified: {mod}:{line}  {text}")


def test_no_module_over_600_lines():
    too_long = sorted((len(f.read_text(encoding="utf-8").splitlines()), name)
                      for name, f in package_modules().items())
    too_long = [f"{name}: {n} lines" for n, name in too_long if n > MAX_LINES]
    assert not too_long, f"modules over {MAX_LINES} lines (one responsibility each; split them):\n" + \
        "\n".join(too_long)


def test_the_checks_find_a_circle_through_a_lazy_import(tmp_path, monkeypatch):
    """The graph sees imports inside functions, relative imports and imports by name; a justified
    import is left out."""
    pkg = tmp_path / "circ"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import x\n")
    (pkg / "c.py").write_text("import importlib\nx = 1\n\n\ndef get():\n    return importlib.import_module('circ.a')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    modules = package_modules(("circ",))
    assert set(modules) == {"circ", "circ.a", "circ.sub", "circ.sub.b", "circ.c"}
    g, _ = import_graph(modules)
    assert circles(g) == ["circ.a:1 -> circ.sub.b:2 -> circ.c:6 -> circ.a  (group: circ.a, circ.c, circ.sub.b)"]
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import x  # import cycle: c needs b first\n")
    g, justified = import_graph(modules)
    assert circles(g) == [] and [(m, n) for m, n, _ in justified] == [("circ.sub.b", 2)]
