"""Rewrite rules as data, and the one driver that applies them to a fixed point.

A rule is a pattern and a replacement.  Patterns are nested tuples::

    ("transpose", ("transpose", "A"))      # kind, then one pattern per operand
    ("kron", "*xs")                        # "*name" binds all remaining operands
    "A"                                    # a variable: any node (same name = same node)

The replacement is a function ``(g, m) -> node id | None`` over the graph
being built and the bindings ``m`` (``m["_"]`` is the matched node); it may
decline by returning None.  ``where`` is an optional guard on the match.

The driver rebuilds the graph bottom-up (operands before users), trying the
rules whose pattern has the node's kind at every node until none fires there;
nodes a replacement creates are tried in the next round, and rounds repeat
until a whole round fires nothing.  Rules are indexed by the kind at the root
of their pattern, so a node is only matched against rules that can apply.
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

    @property
    def root(self) -> str | None:
        """The kind at the root of the pattern (None: the pattern is a bare variable)."""
        return self.pattern[0] if isinstance(self.pattern, tuple) else None


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

    def add(self, name, count: int = 1):
        self.fired[name] = self.fired.get(name, 0) + count

    def total(self) -> int:
        return sum(self.fired.values())


class RuleTable:
    """Rules indexed by the kind at the root of their pattern (table order kept)."""

    def __init__(self, rules):
        self.rules = list(rules)
        self.any = [r for r in self.rules if r.root is None]
        self.by_kind: dict[str, list[Rule]] = {}
        for r in self.rules:
            if r.root is not None:
                self.by_kind.setdefault(r.root, []).append(r)
        for k, rs in self.by_kind.items():     # keep the table order across both lists
            if self.any:
                self.by_kind[k] = [r for r in self.rules if r.root in (k, None)]

    def for_kind(self, kind: str) -> list[Rule]:
        return self.by_kind.get(kind, self.any)


def _table(rules) -> RuleTable:
    return rules if isinstance(rules, RuleTable) else RuleTable(rules)


def rewrite(src: Graph, rules, log: RewriteLog | None = None, max_rounds: int = 64) -> Graph:
    """Rebuild src bottom-up, trying the rules at every node until none fires anywhere.

    The nodes a replacement creates are settled at once (operands first, each node once per
    round), so the users rebuilt after them in the same round see their normal forms.  Left
    for the next round, a shared subexpression's unsettled pieces would be copied into every
    user: `a_i = a_{i-1} + a_{i-1}.T` flattened 2**i transposes into a_i in the first round."""
    log = log if log is not None else RewriteLog()
    table = _table(rules)
    g = src
    # nested settling follows the nesting of the expression (a transpose pushed through every
    # level); the bound only stops a pair of rules that undo each other from recursing forever
    max_nesting = 64 + src.depth()
    for _ in range(max_rounds):
        out = g.empty_like()
        fired_before = log.total()
        mapping: dict[int, int] = {}
        settled: dict[int, int] = {}      # output node -> its settled form, this round
        busy: set[int] = set()            # being settled (a rule may rebuild a node it came from)

        def settle(dst: Graph, v: int, name=None, nesting: int = 0) -> int:
            busy.add(v)
            start = v
            for _ in range(16):   # rules at this node until it is stable
                nv = apply_rules(dst, v, table, log)
                if nv is None or nv == v:
                    break
                if nesting < max_nesting:
                    nv = settle_new(dst, nv, nesting + 1)
                if name and not dst[nv].name:
                    dst.rename(nv, name)
                v = nv
            busy.discard(start)
            settled[start] = settled[v] = v
            return v

        def settle_new(dst: Graph, root: int, nesting: int) -> int:
            """root with every node below it that is not settled yet settled, operands first."""
            new: dict[int, int] = {}
            for u in _unsettled(dst, root, settled, busy):
                n = dst[u]
                ops = tuple(new.get(o, settled.get(o, o)) for o in n.operands)
                w = u if ops == n.operands else dst.add(n.kind, ops, n.attrs, n.span, n.name)
                new[u] = settle(dst, w, n.name, nesting) if w not in settled else settled[w]
                settled[u] = new[u]
            return new.get(root, settled.get(root, root))

        def rebuild(dst: Graph, n, ops, _src=g):
            # The type depends only on the operands' types and the attributes:
            # when those are unchanged, keep it rather than re-run the shape rule.
            same = all(dst.type(a) == _src.type(b) for a, b in zip(ops, n.operands))
            v = dst.add(n.kind, ops, n.attrs, n.span, n.name, type=n.type if same else None)
            hit = settled.get(v)
            return hit if hit is not None else settle(dst, v, n.name)

        for name, root in g.exports.items():
            out.exports[name] = out.copy_from(g, root, mapping, rebuild)
        g = out
        if log.total() == fired_before:
            break
    return g


def _unsettled(g: Graph, root: int, settled: dict, busy: set) -> list[int]:
    """The nodes below root (root included) that are not settled, operands first; the walk stops
    at settled nodes, so settling what one replacement created costs what it created."""
    order: list[int] = []
    seen: set[int] = set()
    stack = [(root, False)]
    while stack:
        v, done = stack.pop()
        if done:
            order.append(v)
            continue
        if v in seen or v in settled or v in busy:
            continue
        seen.add(v)
        stack.append((v, True))
        stack.extend((o, False) for o in reversed(g[v].operands))
    return order


def apply_rules(g: Graph, v: int, rules, log: RewriteLog):
    table = _table(rules)
    for r in table.for_kind(g.kind(v)):
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
