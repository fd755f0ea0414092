"""Syntax highlighting (opdsl/highlight.py, editors/opdsl.tmLanguage.json) against the grammar."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pygments = pytest.importorskip("pygments")
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename  # noqa: E402
from pygments.token import Error, Keyword, Name  # noqa: E402

from opdsl import highlight  # noqa: E402
from opdsl.builder import OPTION_CALLS  # noqa: E402
from opdsl.frontend import INITS, PROPS  # noqa: E402
from opdsl.kinds import CONSTRUCTORS  # noqa: E402
from opdsl.kinds.base import DTYPES, INDEX_DTYPES  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.op"))
GRAMMAR = (ROOT / "grammar" / "opdsl.lark").read_text()
TM = json.loads((ROOT / "editors" / "opdsl.tmLanguage.json").read_text())
# the quoted literals of the Lark grammar: keywords and operator / punctuation characters
LITERALS = set(re.findall(r'"([^"]+)"', re.sub(r"//[^\n]*", "", GRAMMAR)))
GRAMMAR_KEYWORDS = {w for w in LITERALS if w.isidentifier()}
GRAMMAR_SYMBOLS = LITERALS - GRAMMAR_KEYWORDS


def test_word_lists_are_the_languages():
    assert GRAMMAR_KEYWORDS == set(highlight.KEYWORDS)
    assert set(highlight.BUILTINS) == set(CONSTRUCTORS) | set(OPTION_CALLS)
    assert set(highlight.INITS) == set(INITS)
    assert set(highlight.TYPE_WORDS) == set(DTYPES) | set(INDEX_DTYPES) | set(PROPS) | {"sparse"}


def test_the_lexer_is_registered_through_its_entry_point():
    assert type(get_lexer_by_name("opdsl")).__name__ == "OpdslLexer"
    assert type(get_lexer_for_filename("model.op")).__name__ == "OpdslLexer"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_lexes_without_error_tokens(path):
    text = path.read_text()
    toks = list(get_lexer_by_name("opdsl").get_tokens(text))
    assert not [v for t, v in toks if t in Error]
    assert "".join(v for _, v in toks) == (text if text.endswith("\n") else text + "\n")   # nothing dropped


def test_token_classes():
    toks = [(t, v) for t, v in get_lexer_by_name("opdsl").get_tokens(
        "dim n = 4\ninput x : [n, n] float64 psd\nexport y = inv(kron(x, x), method=lu).T @ x  # c\n")
        if v.strip()]
    kinds = dict((v, t) for t, v in toks)
    assert kinds["dim"] in Keyword and kinds["export"] in Keyword and kinds["float64"] in Keyword.Type
    assert kinds["psd"] in Keyword.Type and kinds["kron"] in Name.Builtin and kinds["inv"] in Name.Builtin
    assert kinds["method"] in Name.Attribute and kinds["y"] in Name.Function
    assert ("Token.Comment.Single", "# c") in [(str(t), v) for t, v in toks]


def _tm_patterns():
    """The grammar's top-level patterns in order, as Python regexes (TextMate tries them in order
    at each position; these patterns use no Oniguruma-only syntax)."""
    out = []
    for inc in TM["patterns"]:
        rule = TM["repository"][inc["include"][1:]]
        out.append((inc["include"][1:], re.compile(rule["match"], re.M)))
    return out


def _tm_scan(text: str) -> list[tuple[str, str]]:
    pats = _tm_patterns()
    pos, out = 0, []
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        for name, rx in pats:
            m = rx.match(text, pos)
            if m and m.end() > pos:
                out.append((name, m.group(0)))
                pos = m.end()
                break
        else:
            out.append(("unmatched", text[pos]))
            pos += 1
    return out


def test_textmate_grammar_covers_the_grammar():
    for kw in GRAMMAR_KEYWORDS:
        assert re.search(rf"\b{kw}\b", TM["repository"]["keyword"]["match"]), kw
    for word in set(highlight.BUILTINS) | set(highlight.INITS):
        assert re.fullmatch(TM["repository"]["builtin"]["match"], word), word
    for word in highlight.TYPE_WORDS:
        assert re.fullmatch(TM["repository"]["type"]["match"], word), word
    symbols = TM["repository"]["operator"]["match"] + TM["repository"]["punctuation"]["match"]
    for sym in GRAMMAR_SYMBOLS:
        assert all(re.search(re.escape(ch), symbols) or ch in symbols for ch in sym), sym
    assert [n for n, _ in _tm_scan("export y = kron(A, B).T @ x  # c")] == [
        "declaration", "operator", "builtin", "punctuation", "name", "punctuation", "name", "punctuation",
        "transpose", "operator", "name", "comment"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_textmate_grammar_matches_every_example(path):
    assert not [v for n, v in _tm_scan(path.read_text()) if n == "unmatched"]
