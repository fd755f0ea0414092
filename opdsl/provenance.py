"""Which source statement each node of a generated function came from (its `# file:line` comment).

Nodes are hash-consed (ir.Graph.add): a subexpression written in two statements is one node,
and its Node.span is the first one seen.  `monarch(L, R)` of examples/monarch.op is written in
`export apply` and in `export apply_t`; the primitives of `apply_t` were built from the node of
line 15, which is `apply`'s.  So the statement a comment cites is decided per function:

- the statements a function may cite are its export's and those of the `let`s that export reads,
  transitively (``scope``: the frontend records, per statement, the names it reads);
- a node cites the statement of one of its spans (Graph.spans: every span it was built from)
  that is in that scope, the one its first user cites when that is among them;
- a node with no such span (a value built for another export, an input's transpose) cites what
  its first user in the function cites; the root, its export.

Graphs without statements (traced Python, @opdsl.jit) cite each node's own line.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from .errors import Span


@dataclass(frozen=True)
class Statement:
    """One statement of a .op file: its keyword (`let`, `export`, `input`, `param`, `dim`), the
    name it binds, where it starts and the names its text reads."""

    keyword: str
    name: str
    span: Span
    uses: frozenset = frozenset()


def scope(statements, export: str) -> list:
    """The statements export `export` reaches: its own, then the lets it reads, transitively."""
    lets = {s.name: s for s in statements if s.keyword == "let"}
    own = [s for s in statements if s.keyword == "export" and s.name == export]
    out, todo, seen = list(own), list(own), set()
    while todo:
        for name in sorted(todo.pop().uses):
            s = lets.get(name)
            if s is not None and name not in seen:
                seen.add(name)
                out.append(s)
                todo.append(s)
    return out


class _Locator:
    """The statement a source position lies in: the last one starting at or before it."""

    def __init__(self, statements):
        self.statements = list(statements)
        self.starts = [(s.span.line, s.span.column) for s in self.statements]
        self.file = self.statements[0].span.file if self.statements else None

    def __call__(self, span):
        if span is None or span.file != self.file:
            return None
        i = bisect_right(self.starts, (span.line, span.column))
        return self.statements[i - 1] if i else None


def citations(g, root: int, export: str) -> dict:
    """{node id: span of the statement it cites} for the live nodes below root (see the module doc)."""
    order = g.live([root])
    statements = g.meta.get("statements")
    if not statements:
        return {v: g[v].span for v in order}
    reach = scope(statements, export)
    if not reach:                   # an export the frontend did not record (a graph built by hand)
        return {v: g[v].span for v in order}
    allowed = {id(s) for s in reach}       # statements compared by identity: one object each
    locate = _Locator(statements)
    cite: dict[int, Statement] = {}
    user: dict[int, Statement] = {}        # the statement of the first user in emit order
    for v in reversed(order):              # users before operands; the last writer is the first user
        inherited = user.get(v, reach[0])
        own = [s for s in map(locate, g.spans(v)) if s is not None and id(s) in allowed]
        c = inherited if not own or any(s is inherited for s in own) else own[0]
        cite[v] = c
        for o in g[v].operands:
            user[o] = c
    return {v: s.span for v, s in cite.items()}
