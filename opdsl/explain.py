"""`opdsl explain`: the plan of every export, pass by pass, with a cost table.

For each export: the IR after each pass in a compact text form, the rules that
fired on that export's expressions, and FLOPs — dense (every operator materialized), source order (the
program as written), optimized — with the largest intermediate.  Costs are
evaluated at the program's dims; free dims take their size hint
(``dim k ~ 256``) or 256, and the report also gives the leading asymptotic
order in the free dims.
"""
from __future__ import annotations

import sympy as sp

from . import cost as _cost


def explain(program) -> str:
    """The report for a compiled Program (Program.explain())."""
    g = program.graph
    ev = _cost.Evaluator(g.dims)
    out = [f"plan of {program.filename}"]
    known = [f"{name} = {g.dims.values[s]}" for name, s in g.dims.symbols.items() if s in g.dims.values]
    derived = [f"{name} = {g.dims.derived[s]}" for name, s in g.dims.symbols.items()
               if s in g.dims.derived and s not in g.dims.values]
    free = [f"{name} = {v} ({'hint' if hinted else 'no hint, assumed'})"
            for name, (v, hinted) in ev.assumed().items()]
    out.append("dims: " + (", ".join(known + derived) or "none"))
    if free:
        out.append("free dims, costed at: " + ", ".join(free))
    out.append("passes: " + " → ".join(r.name for r in program.records)
               + "   (" + ", ".join(f"{r.name} {r.seconds * 1e3:.1f} ms" for r in program.records) + ")")
    out.append("")
    fired = fired_per_export(program)
    from .sharding import plan
    axes, comms = plan(program)
    if axes:
        out.append("mesh: " + ", ".join(f"{a} = {n}" for a, n in axes.items()) + "; split: "
                   + ", ".join(f"{d} over {a}" for d, a in program._backend.shard.items()))
        out.append("")
    for name in program.functions:
        out.extend(_export_report(program, name, ev, fired[name]))
        if axes:
            out.extend(communication_lines(comms[name], g.dims))
        out.append("")
    out.extend(choices(program))
    return "\n".join(out).rstrip() + "\n"


SCHEMA_VERSION = 1        # docs/tools.md; bump when a field changes meaning or goes away


def explain_data(program) -> dict:
    """The report as data (`opdsl explain --format json`, Program.explain(format="json")): the
    schema is docs/explain.schema.json, described in docs/tools.md."""
    from .dims import fmt_shape
    g = program.graph
    ev = _cost.Evaluator(g.dims)
    fired = fired_per_export(program)
    from .sharding import plan
    _, comms = plan(program)
    exports = []
    for name in program.functions:
        stages = [{"after": "source", "level": "operator", "rules_fired": {}, "changed": True,
                   "ir": ir_nodes(g, [g.exports[name]])}]
        prev = stages[0]["ir"]
        for r in program.records:
            ga = r.graph_after
            ir = ir_nodes(ga, [ga.exports[name]]) if ga is not None and name in ga.exports else []
            mine = fired[name].get(r.name, {}) if r.level == "operator" else dict(r.fired)
            stages.append({"after": r.name, "level": r.level, "rules_fired": dict(sorted(mine.items())),
                           "changed": ir != prev, "ir": ir})
            prev = ir
        rules = {}
        for st in stages:
            for k, n in st["rules_fired"].items():
                rules.setdefault(k, {"count": 0, "identity": identity(k)})["count"] += n
        summ = _cost.summarize(program, name)
        cost = {k: float(v) for k, v in summ.numbers().items()}
        cost["leading_order"] = {k: str(_cost.leading_order(g, getattr(summ, k)))
                                 for k in ("dense", "source", "optimized")}
        args = [{"name": a, "shape": fmt_shape(shape), "dtype": dtype, "role": role}
                for a, shape, dtype, role in g.meta.get("signatures", {}).get(name, [])]
        exports.append({"name": name, "arguments": args, "stages": stages, "rules": rules, "cost": cost,
                        "communication": [c.row(g.dims) for c in comms.get(name, [])]})
    return {
        "schema": "opdsl-explain", "version": SCHEMA_VERSION, "file": program.filename,
        "backend": program.backend_name,
        "dims": {nm: int(g.dims.values[sym]) for nm, sym in g.dims.symbols.items() if sym in g.dims.values},
        "derived_dims": {nm: str(g.dims.derived[sym]) for nm, sym in g.dims.symbols.items()
                         if sym in g.dims.derived and sym not in g.dims.values},
        "free_dims": {nm: {"value": int(v), "hinted": bool(h)} for nm, (v, h) in ev.assumed().items()},
        "passes": [{"name": r.name, "level": r.level, "ms": round(r.seconds * 1e3, 3)} for r in program.records],
        "exports": exports,
        "choices": solver_notes(program),
    }


def explain_json(program) -> str:
    import json
    return json.dumps(explain_data(program), indent=1, ensure_ascii=False) + "\n"


def communication_lines(comms, dims) -> list[str]:
    """The collectives of one export of a sharded program (sharding.Comm), with their bytes."""
    if not comms:
        return ["communication: none (every split dim applies locally)"]
    lines = ["communication"]
    for c in comms:
        r = c.row(dims)
        size = human(r["bytes"]) + "B" if isinstance(r["bytes"], float) else r["bytes"] + " bytes"
        lines.append(f"  {c.collective} over {c.axis}: {size} — {c.why}" + (f" ({c.site})" if c.site else ""))
    return lines


def solver_notes(program) -> list[str]:
    """What the lowering chose for the file's solves, log-determinants and loops (a direct or an
    iterative solver, a matrix formed once outside a loop) and why: Lowerer.note."""
    notes = []
    for r in program.records:
        if r.graph_after is not None:
            notes = r.graph_after.meta.get("choices", notes)
    return list(notes)


def choices(program) -> list[str]:
    notes = solver_notes(program)
    if not notes:
        return []
    return ["solvers and loops (chosen while lowering)"] + [f"  {n}" for n in notes]


def fired_per_export(program) -> dict:
    """{export: {pass name: {rule: count}}}: the rules that fired on each export's expressions.

    The passes rewrite the whole file at once, so a record's counts mix every export.  With
    one export they are its own; with several, the operator passes are run again on the
    program restricted to each export (rewriting is a function of the expressions it is
    given, so the rules that fire there are exactly those that rewrote this export's part;
    a subexpression shared by two exports is counted under both)."""
    ops = [r for r in program.records if r.level == "operator"]
    if len(program.functions) <= 1:
        return {name: {r.name: dict(r.fired) for r in ops} for name in program.functions}
    import copy

    from opdsl.passes import operator_passes
    from opdsl.passes.rewrite import RewriteLog
    passes = {p.name: p for p in operator_passes()}
    out = {}
    for name in program.functions:
        g = copy.copy(program.graph)
        g.exports = {name: program.graph.exports[name]}
        g.meta = dict(program.graph.meta)
        mine = {}
        for r in ops:
            log = RewriteLog()
            g = passes[r.name].fn(g, log)
            mine[r.name] = dict(log.fired)
        out[name] = mine
    return out


def _export_report(program, name, ev, fired_here) -> list[str]:
    lines = [f"== export {name} =="]
    g0 = program.graph
    prev = compact(g0, [g0.exports[name]])
    lines.append("-- as written --")
    lines.extend("  " + ln for ln in prev)
    level = "operator"
    for r in program.records:
        ga = r.graph_after
        text = compact(ga, [ga.exports[name]]) if ga is not None and name in ga.exports else []
        head = f"-- after {r.name} ({r.seconds * 1e3:.1f} ms)"
        if r.level != level:          # lowering: the IR of the next level, in full
            lines.append(head + f" — {r.level} IR --")
            lines.extend("  " + ln for ln in text)
            level, prev = r.level, text
            continue
        # a primitive pass rewrites the whole file at once: its counts are the file's
        mine = fired_here.get(r.name, {}) if r.level == "operator" else r.fired
        fired = ", ".join(f"{k} ×{v}" for k, v in sorted(mine.items()))
        head += f" — rules fired: {fired}" if fired else " — no rule fired"
        if text == prev:
            lines.append(head + "; unchanged --")
            continue
        lines.append(head + " --")
        for k in sorted(mine):
            lines.append(f"   {k}: {identity(k)}")
        lines.extend("  " + ln for ln in text)
        prev = text
    lines.extend(cost_table(program, name, ev))
    return lines


def identity(rule: str) -> str:
    """The identity behind a rule of the simplify table or an event of the reassociation pass."""
    from opdsl.passes.prim_simplify import TABLE
    from opdsl.passes.reassociate import EVENTS
    from opdsl.passes.simplify import rule_table
    r = rule_table().named.get(rule) or TABLE.named.get(rule)
    return r.identity if r is not None else EVENTS.get(rule, "")


def cost_table(program, name, ev) -> list[str]:
    s = _cost.summarize(program, name)
    nums = s.numbers()
    g = program.graph
    free = any(_cost.known(g, e).free_symbols for e in (s.dense, s.source, s.optimized))
    rows = [("dense (materialized)", s.dense, None), ("source order", s.source, s.peak_source),
            ("optimized", s.optimized, s.peak_optimized)]
    lines = ["cost" + (" (free dims at the values above)" if free else "")]
    hdr = f"  {'':<22} {'FLOPs':>10}  {'largest intermediate':>20}"
    if free:
        hdr += "   leading order"
    lines.append(hdr)
    for label, flops, peak in rows:
        ln = f"  {label:<22} {human(ev.num(flops)):>10}  "
        ln += f"{(human(ev.num(peak)) + ' (' + _short(_cost.known(g, peak)) + ')') if peak is not None else '':>20}"
        if free:
            ln += "   " + _short(_cost.leading_order(g, flops))
        lines.append(ln.rstrip())
    src, opt, dense = nums["source"], nums["optimized"], nums["dense"]
    if opt > 0:
        # dense is 0 when the materialized matrix is the answer (diag_of, dense): no ratio then
        vs_dense = f"; vs dense: {dense / opt:.3g}x" if dense > 0 else ""
        lines.append(f"  optimized vs source order: {src / opt:.3g}x fewer FLOPs{vs_dense}")
    return lines


def human(x: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, f in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= f:
            return f"{x / f:.3g}{unit}"
    return f"{x:.3g}"


def _short(e, width: int = 40) -> str:
    s = str(sp.sympify(e)).replace("**", "^")
    return s if len(s) <= width else s[:width - 3] + "..."


def ir_nodes(g, roots) -> list[dict]:
    """The live IR of `roots` as records (explain's JSON form): id, op, operands, attrs, type,
    name, role.  Nodes are numbered in the order listed (not by graph id), so the listings of two
    passes compare equal when the IR is the same."""
    out = []
    num: dict[int, int] = {}
    for v in g.live(roots):
        n = g[v]
        i = num[v] = len(num)
        rec = {"id": i, "type": str(n.type), "name": n.name or None}
        if "role" in n.attrs:        # an argument: an input of the operator IR, an arg of the primitive IR
            rec.update(op=n.attrs.get("role", "input"), operands=[], attrs={},
                       name=n.attrs.get("name", n.name), role=n.attrs.get("role", "input"))
        else:
            rec.update(op=n.kind, operands=[num[o] for o in n.operands], role=None,
                       attrs={k: _attr(a) for k, a in n.attrs.items() if k not in ("init", "props") and a != ()})
        out.append(rec)
    return out


def compact(g, roots) -> list[str]:
    """The IR as short lines: `%4 = kron(%1, %3) : [a*b, a*b]`, inputs as `%0 = input x : [n, k]`."""
    lines = []
    for r in ir_nodes(g, roots):
        if r["role"] is not None:
            lines.append(f"%{r['id']} = {r['op']} {r['name']} : {r['type']}")
            continue
        args = ", ".join(f"%{o}" for o in r["operands"])
        attrs = "".join(f" {k}={a}" for k, a in r["attrs"].items())
        label = f"  # {r['name']}" if r["name"] else ""
        lines.append(f"%{r['id']} = {r['op']}({args}){attrs} : {r['type']}{label}")
    return lines


def _attr(a) -> str:
    s = str(a)
    return s if len(s) <= 32 else s[:29] + "..."
