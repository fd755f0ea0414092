"""The one driver that applies a table of rewrite rules to a fixed point.

Rules and their pattern language are data defined below the passes, in opdsl/kinds/rule.py
(a kind carries its own rules); they are re-exported here.  A table is indexed by the kinds
at the root of its patterns, so a node is only matched against rules that can apply.

The driver rebuilds the graph bottom-up (operands before users), trying the
rules whose pattern has the node's kind at every node until none fires there;
nodes a replacement creates are tried in the next round, and rounds repeat
until a whole round fires nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from opdsl.ir import Graph
from opdsl.kinds.rule import As, NoneOf, OneOf, Rule, Window, match, match_window, matches  # noqa: F401 (re-exported)


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
        roots = [(r, r.roots) for r in self.rules]
        self.any = [r for r, ks in roots if ks is None]
        self.by_kind: dict[str, list[Rule]] = {}
        for k in sorted({k for _, ks in roots for k in ks or ()}):   # table order, rules for any kind included
            self.by_kind[k] = [r for r, ks in roots if ks is None or k in ks]
        self.named = {r.name: r for r in self.rules}

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
    if g.spec(v).as_written(g, v):      # an explicit method (logdet(A, method=slq)) is kept as written
        return None
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
