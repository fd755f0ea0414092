"""`opdsl fmt`: the canonical layout of an .op file, printed from its Lark tree.

The layout (docs/tools.md, "opdsl fmt"):
- one statement per line; a statement longer than WIDTH columns breaks at its outermost
  `+ -` or `@ * /` chain (continuation lines start with the operator, under the expression's
  first column) or between a call's arguments (one per line, under the first argument);
- single spaces around binary operators, after commas and around `:` `=` `~` of statements;
  none around a keyword argument's `=`, none inside brackets; only the parentheses the
  precedence needs; `= ones()` is written `= ones`;
- runs of consecutive `dim` statements, and of `input` / `param` declarations, align their
  names' ends (so the `=` / `:` line up); so do the trailing comments of such a run (and of a
  run of `let` / `export` lines);
- comments stay where they were: a comment on a statement's last line stays at its end, a
  comment inside a statement broken over lines moves to just above it; blank lines between
  statements are kept (several become one), none at the start or end of the file.

The formatted text parses to the same tree as the original (`same_meaning`), so it compiles to
the same program; formatting is idempotent.  Both are tested on every example and on the fuzz
corpus (tests/test_fmt.py).  The grammar has no string literals, so `#` always starts a comment.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lark import Token, Tree

from .frontend import parse

WIDTH = 100

# operator-expression precedence (grammar/opdsl.lark): a chain is a run of one level
BINARY = {"add": ("+", 1), "sub": ("-", 1), "matmul": ("@", 2), "mul": ("*", 2), "div": ("/", 2),
          "dadd": ("+", 1), "dsub": ("-", 1), "dmul": ("*", 2), "ddiv": ("/", 2)}
NEG, POSTFIX, ATOM = 3, 4, 5


def prec(t) -> int:
    if not isinstance(t, Tree):
        return ATOM
    if t.data in BINARY:
        return BINARY[t.data][1]
    return {"neg": NEG, "attr": POSTFIX}.get(t.data, ATOM)


def _is_number(t) -> bool:
    return isinstance(t, Tree) and t.data == "number"


def _last_col(text: str, col: int) -> int:
    """The column after `text` when it starts at column `col`."""
    nl = text.rfind("\n")
    return col + len(text) if nl < 0 else len(text) - nl - 1


def _chain(t) -> list[tuple[str | None, object]]:
    """A left-associative run of one precedence level: [(None, t0), (op1, t1), ...]."""
    p = BINARY[t.data][1]
    out = []
    while isinstance(t, Tree) and t.data in BINARY and BINARY[t.data][1] == p:
        out.append((BINARY[t.data][0], t.children[1]))
        t = t.children[0]
    out.append((None, t))
    return out[::-1]


def written_parens(tree: Tree, text: str) -> frozenset[int]:
    """ids of the operands written in parentheses though the precedence did not need them
    (`(Q @ K.T) @ V` says which product comes first): the printer keeps them.

    The tree has no node for parentheses; they are read back from the text.  An operand is
    parenthesized exactly when the character after it (a left operand, the base of `.T`) is `)`
    rather than its operator, or the one before it (a right operand, the operand of `-`) is `(`
    rather than its operator — comments and whitespace skipped."""
    code = "".join(line[:k] + " " * (len(line) - k) if (k := line.find("#")) >= 0 else line
                   for line in text.splitlines(keepends=True))
    kept = set()

    def before(t) -> str:
        i = t.meta.start_pos - 1
        while i >= 0 and code[i].isspace():
            i -= 1
        return code[i] if i >= 0 else ""

    def after(t) -> str:
        i = t.meta.end_pos
        while i < len(code) and code[i].isspace():
            i += 1
        return code[i] if i < len(code) else ""

    for t in tree.iter_subtrees():
        if t.data in BINARY:
            left, right = t.children
            if isinstance(left, Tree) and after(left) == ")":
                kept.add(id(left))
            if isinstance(right, Tree) and before(right) == "(":
                kept.add(id(right))
        elif t.data == "neg" and isinstance(t.children[0], Tree) and before(t.children[0]) == "(":
            kept.add(id(t.children[0]))
        elif t.data == "attr" and isinstance(t.children[0], Tree) and after(t.children[0]) == ")":
            kept.add(id(t.children[0]))
    return frozenset(kept)


class Printer:
    """Expressions as text; `kept`: operands to parenthesize even where precedence does not."""

    def __init__(self, kept: frozenset[int] = frozenset()):
        self.kept = kept

    def _need(self, child, need: bool) -> bool:
        return need or id(child) in self.kept

    def _paren(self, child, need: bool) -> str:
        s = self.flat(child)
        return f"({s})" if self._need(child, need) else s

    def flat(self, t) -> str:
        """One expression (operator or dim) on one line."""
        if t is None:
            return ""
        if isinstance(t, Token):
            return str(t)
        d, c = t.data, t.children
        if d in BINARY:
            op, p = BINARY[d]
            return f"{self._paren(c[0], prec(c[0]) < p)} {op} {self._paren(c[1], prec(c[1]) <= p)}"
        if d == "neg":      # `-(-x)`, not `--x`; `-(a @ b)` keeps its parentheses
            return "-" + self._paren(c[0], prec(c[0]) <= NEG)
        if d == "attr":     # `(2).T`: `2.T` would lex as the number `2.`
            return self._paren(c[0], prec(c[0]) < POSTFIX or _is_number(c[0])) + "." + str(c[1])
        if d in ("number", "name", "dint", "dname"):
            return str(c[0])
        if d == "call":
            return f"{c[0]}({self._args(c[1])})"
        if d == "listlit":
            return f"[{self._args(c[0])}]"
        if d == "kwarg":
            return f"{c[0]}={self.flat(c[1])}"
        raise ValueError(f"fmt: no layout for {d!r}")     # a grammar rule this printer does not know

    def _args(self, arglist) -> str:
        return "" if arglist is None else ", ".join(self.flat(a) for a in arglist.children)

    def lay(self, t, col: int) -> str:
        """The expression starting at column `col`, broken over lines where it exceeds WIDTH."""
        s = self.flat(t)
        if col + len(s) <= WIDTH or not isinstance(t, Tree):
            return s
        d, c = t.data, t.children
        if d in BINARY:
            p = BINARY[d][1]
            terms = _chain(t)
            out = self._lay_paren(terms[0][1], col, prec(terms[0][1]) < p)
            for op, term in terms[1:]:
                need = prec(term) <= p
                piece = f" {op} {self._paren(term, need)}"
                if _last_col(out, col) + len(piece) <= WIDTH:
                    out += piece
                else:
                    out += "\n" + " " * col + op + " " + self._lay_paren(term, col + len(op) + 1, need)
            return out
        if d == "neg":
            return "-" + self._lay_paren(c[0], col + 1, prec(c[0]) <= NEG)
        if d == "attr":
            return self._lay_paren(c[0], col, prec(c[0]) < POSTFIX or _is_number(c[0])) + "." + str(c[1])
        if d == "call":
            return f"{c[0]}(" + self._lay_args(c[1], col + len(c[0]) + 1) + ")"
        if d == "listlit":
            return "[" + self._lay_args(c[0], col + 1) + "]"
        if d == "kwarg":
            return f"{c[0]}=" + self.lay(c[1], col + len(c[0]) + 1)
        return s

    def _lay_paren(self, t, col: int, need: bool) -> str:
        return "(" + self.lay(t, col + 1) + ")" if self._need(t, need) else self.lay(t, col)

    def _lay_args(self, arglist, col: int) -> str:
        """Arguments filled greedily: on the line while they fit (with the `,` or `)` after
        them), else on the next line under the first argument; one too long even there is
        broken itself."""
        if arglist is None:
            return ""
        out = ""
        for i, a in enumerate(arglist.children):
            piece = self.flat(a)
            if i:
                fits = _last_col(out, col) + 2 + len(piece) + 1 <= WIDTH
                out += "," + (" " if fits else "\n" + " " * col)
            start = _last_col(out, col)
            out += piece if start + len(piece) + 1 <= WIDTH else self.lay(a, start)
        return out


# -- statements --------------------------------------------------------------------------------

def _head(stmt: Tree, pad: int) -> str:
    """A statement's text up to its expression / shape, the name padded to `pad` characters."""
    kw = stmt.data.removesuffix("_stmt")
    return f"{kw} {str(stmt.children[0]).ljust(pad)}"


def _group(stmt: Tree) -> str:
    """Statements that align with their neighbours: dims with dims, declarations together."""
    return {"dim_stmt": "dim", "input_stmt": "decl", "param_stmt": "decl"}.get(stmt.data, "")


def statement(stmt: Tree, pad: int = 0, printer: Printer | None = None) -> str:
    pr = printer or Printer()
    d, c = stmt.data, stmt.children
    head = _head(stmt, pad)
    if d == "dim_stmt":
        _, value, hint = c
        return head + (f" = {pr.flat(value)}" if value is not None else "") + \
            (f" ~ {hint}" if hint is not None else "")
    if d in ("input_stmt", "param_stmt"):
        shape, rest = c[1], c[2:]
        dims = ", ".join(pr.flat(x) for x in shape.children if x is not None)
        words = [str(w.children[0]) for w in rest if isinstance(w, Tree) and w.data == "word"]
        init = next((w for w in rest if isinstance(w, Tree) and w.data == "init"), None)
        out = f"{head} : [{dims}]" + "".join(" " + w for w in words)
        if init is not None:
            name, args = init.children
            out += f" = {name}" + (f"({pr._args(args)})" if args is not None else "")
        return out
    if d in ("let_stmt", "export_stmt"):
        prefix = head + " = "
        return prefix + pr.lay(c[1], len(prefix))
    raise ValueError(f"fmt: no layout for statement {d!r}")


@dataclass
class _Item:
    """A statement or an own-line comment, with the lines it spans in the source."""
    start: int
    end: int
    stmt: Tree | None = None
    comment: str | None = None
    trailing: str | None = None               # the comment at the end of a statement's last line
    above: list[str] = field(default_factory=list)   # comments from inside a broken statement
    blank_before: bool = False


def _comments(text: str) -> dict[int, tuple[str, bool]]:
    """{line: (comment, alone on its line)}: the grammar has no strings, so `#` starts one."""
    out = {}
    for i, line in enumerate(text.splitlines(), 1):
        k = line.find("#")
        if k >= 0:
            out[i] = (line[k:].rstrip(), not line[:k].strip())
    return out


def _items(tree: Tree, text: str) -> list[_Item]:
    comments = _comments(text)
    items = [_Item(s.meta.line, s.meta.end_line, stmt=s) for s in tree.children]
    taken = set()
    for it in items:
        for ln in range(it.start, it.end + 1):
            if ln in comments:
                taken.add(ln)
                body, alone = comments[ln]
                if ln == it.end and not alone:
                    it.trailing = body
                else:
                    it.above.append(body)
    items += [_Item(ln, ln, comment=body) for ln, (body, _) in comments.items() if ln not in taken]
    items.sort(key=lambda it: it.start)
    lines = text.splitlines()
    for prev, it in zip(items, items[1:]):
        it.blank_before = any(not lines[k - 1].strip() for k in range(prev.end + 1, it.start))
    return items


def _runs(items: list[_Item], key) -> list[list[_Item]]:
    """Maximal runs of adjacent statements (no blank line or comment between) with the same key."""
    runs, cur = [], []
    for it in items:
        k = key(it) if it.stmt is not None and not it.above else None
        if cur and (k is None or it.blank_before or k != key(cur[-1])):
            runs.append(cur)
            cur = []
        if k is not None:
            cur.append(it)
    if cur:
        runs.append(cur)
    return runs


def format_source(text: str, filename: str = "<string>") -> str:
    """The formatted text (raises the parser's located OpdslError on a syntax error)."""
    tree = parse(text, filename)
    items = _items(tree, text)
    code: dict[int, str] = {}
    pads: dict[int, int] = {}
    for run in _runs(items, lambda it: _group(it.stmt)):
        if _group(run[0].stmt):
            width = max(len(str(it.stmt.children[0])) for it in run)
            pads.update({id(it): width for it in run})
    printer = Printer(written_parens(tree, text))
    for it in items:
        if it.stmt is not None:
            code[id(it)] = statement(it.stmt, pads.get(id(it), 0), printer)
    # trailing comments of adjacent one-line statements of one group start in one column
    comment_col: dict[int, int] = {}
    for run in _runs(items, lambda it: (_group(it.stmt), "\n" not in code[id(it)])):
        with_comment = [it for it in run if it.trailing]
        if with_comment and "\n" not in code[id(run[0])]:
            col = max(len(code[id(it)]) for it in with_comment) + 2
            comment_col.update({id(it): col for it in with_comment})
    out: list[str] = []
    for it in items:
        if it.blank_before and out:
            out.append("")
        if it.comment is not None:
            out.append(it.comment)
            continue
        out.extend(it.above)
        line = code[id(it)]
        if it.trailing:
            last = line.rsplit("\n", 1)[-1]
            col = comment_col.get(id(it), len(last) + 2)
            line += " " * (col - len(last)) + it.trailing
        out.append(line)
    return "\n".join(out) + "\n" if out else ""


def same_meaning(a: str, b: str) -> bool:
    """Whether two sources parse to the same tree (tokens compared by type and text)."""
    return parse(a) == parse(b)


# -- .op text of a traced program (Program.to_op for @opdsl.jit) -------------------------------
# The tracer records, beside each traced value, the expression that made it as a tree of the
# grammar's shape; `traced_program` prints those trees as a program.  Printing goes through the
# same Printer, so the text parses back to the same trees.

# the Builder's operations (builder.py) as grammar trees over operand trees
OPS = {"matmul": lambda a, b: Tree("matmul", [a, b]), "plus": lambda a, b: Tree("add", [a, b]),
       "minus": lambda a, b: Tree("sub", [a, b]), "times": lambda a, b: Tree("mul", [a, b]),
       "divide": lambda a, b: Tree("div", [a, b]), "negate": lambda a: Tree("neg", [a]),
       "T": lambda a: Tree("attr", [a, Token("NAME", "T")])}


def name_tree(name: str) -> Tree:
    return Tree("name", [Token("NAME", name)])


def value_tree(x) -> Tree | None:
    """A Python option or number as an expression; None for one .op text cannot spell."""
    if isinstance(x, bool):
        return name_tree("true" if x else "false")
    if isinstance(x, (int, float)):
        if x != x or x in (float("inf"), float("-inf")):
            return None
        tree = Tree("number", [Token("NUMBER", repr(abs(x)))])
        return Tree("neg", [tree]) if x < 0 or (x == 0 and str(x).startswith("-")) else tree
    if isinstance(x, str):
        return name_tree(x) if x.isidentifier() else None
    return None


def call_tree(name: str, args: list, kwargs: dict) -> Tree | None:
    """`name(a, b, k=v)`; None when an argument has no spelling."""
    if any(a is None for a in args) or any(v is None for v in kwargs.values()):
        return None
    items = list(args) + [Tree("kwarg", [Token("NAME", k), v]) for k, v in kwargs.items()]
    return Tree("call", [Token("NAME", name), Tree("arglist", items) if items else None])


def list_tree(items: list) -> Tree | None:
    if any(a is None for a in items):
        return None
    return Tree("listlit", [Tree("arglist", items) if items else None])


def op_tree(op: str, *operands) -> Tree | None:
    """A builder operation (`matmul`, `plus`, ..., `negate`, `T`) over operand trees."""
    return None if any(a is None for a in operands) else OPS[op](*operands)


def traced_program(inputs: list[tuple[str, tuple, list[str]]], exports: list[tuple[str, Tree]]) -> str:
    """.op text for a trace: `input name : [shape] words` per argument, then one `export` per
    result.  A subexpression reached twice (the same traced value used twice) becomes a `let`."""
    uses: dict[int, int] = {}

    def count(t):
        if isinstance(t, Tree):
            uses[id(t)] = uses.get(id(t), 0) + 1
            if uses[id(t)] == 1:
                for c in t.children:
                    count(c)
    for _, t in exports:
        count(t)
    taken = {n for n, _, _ in inputs} | {n for n, _ in exports}
    bound: dict[int, str] = {}
    lets: list[str] = []
    printer = Printer()

    def fresh() -> str:
        i = len(bound)
        while f"t{i}" in taken:
            i += 1
        taken.add(f"t{i}")
        return f"t{i}"

    def inline(t):
        """t with every shared subtree replaced by the name of its `let` (emitted first)."""
        if not isinstance(t, Tree) or t.data in ("name", "number"):
            return t
        if id(t) in bound:
            return name_tree(bound[id(t)])
        new = Tree(t.data, [inline(c) for c in t.children])
        if uses.get(id(t), 0) > 1:
            name = bound[id(t)] = fresh()
            lets.append(f"let {name} = {printer.flat(new)}")
            return name_tree(name)
        return new

    lines = [f"input {n} : [{', '.join(str(s) for s in shape)}]" + "".join(" " + w for w in words)
             for n, shape, words in inputs]
    body = [f"export {n} = {printer.flat(inline(t))}" for n, t in exports]
    text = "\n".join(lines + [""] + lets + ([""] if lets else []) + body) + "\n"
    return format_source(text)
