"""`.op` text -> operator IR.

Parsing is Lark's LALR parser over grammar/opdsl.lark.  The tree is walked
without recursion (deeply nested expressions must not hit Python's recursion
limit); statements are processed in order, expressions through the Builder,
which holds the meaning of each operator.
"""
from __future__ import annotations

import difflib
import keyword
from functools import lru_cache
from importlib import resources

import lark
import sympy as sp
from lark import Token, Tree

from .builder import MAX_DIM as _builder_max_dim
from .builder import FLOAT_MIN, Builder, describe, finite
from .dims import DimTable, sym
from .errors import DimError, LimitError, NameError_, OpdslError, ParseError, Span, TypeError_, clip, text_lines
from .ir import Graph
from .kinds import REGISTRY, Val
from .kinds.base import DTYPES, INDEX_DTYPES
from .provenance import Statement

PROPS = ("psd", "symmetric", "orthogonal", "lower", "upper", "diagonal", "invertible", "positive")
INITS = ("normal", "zeros", "ones", "eye", "orthogonal", "uniform")
KEYWORDS = ("dim", "input", "param", "let", "export")
# The largest size of one tensor dimension: every framework stores sizes as signed 64-bit integers.
MAX_DIM = _builder_max_dim

# Limits of size (docs/reliability.md, "Limits"), chosen from measurements so that a program at
# every limit compiles in about 10-20 s of CPU and under ~1.5 GB: parsing costs ~6 s per MB of
# dense tokens, the passes ~0.4 s per 1,000 nodes.
MAX_SOURCE_CHARS = 1_000_000     # characters of .op text
MAX_NODES = 25_000               # operator-graph nodes the frontend builds (after sharing)
MAX_INT_DIGITS = 19              # digits of an integer literal, leading zeros aside (2**63 has 19)

# Lark terminal names, in words, for "expected ..." messages.
TERMINAL_WORDS = {
    "NAME": "a name", "INT": "an integer", "NUMBER": "a number", "LSQB": "'['", "RSQB": "']'",
    "LPAR": "'('", "RPAR": "')'", "COMMA": "','", "COLON": "':'", "EQUAL": "'='", "PLUS": "'+'",
    "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "AT": "'@'", "DOT": "'.'", "TILDE": "'~'",
    "DIM": "'dim'", "INPUT": "'input'", "PARAM": "'param'", "LET": "'let'", "EXPORT": "'export'",
    "$END": "the end of the file",
}


@lru_cache(maxsize=1)
def parser() -> lark.Lark:
    text = resources.files("opdsl.grammar").joinpath("opdsl.lark").read_text()
    return lark.Lark(text, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def _expected(names) -> str:
    words = sorted({TERMINAL_WORDS.get(n, n.lower()) for n in names})
    if len(words) > 8:
        words = words[:8] + ["..."]
    return ", ".join(words)


def parse(text: str, filename: str = "<string>") -> Tree:
    if len(text) > MAX_SOURCE_CHARS:
        # located at the first character beyond the limit; the span quotes only the text up to the
        # end of that line (a 50 MB file is not split into lines to show one)
        line = text.count("\n", 0, MAX_SOURCE_CHARS) + 1
        column = MAX_SOURCE_CHARS - (text.rfind("\n", 0, MAX_SOURCE_CHARS) + 1) + 1
        end = text.find("\n", MAX_SOURCE_CHARS)
        raise LimitError(f"the program is longer than {MAX_SOURCE_CHARS:,} characters ({len(text):,})",
                         Span(filename, line, column, None, text[:end if end >= 0 else len(text)]),
                         hint="opdsl compiles programs up to that size; split it into several programs")
    try:
        return parser().parse(text)
    except lark.exceptions.UnexpectedCharacters as e:
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else "?"
        raise ParseError(f"unexpected character {ch!r}", Span(filename, e.line, e.column, e.column + 1, text),
                         hint=f"expected {_expected(e.allowed)}" if e.allowed else None) from None
    except lark.exceptions.UnexpectedEOF as e:
        lines = text_lines(text)
        span = Span(filename, len(lines), len(lines[-1]) + 1, None, text)
        raise ParseError("the file ends in the middle of a statement", span,
                         hint=f"expected {_expected(e.expected)}") from None
    except lark.exceptions.UnexpectedToken as e:
        tok = e.token
        if tok.type == "$END":
            lines = text_lines(text)
            span = Span(filename, len(lines), len(lines[-1]) + 1, None, text)
            raise ParseError("the file ends in the middle of a statement", span,
                             hint=f"expected {_expected(e.expected)}") from None
        span = Span(filename, tok.line, tok.column, tok.end_column, text)
        what = f"keyword '{tok}'" if str(tok) in KEYWORDS else repr(str(tok))
        hint = f"expected {_expected(e.expected)}"
        if str(tok) in KEYWORDS and "NAME" in e.expected:
            hint += f"; '{tok}' is a keyword and cannot be used as a name"
        raise ParseError(f"unexpected {what}", span, hint=hint) from None
    except lark.exceptions.LarkError as e:  # anything else Lark can raise
        raise ParseError(f"cannot parse: {e}", Span(filename, 1, 1, None, text)) from None


class Frontend:
    def __init__(self, text: str, filename: str, dims: dict | None, dtype: str):
        self.text, self.file = text, filename
        self.overrides = dict(dims or {})
        self.default_dtype = dtype
        self.table = DimTable()
        # "dtype": the program's default, also for values made of constants alone (logdet(2 * eye(n)))
        self.graph = Graph(REGISTRY, self.table, meta={"file": filename, "source": text, "dtype": dtype})
        self.env: dict[str, tuple[Val, Span]] = {}
        self.uses: set[str] = set()     # the names the current statement reads (provenance.Statement)
        self.b = Builder(self.graph, known=self.env)

    # ---- spans ----------------------------------------------------------
    def span(self, t) -> Span:
        if isinstance(t, Token):
            return Span(self.file, t.line, t.column, t.end_column if t.end_line == t.line else None, self.text)
        m = t.meta
        if getattr(m, "empty", True):
            return Span(self.file, 1, 1, None, self.text)
        end = m.end_column if m.end_line == m.line else None
        return Span(self.file, m.line, m.column, end, self.text)

    # ---- statements -------------------------------------------------------
    def run(self) -> Graph:
        tree = parse(self.text, self.file)
        for st in tree.children:
            self.uses = set()
            getattr(self, st.data)(st)
            self.graph.meta.setdefault("statements", []).append(Statement(
                st.data.removesuffix("_stmt"), str(st.children[0]), self.span(st), frozenset(self.uses)))
        unused = set(self.overrides) - set(self.table.symbols)
        if unused:
            raise DimError(f"--dim names {', '.join(sorted(unused))}, which the program does not declare",
                           hint=f"declared dims: {', '.join(self.table.symbols) or 'none'}")
        self.graph.meta["signatures"] = signatures(self.graph)
        self.graph.meta["name_spans"] = {name: span for name, (_, span) in self.env.items()}
        self.graph.meta["inits"] = param_inits(self.graph)
        if not self.graph.exports:
            raise OpdslError("the program exports nothing", Span(self.file, 1, 1, None, self.text),
                             hint="add `export NAME = expression`")
        return self.graph

    def check_name(self, tok: Token) -> str:
        """A name the program may bind: not a keyword of the language, of Python, or reserved."""
        name = str(tok)
        if name in KEYWORDS or name in ("true", "false"):
            raise ParseError(f"unexpected keyword '{name}'", self.span(tok),
                             hint=f"'{name}' is a keyword and cannot be used as a name")
        if keyword.iskeyword(name):
            raise NameError_(f"{name!r} is a Python keyword and cannot be used as a name", self.span(tok),
                             hint="generated functions and their arguments are named as in the source; "
                                  f"pick another name, e.g. {name}_")
        if name.startswith("_"):
            raise NameError_(f"{name!r} starts with an underscore; such names are reserved for generated code",
                             self.span(tok), hint=f"pick another name, e.g. {name.lstrip('_') or 'x'}")
        return name

    def define(self, tok: Token, val: Val):
        name = self.check_name(tok)
        if name in self.env:
            raise NameError_(f"{name!r} is already defined", self.span(tok),
                             notes=[("first defined here", self.env[name][1])],
                             hint="each name is defined once; pick another name")
        self.env[name] = (val, self.span(tok))

    def dim_stmt(self, st):
        name, value, hint = st.children
        s = sym(str(name))
        span = self.span(name)
        self.define(name, Val("dim", s, span))
        self.table.symbols[str(name)] = s
        if str(name) in self.overrides:
            v = self.overrides[str(name)]
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise DimError(f"dim {name} = {v!r} must be a positive integer", span)
            _check_size(v, f"dim {name} = {v}", span)
            self.table.values[s] = v
        elif value is not None:
            e = self.dim_expr(value)
            known = self.table.subs(e)
            if not known.free_symbols:
                if not known.is_integer or known <= 0:
                    raise DimError(f"dim {name} = {known} is not a positive integer", self.span(value),
                                   hint="dims are positive integers; check the division")
                _check_size(known, f"dim {name} = {known}", self.span(value))
                if e.free_symbols:
                    self.table.derived[s] = e
                self.table.values[s] = int(known)
            else:
                if known.is_positive is False:
                    raise DimError(f"dim {name} = {e} is not positive for any positive values of its dims",
                                   self.span(value))
                self.table.derived[s] = e
        if hint is not None:
            if not 1 <= self.integer(hint) <= MAX_DIM:
                raise DimError(f"the size hint of dim {name} must be a positive integer below 2**63, got {hint}",
                               self.span(hint))
            self.table.hints[s] = int(hint)

    def integer(self, tok: Token) -> int:
        """An integer literal; one of more than MAX_INT_DIGITS digits is beyond any size (and beyond
        what Python converts from text by default, 4,300 digits), an error at the token."""
        digits = len(str(tok).lstrip("0"))
        if digits > MAX_INT_DIGITS:
            raise DimError(f"the integer {clip(str(tok), 24)} ({digits} digits) is too large", self.span(tok),
                           hint="a tensor dimension must be below 2**63 (sizes are signed 64-bit integers)")
        return int(tok)

    def dim_expr(self, t) -> sp.Expr:
        stack, out = [(t, False)], []
        while stack:
            node, done = stack.pop()
            if isinstance(node, Token):
                out.append(node)
                continue
            if not done:
                stack.append((node, True))
                stack.extend((c, False) for c in reversed(node.children))
                continue
            n = len(node.children)
            args = out[len(out) - n:]
            del out[len(out) - n:]
            out.append(self._dim_node(node, args))
        return out[0]

    def _dim_node(self, node, args):
        """One node of a dimension expression: the method named after its grammar rule (dim_*)."""
        return getattr(self, f"dim_{node.data}")(node, args)

    def dim_dint(self, node, args):
        return sp.Integer(self.integer(args[0]))

    def dim_dname(self, node, args):
        name = str(args[0])
        val = self.env.get(name)
        if val is None or val[0].tag != "dim":
            close = difflib.get_close_matches(name, list(self.table.symbols), n=3)
            raise NameError_(f"unknown dimension {name!r}", self.span(args[0]),
                             hint=f"did you mean {', '.join(close)}?" if close
                             else f"declare it first: `dim {name}` (free) or `dim {name} = 64`")
        return val[0].v

    def dim_ddiv(self, node, args):
        a, b = args
        if b == 0:
            raise DimError("division by zero in a dimension", self.span(node))
        return a / b

    def dim_dadd(self, node, args):
        return args[0] + args[1]

    def dim_dsub(self, node, args):
        return args[0] - args[1]

    def dim_dmul(self, node, args):
        return args[0] * args[1]

    def shape(self, t) -> tuple:
        dims = []
        for c in t.children:
            if c is None:
                continue
            e = self.dim_expr(c)
            v = self.table.subs(e)
            what = f"dimension {e} = {v}" if e != v else f"dimension {v}"
            if not v.free_symbols and (not v.is_integer or v <= 0):
                raise DimError(f"{what} is not a positive integer", self.span(c))
            if v.is_positive is False:       # e.g. 1 - n: not positive for any n >= 1
                raise DimError(f"dimension {e} is not positive for any positive values of its dims", self.span(c))
            if not v.free_symbols:
                _check_size(v, f"dimension {e} = {v}" if e.free_symbols else f"dimension {v}", self.span(c))
            dims.append(e)
        return tuple(dims)

    def input_stmt(self, st):
        self._decl(st, "input")

    def param_stmt(self, st):
        self._decl(st, "param")

    def _decl(self, st, role):
        name, shape, *words, init = st.children
        dtype, props, sparse = self.default_dtype, [], None
        for w in words:
            word = str(w.children[0])
            if word in DTYPES or word in INDEX_DTYPES:
                dtype = word
            elif word in PROPS:
                props.append(word)
            elif word == "sparse":
                sparse = w.children[0]
            else:
                raise TypeError_(f"unknown dtype or property {word!r}", self.span(w.children[0]),
                                 hint=f"dtypes: {', '.join(DTYPES + INDEX_DTYPES)}; properties: "
                                      f"{', '.join(PROPS)}; layout: sparse")
        attrs = {"name": str(name), "role": role, "shape": self.shape(shape), "dtype": dtype,
                 "props": tuple(props)}
        if sparse is not None:
            self._sparse_layout(sparse, role, attrs, init)
        if dtype in INDEX_DTYPES and (role != "input" or props):
            raise TypeError_(f"an {dtype} tensor holds indices: it is an `input` without properties",
                             self.span(name), hint="integer tensors are select's indices: input idx : [k] int64")
        if init is not None:
            if role == "input":
                raise TypeError_("an input has no initializer", self.span(init),
                                 hint="use `param` for a learnable tensor with an initializer")
            iname = str(init.children[0])
            if iname not in INITS:
                raise TypeError_(f"unknown initializer {iname!r}", self.span(init.children[0]),
                                 hint=f"choose one of: {', '.join(INITS)}")
            args = []
            if init.children[1] is not None:
                for a in init.children[1].children:
                    if isinstance(a, Tree) and a.data == "kwarg":
                        raise TypeError_(f"initializer {iname}(...) takes no option {str(a.children[0])!r}",
                                         self.span(a.children[0]), hint="pass numbers by position, e.g. normal(0, 0.1)")
                    val = self.expr(a)
                    args.append(float(self.b.num(val)))
            attrs["init"] = (iname, tuple(args))
        elif role == "param":
            attrs["init"] = ("normal", ())
        v = self.graph.add("input", [], attrs, self.span(name), str(name))
        if len(self.graph.g) > MAX_NODES:
            self.too_many_nodes(name)
        self.graph.meta.setdefault("decl_order", []).append(str(name))
        if sparse is not None:          # the name is the operator over the sparse argument
            self.graph.meta.setdefault("sparse", []).append(str(name))
            v = self.graph.add("sparse", [v], {"T": False}, self.span(name))
        self.define(name, Val("node", v, self.span(name)))

    def _sparse_layout(self, word, role, attrs, init):
        """`input S : [m, n] sparse`: a matrix argument in the framework's sparse format."""
        if role != "input" or init is not None:
            raise TypeError_("only an `input` can be sparse", self.span(word),
                             hint="a sparse argument's pattern comes with it at the call; declare it `input`")
        if len(attrs["shape"]) != 2:
            raise TypeError_(f"a sparse input is a matrix [m, n], declared with {len(attrs['shape'])} dims",
                             self.span(word), hint="sparse arguments are unbatched matrices")
        if attrs["dtype"] not in ("float32", "float64"):
            raise TypeError_(f"a sparse input is float32 or float64, not {attrs['dtype']}", self.span(word),
                             hint="the frameworks' sparse products support float32 and float64")
        attrs["layout"] = "sparse"

    def let_stmt(self, st):
        name, expr = st.children
        val = self.expr(expr)
        if val.tag == "node":
            self.graph.rename(val.v, str(name))
        self.define(name, val)

    def export_stmt(self, st):
        name, expr = st.children
        self.check_name(name)
        if str(name) in self.table.symbols:
            raise NameError_(f"export {str(name)!r} has the name of a dimension", self.span(name),
                             notes=[("the dimension is declared here", self.env[str(name)][1])],
                             hint="exports and dims share the generated module's names; rename one of them")
        val = self.expr(expr)
        if str(name) in self.graph.exports:
            raise NameError_(f"export {str(name)!r} is defined twice", self.span(name),
                             notes=[("first defined here", self.graph.meta["export_spans"][str(name)])])
        if val.tag != "node":
            raise TypeError_(f"an export must be a tensor, got {describe(val, self.graph)}", self.span(expr))
        if self.graph.type(val.v).is_op:
            raise TypeError_(f"export {name} is an operator {self.graph.type(val.v)}; exports are tensors",
                             self.span(expr), hint=f"apply it to an input: `export {name} = (...) @ x`")
        if not self.graph[val.v].name and self.graph.kind(val.v) != "input":
            self.graph.rename(val.v, str(name))
        self.graph.exports[str(name)] = val.v
        self.graph.meta.setdefault("export_spans", {})[str(name)] = self.span(st)

    # ---- expressions ------------------------------------------------------
    def expr(self, t) -> Val:
        stack, out = [(t, False)], []
        while stack:
            node, done = stack.pop()
            if node is None or isinstance(node, Token):
                out.append(node)
                continue
            if not done:
                stack.append((node, True))
                stack.extend((c, False) for c in reversed(node.children))
                continue
            n = len(node.children)
            args = out[len(out) - n:]
            del out[len(out) - n:]
            out.append(self._expr_node(node, args))
            if len(self.graph.g) > MAX_NODES:
                self.too_many_nodes(node)
        return out[0]

    def too_many_nodes(self, t):
        raise LimitError(f"the program has more than {MAX_NODES:,} operations (graph nodes)", self.span(t),
                         hint="opdsl compiles programs up to that size; split it into several programs, "
                              "or bind a repeated expression once with `let`")

    def _expr_node(self, node, args):
        """One node of an expression: the method named after its grammar rule (ex_*)."""
        return getattr(self, f"ex_{node.data}")(node, args, self.span(node))

    def ex_number(self, node, args, span):
        x = finite(float(args[0]), span)
        text = str(args[0])
        if x == 0 and text.lower().split("e")[0].strip("0.") != "":
            # not written as zero, yet 0 in float64 (1e-400): an error, as 1e400 is and as
            # 1e-320 * A is in float32 (builder.times)
            raise TypeError_(f"the constant {clip(text, 24)} is 0 in float64 (smallest {FLOAT_MIN['float64']:g})",
                             span, hint="write 0 if 0 is meant")
        return Val("num", int(x) if x.is_integer() and "." not in str(args[0]) else x, span)

    def ex_name(self, node, args, span):
        return self.lookup(args[0])

    def _binary(self, fn, args, span):
        return fn(self.resolve(args[0]), self.resolve(args[1]), span)

    def ex_add(self, node, args, span):
        return self._binary(self.b.plus, args, span)

    def ex_sub(self, node, args, span):
        return self._binary(self.b.minus, args, span)

    def ex_matmul(self, node, args, span):
        return self._binary(self.b.matmul, args, span)

    def ex_mul(self, node, args, span):
        return self._binary(self.b.times, args, span)

    def ex_div(self, node, args, span):
        return self._binary(self.b.divide, args, span)

    def ex_neg(self, node, args, span):
        return self.b.negate(self.resolve(args[0]), span)

    def ex_attr(self, node, args, span):
        return self.b.attr(self.resolve(args[0]), str(args[1]), span)

    def ex_kwarg(self, node, args, span):
        return ("kw", args[0], args[1])

    def ex_arglist(self, node, args, span):
        return [a for a in args if a is not None]

    def ex_listlit(self, node, args, span):
        """[a, b, ...]: a list of values (block's grid: block([[A, B], [C, D]]))."""
        items = args[0] or []
        for a in items:
            if isinstance(a, tuple):
                raise TypeError_("a list holds values, not keyword arguments", self.span(a[1]))
        return Val("list", tuple(items), span)

    def ex_call(self, node, args, span):
        fname, arglist = args
        pos, kw, names = [], {}, {}
        for a in arglist or []:
            if isinstance(a, tuple):
                key = str(a[1])
                if key in kw:
                    raise TypeError_(f"option {key!r} given twice", self.span(a[1]))
                kw[key], names[key] = a[2], self.span(a[1])
            else:
                if kw:
                    raise TypeError_("a positional argument follows a keyword argument", a.span)
                pos.append(a)
        return self.b.call(str(fname), pos, kw, span, names)

    def lookup(self, tok: Token) -> Val:
        name = str(tok)
        span = self.span(tok)
        if name in self.env:
            self.uses.add(name)
            v = self.env[name][0]
            return Val(v.tag, v.v, span)
        if name in ("true", "false"):
            return Val("bool", name == "true", span)
        return Val("word", name, span)

    def resolve(self, val: Val) -> Val:
        """A bare word in an operand position is an unknown name."""
        if val.tag == "word":
            self.b.unknown(val)
        return val


def _check_size(v, what: str, span: Span):
    if int(v) > MAX_DIM:
        raise DimError(f"{what} is too large", span,
                       hint="a tensor dimension must be below 2**63 (sizes are signed 64-bit integers)")


def signatures(g: Graph) -> dict:
    """Each export's arguments: the inputs and params it uses, in declaration order."""
    order = g.meta.get("decl_order", [])
    out = {}
    for name, root in g.exports.items():
        used = {g[v].attrs["name"]: g[v].attrs for v in g.live([root]) if g.kind(v) == "input"}
        out[name] = [(a, used[a]["shape"], used[a]["dtype"], used[a]["role"]) for a in order if a in used]
    return out


# Initializers of `param` declarations: name -> (allowed argument counts, rank needed, argument names).
INIT_ARGS = {"normal": ((0, 1, 2), 0, "mean, std"), "uniform": ((0, 2), 0, "low, high"), "zeros": ((0,), 0, ""),
             "ones": ((0,), 0, ""), "eye": ((0,), 2, ""), "orthogonal": ((0,), 2, "")}


def param_inits(g: Graph) -> dict:
    """Each param's initializer (name, args), in declaration order; checked against INIT_ARGS.

    Backends that emit layers (an nn.Module, a JAX init(key)) read it from graph.meta["inits"].
    """
    out = {}
    for n in g.nodes():
        if not n.is_input or n.attrs.get("role") != "param":
            continue
        iname, args = n.attrs.get("init", ("normal", ()))
        counts, rank, names = INIT_ARGS[iname]
        if len(args) not in counts:
            want = " or ".join(str(c) for c in counts)
            raise TypeError_(f"initializer {iname} takes {want} arguments, got {len(args)}", n.span,
                             hint=f"write {iname}({names})" if names else f"write `= {iname}` without arguments")
        if len(n.attrs["shape"]) < rank:
            raise TypeError_(f"initializer {iname} needs a matrix (rank >= 2), got a param of shape "
                             f"[{', '.join(map(str, n.attrs['shape']))}]", n.span,
                             hint="use ones, zeros, normal or uniform for a vector")
        if iname == "normal" and len(args) == 2 and args[1] < 0:
            raise TypeError_(f"normal(mean, std) needs std >= 0, got {args[1]}", n.span)
        if iname == "uniform" and len(args) == 2 and not args[0] < args[1]:
            raise TypeError_(f"uniform(low, high) needs low < high, got {args[0]}, {args[1]}", n.span)
        out[n.attrs["name"]] = (iname, tuple(args))
    order = g.meta.get("decl_order", [])
    return {a: out[a] for a in order if a in out}


def to_graph(text: str, filename: str = "<string>", dims: dict | None = None, dtype: str = "float32") -> Graph:
    if dtype not in DTYPES:
        raise TypeError_(f"unknown dtype {dtype!r}", hint=f"choose one of: {', '.join(DTYPES)}")
    return Frontend(text, filename, dims, dtype).run()
