"""Programs in notebooks: the rich display of a Program and the `%%opdsl` cell magic.

- `Program._repr_html_` / `_repr_markdown_` (Jupyter, VS Code, IPython's display) call
  `program_html` / `program_markdown`: each export with its signature in source terms
  (`x : [n, k] float32`), its dense / source-order / optimized FLOPs, the rules that fired on it,
  and (HTML) the optimized plan drawn inline as SVG (graphviz when `dot` is installed, else
  matplotlib; plan_graph.plan_svg).
- the `%%opdsl` cell magic is opdsl/magic.py.

User text (file names, the source) is HTML-escaped; names in the plan are escaped by the SVG
writer.
"""
from __future__ import annotations

import html

from .dims import fmt_shape


def export_rows(program) -> list[dict]:
    """Per export: name, arguments [(name, shape, dtype, role)], FLOPs and the rules fired."""
    from . import cost
    from .explain import fired_per_export
    fired = fired_per_export(program)
    rows = []
    for name in program.functions:
        sig = program.graph.meta.get("signatures", {}).get(name, [])
        nums = cost.summarize(program, name).numbers()
        rules: dict[str, int] = {}
        for per_pass in fired[name].values():
            for rule, n in per_pass.items():
                rules[rule] = rules.get(rule, 0) + n
        rows.append({"name": name, "args": [(a, fmt_shape(shape), dtype, role) for a, shape, dtype, role in sig],
                     "dense": nums["dense"], "source": nums["source"], "optimized": nums["optimized"],
                     "rules": rules})
    return rows


def _signature(row) -> str:
    return f"{row['name']}(" + ", ".join(f"{a} : {s} {d}" for a, s, d, _ in row["args"]) + ")"


def _flops(x: float) -> str:
    from .explain import human
    return human(x)


def _speedup(row) -> str:
    return f"{row['source'] / row['optimized']:.3g}×" if row["optimized"] > 0 else "–"


def program_markdown(program) -> str:
    """A Markdown summary of a Program (text front ends)."""
    rows = export_rows(program)
    out = [f"**opdsl program** `{program.filename}` — backend `{program.backend_name}`", "",
           "| export | dense FLOPs | source order | optimized | rules fired |", "|---|---:|---:|---:|---|"]
    for r in rows:
        rules = ", ".join(f"{k} ×{v}" for k, v in sorted(r["rules"].items())) or "none"
        out.append(f"| `{_signature(r)}` | {_flops(r['dense'])} | {_flops(r['source'])} | "
                   f"{_flops(r['optimized'])} ({_speedup(r)}) | {rules} |")
    return "\n".join(out) + "\n"


_CSS = ("<style>.opdsl-prog table{border-collapse:collapse;margin:4px 0}"
        ".opdsl-prog td,.opdsl-prog th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
        ".opdsl-prog td.num{text-align:right;font-variant-numeric:tabular-nums}"
        ".opdsl-prog code{font-size:90%}.opdsl-prog details svg{max-width:100%;height:auto}</style>")


def program_html(program, plan: bool = True) -> str:
    """An HTML summary of a Program: exports, costs, rules fired and (plan=True) the plan as SVG."""
    from .plan_graph import plan_svg
    e = html.escape
    rows = export_rows(program)
    out = [_CSS, '<div class="opdsl-prog">',
           f"<b>opdsl program</b> <code>{e(program.filename)}</code> — backend <code>{e(program.backend_name)}</code>",
           "<table><tr><th>export</th><th>arguments</th><th>dense FLOPs</th><th>source order</th>"
           "<th>optimized</th><th>rules fired</th></tr>"]
    for r in rows:
        args = "<br>".join(f"<code>{e(a)} : {e(s)} {e(d)}</code>" + (" (param)" if role == "param" else "")
                           for a, s, d, role in r["args"])
        rules = "<br>".join(f"{e(k)} ×{v}" for k, v in sorted(r["rules"].items())) or "none"
        out.append(f"<tr><td><code>{e(r['name'])}</code></td><td>{args}</td>"
                   f"<td class=num>{_flops(r['dense'])}</td><td class=num>{_flops(r['source'])}</td>"
                   f"<td class=num>{_flops(r['optimized'])} ({_speedup(r)} fewer)</td><td>{rules}</td></tr>")
    out.append("</table>")
    if plan:
        svg, how = plan_svg(program)
        if svg is not None:
            out.append(f"<details open><summary>plan (optimized operator IR, drawn by {e(how)})</summary>"
                       f"{svg}</details>")
        else:
            out.append(f"<p>{e(how)}</p>")
    out.append("</div>")
    return "\n".join(out)
