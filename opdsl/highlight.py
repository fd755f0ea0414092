"""Syntax highlighting of .op files: a Pygments lexer.

Registered through the `pygments.lexers` entry point (pyproject.toml), so `pygmentize -l opdsl`,
Sphinx, mkdocs and Jupyter highlight ```opdsl code blocks and *.op files once opdsl is installed.
The editors' grammar (editors/opdsl.tmLanguage.json) uses the same word lists; tests/test_highlight.py
checks both against the Lark grammar and the registry of kinds, so a new kind or keyword that is
missing here fails a test.  This module imports Pygments only: loading a lexer stays cheap.
"""
from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, Whitespace

# The statements' keywords (grammar/opdsl.lark).
KEYWORDS = ("dim", "input", "param", "let", "export")
# Words after a declaration's shape: dtypes, properties, layout (frontend.DTYPES/PROPS).
TYPE_WORDS = ("float32", "float64", "float16", "bfloat16", "int32", "int64", "sparse",
              "psd", "symmetric", "orthogonal", "lower", "upper", "diagonal", "invertible", "positive")
# Constructors of the registry (kinds.CONSTRUCTORS) and option calls (builder.OPTION_CALLS).
BUILTINS = ("assume", "attention", "block", "blockdiag", "butterfly", "circulant", "conv",
            "delta_attention", "dense", "diag", "diag_of", "eigvals", "eigvecs", "exp", "eye", "favor",
            "hedgehog", "householder", "hstack", "inv", "kernel", "kron", "kronsum", "log", "logdet",
            "lowrank", "monarch", "pad", "perm", "pivchol", "pow", "select", "softmax_attention",
            "spectral_conv", "sqrt", "toeplitz", "trace", "tridiag", "vstack", "zeros")
# Initializers of a `param` (frontend.INITS).
INITS = ("normal", "zeros", "ones", "eye", "orthogonal", "uniform")
CONSTANTS = ("true", "false")

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?)"


class OpdslLexer(RegexLexer):
    """The opdsl operator language (.op files)."""

    name = "opdsl"
    aliases = ["opdsl", "op"]
    filenames = ["*.op"]
    mimetypes = ["text/x-opdsl"]
    url = "https://pypi.org/project/opdsl/"

    tokens = {
        "root": [
            (r"[ \t\f\r\n]+", Whitespace),
            (r"#[^\n]*", Comment.Single),
            # a statement's keyword and the name it binds
            (rf"\b(dim|input|param)(\s+)({_NAME})", bygroups(Keyword.Declaration, Whitespace, Name.Variable)),
            (rf"\b(let)(\s+)({_NAME})", bygroups(Keyword.Declaration, Whitespace, Name.Variable)),
            (rf"\b(export)(\s+)({_NAME})", bygroups(Keyword.Declaration, Whitespace, Name.Function)),
            (words(KEYWORDS, suffix=r"\b"), Keyword.Declaration),
            (words(TYPE_WORDS, suffix=r"\b"), Keyword.Type),
            (words(CONSTANTS, suffix=r"\b"), Keyword.Constant),
            (words(sorted(set(BUILTINS + INITS)), suffix=r"\b"), Name.Builtin),
            (rf"(\.)(T)\b", bygroups(Operator, Name.Attribute)),
            (rf"({_NAME})(\s*)(=)", bygroups(Name.Attribute, Whitespace, Operator)),   # keyword arguments
            (_NAME, Name),
            (_NUMBER, Number),
            (r"[@*/+\-~=:.]", Operator),
            (r"[()\[\],]", Punctuation),
        ],
    }
