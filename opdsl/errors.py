"""Errors a user can cause. Every one carries a source span and a hint.

The message format follows compilers people know::

    model.op:4:21: error: cannot apply kron(A, B) [64, 64] to x [32, k]
        export y = kron(A, B) @ x
                            ^
    hint: x has 32 rows but the operator has 64 columns
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Span:
    """A place in a source file: 1-based line and column, end column exclusive."""

    file: str
    line: int
    column: int
    end_column: int | None = None
    text: str | None = None  # the whole source, to quote the line

    def source_line(self) -> str | None:
        if self.text is None:
            return None
        lines = text_lines(self.text)
        if 1 <= self.line <= len(lines):
            return lines[self.line - 1]
        return None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@lru_cache(maxsize=8)
def text_lines(text: str) -> list[str]:
    """The lines of a source text as the parser counts them (only "\\n" ends a line, unlike
    str.splitlines, which also splits at \\x0b, \\x1c, \\u2028, ...).  Cached: codegen quotes a
    line for every node (a str caches its hash)."""
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


class OpdslError(Exception):
    """Base class of every error opdsl reports to a user."""

    kind = "error"

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None,
                 notes: list[tuple[str, Span]] | None = None):
        self.message = message
        self.span = span
        self.hint = hint
        self.notes = notes or []
        super().__init__(self.render())

    def render(self) -> str:
        out = []
        out.extend(_located(self.span, f"{self.kind}: {self.message}"))
        for note, span in self.notes:
            out.extend(_located(span, f"note: {note}"))
        if self.hint:
            out.append(f"hint: {self.hint}")
        return "\n".join(out)


# The most characters of a source line an error message or a generated comment quotes: a line of
# 800 KB is shown as a window around the caret, not copied whole into every message or statement.
QUOTE_WIDTH = 160


def clip(text: str, width: int = QUOTE_WIDTH) -> str:
    """text, cut to `width` characters with "..." when longer (a source line quoted in generated code)."""
    return text if len(text) <= width else text[:width - 3] + "..."


def written(span: Span | None, default: str, width: int = 60) -> str:
    """What the user wrote at span (one line, at most `width` characters), else default: a message
    names the user's own expression (`lowrank(U, U)`), not the signature (`lowrank(U, V)`)."""
    if span is None or span.end_column is None:
        return default
    line = span.source_line()
    text = line[span.column - 1:span.end_column - 1].strip() if line is not None else ""
    return text if text and len(text) <= width else default


def _located(span: Span | None, headline: str) -> list[str]:
    if span is None:
        return [headline]
    lines = [f"{span}: {headline}"]
    src = span.source_line()
    if src is not None:
        width = max(1, (span.end_column or span.column + 1) - span.column)
        width = min(width, max(1, len(src) - span.column + 1))
        col = span.column - 1                  # 0-based column of the caret in src
        if len(src) > QUOTE_WIDTH:             # a window of the line around the caret
            start = max(0, min(col - QUOTE_WIDTH // 2, len(src) - QUOTE_WIDTH))
            head = "..." if start > 0 else ""
            tail = "..." if start + QUOTE_WIDTH < len(src) else ""
            src = head + src[start:start + QUOTE_WIDTH] + tail
            col = col - start + len(head)
            width = max(1, min(width, len(src) - len(tail) - col))
        # one column per character: tabs and unprintable characters (\\x0b, \\u2028, ...) as spaces / '?'
        src = "".join(" " if c == "\t" else c if c.isprintable() else "?" for c in src)
        lines.append("    " + src)
        lines.append("    " + " " * col + "^" + "~" * (width - 1))
    return lines


class ParseError(OpdslError):
    """The text is not in the language (grammar/opdsl.lark)."""


class NameError_(OpdslError):
    """A name is unknown or defined twice."""


class ShapeError(OpdslError):
    """Operands whose shapes do not fit together."""


class DimError(OpdslError):
    """A dimension that is not a positive integer, or dims that contradict each other."""


class TypeError_(OpdslError):
    """A tensor used where an operator is needed, a bad argument to a constructor, ..."""


class CallError(OpdslError):
    """A compiled function called with missing, extra or ill-shaped arguments."""


class LimitError(OpdslError):
    """A program beyond a documented limit of size (docs/reliability.md, "Limits")."""


class BackendError(OpdslError):
    """A backend that is not installed or cannot express a primitive."""
