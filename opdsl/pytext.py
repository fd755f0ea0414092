"""User text in generated Python: the only way it gets there.

Generated modules quote the `.op` source (a comment per statement, a docstring per
export) and name the file it came from.  That text is the user's, and a compiler
that pastes it into Python source unescaped runs it: a `\"\"\"` in a comment ends a
docstring, a `\\r` ends a comment, a backslash is an escape, a file name can hold
quotes and newlines.  So every piece of user text that reaches generated code goes
through one of the three functions below, and nothing else writes user text into
source (docs/reliability.md, "Generated code"; tests/test_injection.py parses every
generated module and finds only statements the compiler emitted).

- `literal(text)`   a Python string literal equal to text (repr: always valid);
- `docstring(text)` a docstring literal: triple-quoted when that is exact, else repr;
- `comment(text)`   text safe to put after `#`: one line, printable, nothing that a
                    tokenizer reads as the end of the comment.
"""
from __future__ import annotations


def _escape(ch: str) -> str:
    """A non-printable character as its escape: \\r, \\x0b, \\u2028, ..."""
    return ch.encode("unicode_escape").decode("ascii")


def printable(text: str) -> str:
    """text with every character that str.isprintable() rejects escaped (line and paragraph
    separators, control and format characters, lone surrogates); the rest unchanged."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def comment(text: str) -> str:
    """text for a `# ...` comment: Python ends a comment only at a line break (\\n, \\r), which is
    not printable, and reads nothing else in it; escaping every non-printable character also
    keeps NUL bytes and form feeds out of the module."""
    return printable(text)


def literal(text: str) -> str:
    """A Python string literal whose value is text (repr escapes quotes, backslashes and every
    non-printable character)."""
    return repr(str(text))


def docstring(text: str) -> str:
    """A docstring literal whose value is text: `\"\"\"text\"\"\"` when that reads back exactly
    (lines of printable characters, no backslash, no double quote), else its repr."""
    text = str(text)
    if all(line.isprintable() for line in text.split("\n")) and "\\" not in text and '"' not in text:
        return f'"""{text}"""'
    return literal(text)
