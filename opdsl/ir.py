"""The IR: a thin class over a networkx graph with ordered operands.

Both levels of the pipeline (docs/architecture.md) use it: the operator level (kinds in ``opdsl.kinds``)
and the primitive level (``opdsl.primitives``).  A node holds its kind, an
ordered tuple of operand ids (so ``kron(A, A)`` keeps both operands), frozen
attributes, its inferred type and the source span it came from.  Edges
(operand -> user, keyed by operand index) mirror the operand tuples so that
networkx algorithms (topological order, reachability, drawing) apply.

Nodes are hash-consed: adding a node equal to an existing one returns the
existing id, which is common-subexpression elimination at construction time.
Spans are metadata, not part of a node's identity: the node keeps the first
span it was built with (error messages quote it) and the graph records the
others (``Graph.spans``), so that generated code can cite, in each function,
a statement that function really comes from (opdsl/provenance.py).
"""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import networkx as nx

from .dims import CURRENT
from .errors import Span


@dataclass(frozen=True)
class OpType:
    """A linear map [rows, cols], possibly batched over leading dims."""

    rows: Any
    cols: Any
    batch: tuple = ()
    dtype: str | None = None  # None: no data of its own (eye, perm, zeros)
    props: frozenset = frozenset()

    is_op = True

    def __str__(self) -> str:
        b = "".join(f"{d}, " for d in self.batch)
        return f"[{b}{self.rows}, {self.cols}]"


@dataclass(frozen=True)
class TensorType:
    shape: tuple
    dtype: str = "float32"
    props: frozenset = frozenset()

    is_op = False

    def __str__(self) -> str:
        return "[" + ", ".join(str(d) for d in self.shape) + "]"


def freeze(attrs: dict | None) -> tuple:
    if not attrs:
        return ()
    return tuple(sorted(attrs.items()))


@dataclass(frozen=True)
class Node:
    id: int
    kind: str
    operands: tuple
    attrs: dict
    type: Any
    span: Span | None = None
    name: str | None = None  # the source name it is bound to, for codegen

    def attr(self, key, default=None):
        return self.attrs.get(key, default)

    # The two leaf kinds every level has, asked by name in one place: a declared input or param
    # of the operator level, and an argument of a primitive program.
    @property
    def is_input(self) -> bool:
        return self.kind == "input"

    @property
    def is_arg(self) -> bool:
        return self.kind == "arg"


@dataclass
class Graph:
    """Nodes of one level, the exports (name -> root id, in source order) and dims."""

    registry: dict
    dims: Any = None
    exports: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    g: nx.MultiDiGraph = field(default_factory=nx.MultiDiGraph)
    _memo: dict = field(default_factory=dict)
    _next: int = 0
    _more_spans: dict = field(default_factory=dict)   # id -> {(file, line, column): span} beyond the first

    def add(self, kind: str, operands=(), attrs: dict | None = None, span: Span | None = None,
            name: str | None = None, type=None) -> int:
        operands = tuple(operands)
        key = (kind, operands, freeze(attrs))
        hit = self._memo.get(key)
        if hit is not None:
            if span is not None:
                self.note_span(hit, span)
            if name and not self.g.nodes[hit]["node"].name:
                self.rename(hit, name)
            return hit
        spec = self.registry[kind]
        attrs = dict(attrs or {})
        if type is None:
            token = CURRENT.set(self.dims)
            try:
                type = spec.infer(self, operands, attrs, span)
            finally:
                CURRENT.reset(token)
        v = self._next
        self._next += 1
        self.g.add_node(v, node=Node(v, kind, operands, attrs, type, span, name))
        for i, o in enumerate(operands):
            self.g.add_edge(o, v, key=i)
        self._memo[key] = v
        return v

    def note_span(self, v: int, span: Span) -> None:
        """Record that node v was also built from `span` (one entry per source position)."""
        first = self.g.nodes[v]["node"].span
        if first is None or span is first:
            return
        key = (span.file, span.line, span.column)
        if key != (first.file, first.line, first.column):
            self._more_spans.setdefault(v, {}).setdefault(key, span)

    def spans(self, v: int) -> tuple:
        """Every source span node v was built from, the first one (Node.span) first."""
        first = self[v].span
        more = self._more_spans.get(v)
        if first is None:
            return ()
        return (first,) + tuple(more.values()) if more else (first,)

    def rename(self, v: int, name: str) -> None:
        n = self.g.nodes[v]["node"]
        self.g.nodes[v]["node"] = Node(n.id, n.kind, n.operands, n.attrs, n.type, n.span, name)

    def __getitem__(self, v: int) -> Node:
        return self.g.nodes[v]["node"]

    def kind(self, v: int) -> str:
        return self[v].kind

    def type(self, v: int):
        return self[v].type

    def spec(self, v: int):
        return self.registry[self[v].kind]

    def nodes(self):
        return [self[v] for v in sorted(self.g.nodes)]

    def live(self, roots=None) -> list[int]:
        """Ids reachable from the roots (default: every export), in a stable topological order."""
        roots = list(self.exports.values()) if roots is None else list(roots)
        seen: set[int] = set()
        order: list[int] = []
        stack = [(r, False) for r in reversed(roots)]
        while stack:  # iterative post-order: deep expressions must not hit the recursion limit
            v, done = stack.pop()
            if done:
                order.append(v)
                continue
            if v in seen:
                continue
            seen.add(v)
            stack.append((v, True))
            for o in reversed(self[v].operands):
                if o not in seen:
                    stack.append((o, False))
        return order

    def count(self) -> int:
        return len(self.live())

    def depth(self, roots=None) -> int:
        """The longest operand chain below the roots (default: every export), found iteratively."""
        d: dict[int, int] = {}
        for v in self.live(roots):
            d[v] = 1 + max((d[o] for o in self[v].operands), default=0)
        return max(d.values(), default=0)

    def empty_like(self, registry=None) -> "Graph":
        return Graph(registry=registry or self.registry, dims=self.dims, meta=dict(self.meta))

    def copy_from(self, src: "Graph", v: int, mapping: dict, fn: Callable | None = None) -> int:
        """Copy node v (and what it uses) from src; fn(self, node, new_operands) may rebuild it."""
        for u in src.live([v]):
            if u in mapping:
                continue
            n = src[u]
            ops = tuple(mapping[o] for o in n.operands)
            if fn is not None:
                mapping[u] = fn(self, n, ops)
            else:
                mapping[u] = self.add(n.kind, ops, n.attrs, n.span, n.name)
            for s in src._more_spans.get(u, {}).values():
                self.note_span(mapping[u], s)
        return mapping[v]

    def to_text(self, roots=None) -> str:
        """A compact listing, one node a line: `%3 = kron(%1, %2) : [n, n]`."""
        lines = []
        for v in self.live(roots):
            n = self[v]
            args = ", ".join(f"%{o}" for o in n.operands)
            shown = {k: a for k, a in n.attrs.items() if k not in ("init",)}
            attrs = "".join(f" {k}={_short(a)}" for k, a in shown.items())
            label = f"  # {n.name}" if n.name else ""
            lines.append(f"%{v} = {n.kind}({args}){attrs} : {n.type}{label}")
        for name, v in self.exports.items():
            lines.append(f"export {name} = %{v}")
        return "\n".join(lines)


def _short(a) -> str:
    s = str(a)
    return s if len(s) <= 40 else s[:37] + "..."


# ---- deep programs --------------------------------------------------------------------------

DEEP = 150                 # graphs deeper than this are compiled on a thread with a big stack
DEEP_STACK = 512 << 20     # bytes of stack for that thread (virtual memory, committed as used)
_deep_lock = threading.Lock()
_deep_users = 0
_saved_limit = 0


def run_deep(fn: Callable, depth: int):
    """fn(), with room for recursion `depth` levels deep.

    The frontend and Graph.live walk trees without recursion, but lowering is recursive by
    design (a kind's lower() calls lw.apply / lw.tensor on its operands, and passes rebuild
    nodes through the kinds), about a few Python frames per level of nesting.  Below DEEP
    levels fn runs here; above, it runs on a fresh thread with a DEEP_STACK stack and a
    recursion limit raised for the time of the call (restored when the last such call ends),
    so an expression nested thousands deep compiles instead of raising RecursionError.
    Exceptions propagate to the caller unchanged.
    """
    global _deep_users, _saved_limit
    if depth < DEEP:
        return fn()
    need = 50 * depth + 5000
    with _deep_lock:
        if _deep_users == 0:
            _saved_limit = sys.getrecursionlimit()
        _deep_users += 1
        if sys.getrecursionlimit() < need:
            sys.setrecursionlimit(need)
    result: list = []

    def target():
        try:
            result.append((True, fn()))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            result.append((False, e))

    try:
        with _deep_lock:            # stack_size applies to threads created after it: set, start, reset
            old = threading.stack_size(DEEP_STACK)
            try:
                t = threading.Thread(target=target, name="opdsl-deep-compile", daemon=True)
                t.start()
            finally:
                threading.stack_size(old)
        while t.is_alive():
            t.join(0.05)            # stay interruptible (KeyboardInterrupt, signal handlers)
    finally:
        with _deep_lock:
            _deep_users -= 1
            if _deep_users == 0:
                sys.setrecursionlimit(_saved_limit)
    ok, value = result[0]
    if ok:
        return value
    raise value.with_traceback(value.__traceback__)
