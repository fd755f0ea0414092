"""Program mutations for the fuzz tests (tests/test_fuzz.py) and the formatter's (tests/test_fmt.py):
the corpus (every example and every kind's examples) and a Hypothesis strategy that deletes,
duplicates, swaps and replaces its tokens and lines."""
from __future__ import annotations

import os
import re
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from opdsl.kinds import CONSTRUCTORS, REGISTRY

ROOT = Path(__file__).resolve().parent.parent
LONG = os.environ.get("OPDSL_FUZZ_LONG", "") not in ("", "0")

CORPUS = [p.read_text() for p in sorted((ROOT / "examples").glob("*.op"))]
CORPUS += [src for k in sorted(REGISTRY) for src in REGISTRY[k].examples]
# also kinds entered only as constructors (feature maps such as favor, hedgehog)
CORPUS += [src for k in sorted(CONSTRUCTORS) if k not in REGISTRY for src in CONSTRUCTORS[k].examples]


def budget(small: int, long: int):
    return settings(max_examples=long if LONG else small, deadline=None, derandomize=not LONG,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|#[^\n]*|\s+|.")
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NUMBER = re.compile(r"[0-9]")
SIZES = ["0", "1", "2", "3", "5", "7", "64", "100000", "2147483648", "9223372036854775808",
         "99999999999999999999999", "0.5", "1e308", "1e-320", "(0 - 3)", "(2 - 2)"]
UNICODE_NAMES = ["λ", "x̃", "名前", "ñ", "Ω2", "x\u200b", "ｘ", "_", "__", "a\u2028b"]


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text)


@st.composite
def mutated(draw, corpus=None):
    src = draw(st.sampled_from(corpus or CORPUS))
    toks = tokens(src)
    idents = sorted({t for t in toks if IDENT.fullmatch(t)})
    names = idents + sorted(CONSTRUCTORS) + ["T", "true", "false", "float16", "float64", "psd", "eye",
                                                    "causal", "rank", "None", "np", "getattr", "_x"]
    for _ in range(draw(st.integers(1, 4))):
        real = [i for i, t in enumerate(toks) if not t.isspace() and not t.startswith("#")]
        if not real:
            break
        i = draw(st.sampled_from(real))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "size", "name", "unicode", "operator",
                                   "argument", "line"]))
        t = toks[i]
        if op == "delete":
            del toks[i]
        elif op == "duplicate":
            toks.insert(i, t + " ")
        elif op == "swap":
            j = draw(st.sampled_from(real))
            toks[i], toks[j] = toks[j], toks[i]
        elif op == "size":
            nums = [j for j in real if NUMBER.match(toks[j])] or [i]
            toks[draw(st.sampled_from(nums))] = draw(st.sampled_from(SIZES))
        elif op == "name":
            ids = [j for j in real if IDENT.fullmatch(toks[j])] or [i]
            toks[draw(st.sampled_from(ids))] = draw(st.sampled_from(names))
        elif op == "unicode":
            ids = [j for j in real if IDENT.fullmatch(toks[j])] or [i]
            toks[draw(st.sampled_from(ids))] = draw(st.sampled_from(UNICODE_NAMES))
        elif op == "operator":
            ops = [j for j in real if toks[j] in "@*/+-"] or [i]
            toks[draw(st.sampled_from(ops))] = draw(st.sampled_from(["@", "*", "/", "+", "-", "@ -", "* 0 *"]))
        elif op == "argument":
            closing = [j for j in real if toks[j] == ")"] or [i]
            extra = draw(st.sampled_from(["x", "3", "rank=2", "causal=true", "chunk=0", "chunk=-1", "seed=1",
                                          "feature=favor(4, 0)", "feature=nope", "A.T", "eye(0)", ""]))
            toks[draw(st.sampled_from(closing))] = f", {extra})"
        else:
            lines = "".join(toks).split("\n")
            a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            what = draw(st.sampled_from(["delete", "duplicate", "swap"]))
            if what == "delete":
                del lines[a]
            elif what == "duplicate":
                lines.insert(b, lines[a])
            else:
                lines[a], lines[b] = lines[b], lines[a]
            toks = tokens("\n".join(lines))
    return "".join(toks)
