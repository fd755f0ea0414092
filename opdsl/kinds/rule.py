"""Rewrite rules as data, and the pattern language they are written in.

A rule is a pattern and a replacement.  It lives here, below the passes, because a kind
carries its own rules (``Kind.rules``: the Monarch inverse is in kinds/monarch.py); the driver
that applies a table of them to a fixed point is passes/rewrite.py.  Patterns::

    "A"                                   a variable: any node (the same name twice = the same node)
    ("transpose", ("transpose", "A"))     a node of that kind, then one pattern per operand
    ("kron", "*xs")                       "*xs" last: binds all remaining operands (a tuple); "*" binds none
    (OneOf("kron", "blockdiag"), "*xs")   a node of any of these kinds; NoneOf(...) of any other kind
    As("S", ("scale", "A"))               the node matched by the pattern, bound to S
    ("compose", Window(p, q))             last: some adjacent operands match p, q (the first such run);
                                          Window(p, before="L", after="R") also binds the operands around it

The replacement is a function ``(g, m) -> node id | None`` over the graph being built and the
bindings ``m`` (``m["_"]`` is the matched node); it may decline by returning None.  ``where`` is
an optional guard on the match.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


class OneOf(frozenset):
    """A set of kinds at the kind position of a pattern: a node of any of them matches."""

    def __new__(cls, *kinds):
        return super().__new__(cls, kinds)

    def __repr__(self):
        return f"OneOf{tuple(sorted(self))}"


class NoneOf(frozenset):
    """A set of kinds at the kind position of a pattern: a node of any other kind matches."""

    def __new__(cls, *kinds):
        return super().__new__(cls, kinds)

    def __repr__(self):
        return f"NoneOf{tuple(sorted(self))}"


@dataclass(frozen=True)
class As:
    """`pattern`, binding the node it matched to `name`."""

    name: str
    pattern: object


@dataclass(frozen=True)
class Window:
    """The last operand pattern of a variadic node: the first run of adjacent operands matching
    `patterns` in order; `before` / `after` (optional) bind the operands around the run."""

    patterns: tuple
    before: str | None = None
    after: str | None = None

    def __init__(self, *patterns, before=None, after=None):
        object.__setattr__(self, "patterns", tuple(patterns))
        object.__setattr__(self, "before", before)
        object.__setattr__(self, "after", after)


@dataclass(frozen=True)
class Rule:
    name: str
    identity: str               # the algebraic identity, as a comment and for reports
    pattern: tuple | str
    build: Callable
    where: Callable | None = None

    @property
    def roots(self) -> frozenset | None:
        """The kinds a node must have for the pattern to match it (None: any kind may)."""
        p = self.pattern
        while isinstance(p, As):
            p = p.pattern
        if not isinstance(p, tuple) or isinstance(p[0], NoneOf):
            return None
        return p[0] if isinstance(p[0], OneOf) else frozenset((p[0],))


def kind_matches(head, kind: str) -> bool:
    if isinstance(head, OneOf):
        return kind in head
    if isinstance(head, NoneOf):
        return kind not in head
    return kind == head


def match(g, pat, v: int, m: dict) -> bool:
    """Whether node v matches pattern pat; the bindings go to m (partial on failure)."""
    if isinstance(pat, str):
        if pat == "_":
            return True
        if pat in m:
            return m[pat] == v
        m[pat] = v
        return True
    if isinstance(pat, As):
        if not match(g, pat.pattern, v, m):
            return False
        if pat.name in m:
            return m[pat.name] == v
        m[pat.name] = v
        return True
    head = pat[0]
    n = g[v]
    if n.kind != head and (type(head) is str or not kind_matches(head, n.kind)):
        return False
    return match_operands(g, pat[1:], n.operands, m)


def match_operands(g, subs, ops, m: dict) -> bool:
    last = subs[-1] if subs else None
    if isinstance(last, Window):
        fixed = subs[:-1]
        if len(ops) < len(fixed) or not all(match(g, p, o, m) for p, o in zip(fixed, ops)):
            return False
        return match_window(g, last, tuple(ops[len(fixed):]), m)
    if isinstance(last, str) and last.startswith("*"):
        fixed = subs[:-1]
        if len(ops) < len(fixed):
            return False
        if len(last) > 1:
            m[last[1:]] = tuple(ops[len(fixed):])
        return all(match(g, p, o, m) for p, o in zip(fixed, ops))
    if len(subs) != len(ops):
        return False
    return all(match(g, p, o, m) for p, o in zip(subs, ops))


def _head(pat):
    """The kind position of a node pattern (through As), or None for a variable."""
    while isinstance(pat, As):
        pat = pat.pattern
    return pat[0] if isinstance(pat, tuple) else None


def _kinds(g, ops: tuple):
    """(the kinds of ops in order, the set of them), once per graph and operand tuple."""
    from .base import node_memo

    def compute():
        ks = tuple(g[o].kind for o in ops)
        return ks, frozenset(ks)
    return node_memo(g, ("operand kinds", ops), compute)


def match_window(g, w: Window, ops: tuple, m: dict) -> bool:
    """The first run of adjacent operands in ops matching w's patterns (bindings into m).  The first
    pattern's kind is checked before anything is bound: a chain of thousands of factors is scanned by
    every window rule each time it is rebuilt."""
    k = len(w.patterns)
    head = _head(w.patterns[0])
    kinds = _kinds(g, ops) if head is not None else None
    if kinds is not None and not any(kind_matches(head, kind) for kind in kinds[1]):
        return False
    for i in range(len(ops) - k + 1):
        if kinds is not None and not kind_matches(head, kinds[0][i]):
            continue
        trial = dict(m)
        if all(match(g, p, o, trial) for p, o in zip(w.patterns, ops[i:i + k])):
            if w.before is not None:
                trial[w.before] = ops[:i]
            if w.after is not None:
                trial[w.after] = ops[i + k:]
            m.update(trial)
            return True
    return False


def matches(g, pat, v: int) -> dict | None:
    """The bindings of pattern pat on node v, or None when it does not match."""
    m: dict = {"_": v}
    return m if match(g, pat, v, m) else None


__all__ = ["Rule", "OneOf", "NoneOf", "As", "Window", "match", "matches", "match_window", "kind_matches"]
