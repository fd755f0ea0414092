"""Rewrite rules as data, and the one driver that applies them to a fixed point.

A rule is a pattern and a replacement.  Patterns are nested tuples::

    ("transpose", ("transpose", "A"))      # kind, then one pattern per operand
    ("kron", "*xs")                        # "*name" binds all remaining operands
    "A"                                    # a variable: any node (same name = same node)

The replacement is a function ``(g, m) -> node id | None`` over the graph
being built and the bindings ``m`` (``m["_"]`` is the matched node); it may
decline by returning None.  ``where`` is an optional guard on the match.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from opdsl.ir import Graph


@dataclass(frozen=True)
class Rule:
    name: str
    identity: str               # the algebraic identity, as a comment and for reports
    pattern: tuple | str
    build: Callable
    where: Callable | None = None


def match(g: Graph, pat, v: int, m: dict) -> bool:
    if isinstance(pat, str):
        if pat == "_":
            return True
        if pat in m:
            return m[pat] == v
        m[pat] = v
        return True
    kind, *subs = pat
    n = g[v]
    if n.kind != kind:
        return False
    ops = n.operands
    if subs and isinstance(subs[-1], str) and subs[-1].startswith("*"):
        fixed = subs[:-1]
        if len(ops) < len(fixed):
            return False
        m[subs[-1][1:]] = tuple(ops[len(fixed):])
        return all(match(g, p, o, m) for p, o in zip(fixed, ops))
    if len(subs) != len(ops):
        return False
    return all(match(g, p, o, m) for p, o in zip(subs, ops))


@dataclass
class RewriteLog:
    fired: dict = field(default_factory=dict)   # rule name -> count

    def add(self, name):
        self.fired[name] = self.fired.get(name, 0) + 1


def rewrite(src: Graph, rules: list[Rule], log: RewriteLog | None = None, max_rounds: int = 64) -> Graph:
    """Rebuild src bottom-up, trying the rules at every node until none fires anywhere."""
    log = log if log is not None else RewriteLog()
    g = src
    for _ in range(max_rounds):
        out = g.empty_like()
        fired_before = sum(log.fired.values())
        mapping: dict[int, int] = {}

        def rebuild(dst: Graph, n, ops):
            v = dst.add(n.kind, ops, n.attrs, n.span, n.name)
            for _ in range(16):   # rules at this node until it is stable
                nv = apply_rules(dst, v, rules, log)
                if nv is None or nv == v:
                    break
                if n.name and not dst[nv].name:
                    dst.rename(nv, n.name)
                v = nv
            return v

        for name, root in g.exports.items():
            out.exports[name] = out.copy_from(g, root, mapping, rebuild)
        g = out
        if sum(log.fired.values()) == fired_before:
            break
    return g


def apply_rules(g: Graph, v: int, rules: list[Rule], log: RewriteLog):
    for r in rules:
        m: dict = {"_": v}
        if not match(g, r.pattern, v, m):
            continue
        if r.where is not None and not r.where(g, m):
            continue
        out = r.build(g, m)
        if out is not None and out != v:
            log.add(r.name)
            return out
    return None
