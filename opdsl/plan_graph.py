"""`opdsl graph`: draw the IR of a program (after any pass) as DOT, SVG or PNG.

DOT text is always available.  SVG and PNG are rendered by Graphviz's `dot`
program when it is installed; without it, by matplotlib (a simpler layered
layout) when that is installed, and otherwise the DOT text is written next to
the requested file with a hint on installing Graphviz.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .errors import OpdslError

INSTALL_HINT = ("install Graphviz for SVG/PNG output: `apt-get install graphviz` (Debian/Ubuntu), "
                "`brew install graphviz` (macOS) or `conda install graphviz`")

_STYLE = {  # by role: shape, fill colour
    "input": ("ellipse", "#e8f0fe"),
    "param": ("ellipse", "#e6f4ea"),
    "operator": ("box", "#fff7e0"),
    "tensor": ("box", "#ffffff"),
    "primitive": ("box", "#f3e8fd"),
}


def stages(program) -> list[str]:
    """The names --after accepts: `source`, then every pass in the order run."""
    return ["source"] + [r.name for r in program.records]


def graph_after(program, after: str | None):
    """The IR after the named pass (None: after the last operator-level pass; "source": as written)."""
    if after is None:
        return program.optimized
    if after in ("source", "parse", "input"):
        return program.graph
    for r in program.records:
        if r.name == after:
            return r.graph_after
    raise OpdslError(f"unknown pass {after!r}", hint=f"choose one of: {', '.join(stages(program))}")


def _role(g, v) -> str:
    n = g[v]
    if n.is_input or n.is_arg:
        return "param" if n.attrs.get("role") == "param" else "input"
    spec = g.registry[n.kind]
    produces = getattr(spec, "produces", None)
    if produces is None:
        return "primitive"
    return "tensor" if produces == "tensor" else "operator"


def _esc(s: str) -> str:
    return str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _label(g, v) -> str:
    n = g[v]
    if n.is_input or n.is_arg:
        return f"{n.attrs.get('name', n.name)}\n{n.type}"
    attrs = [f"{k}={a}" for k, a in n.attrs.items() if k not in ("init", "props", "spec", "dtype") and a != ()]
    head = n.kind + (f" ({', '.join(attrs)})" if attrs else "")
    if len(head) > 40:
        head = head[:37] + "..."
    name = f"\n{n.name}" if n.name else ""
    return f"{head}\n{n.type}{name}"


def to_dot(g, title: str = "plan") -> str:
    """DOT text for the live part of g: data flows top to bottom, exports are bold."""
    exports = {v: name for name, v in g.exports.items()}
    out = [f'digraph "{_esc(title)}" {{', "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=10, style=filled];',
           '  edge [fontname="Helvetica", fontsize=8, color="#555555"];']
    live = g.live()
    for v in live:
        shape, fill = _STYLE[_role(g, v)]
        extra = ', penwidth=2.5, color="#c5221f"' if v in exports else ""
        out.append(f'  n{v} [label="{_esc(_label(g, v))}", shape={shape}, fillcolor="{fill}"{extra}];')
    for v in live:
        ops = g[v].operands
        for i, o in enumerate(ops):
            lab = f' [label="{i}"]' if len(ops) > 1 else ""
            out.append(f"  n{o} -> n{v}{lab};")
    for v, name in exports.items():
        out.append(f'  e_{_ident(name)} [label="export {_esc(name)}", shape=plaintext, style=""];')
        out.append(f"  n{v} -> e_{_ident(name)} [style=dashed];")
    out.append("}")
    return "\n".join(out) + "\n"


def _ident(s: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in s)


def _stage(program, after: str | None) -> str:
    return after or next((r.name for r in reversed(program.records) if r.level == "operator"), "source")


def write_program(program, out, after: str | None = None) -> str:
    g = graph_after(program, after)
    stage = _stage(program, after)
    dot = to_dot(g, f"{program.filename} after {stage}")
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt in ("dot", "gv", ""):
        out.write_text(dot)
        return f"wrote {out} (DOT, after {stage})"
    if fmt not in ("svg", "png", "pdf"):
        raise OpdslError(f"cannot draw to {out.name}: unknown format {fmt!r}", hint="use .svg, .png or .dot")
    exe = shutil.which("dot")
    if exe:
        r = subprocess.run([exe, f"-T{fmt}", "-o", str(out)], input=dot, text=True, capture_output=True)
        if r.returncode == 0:
            return f"wrote {out} (graphviz, after {stage})"
        raise OpdslError(f"graphviz dot failed: {r.stderr.strip()}", hint="write .dot instead and inspect it")
    if fmt in ("svg", "png", "pdf") and _draw_matplotlib(g, out, fmt, f"{program.filename} after {stage}"):
        return (f"wrote {out} (matplotlib layout, after {stage}); graphviz `dot` not found — "
                f"{INSTALL_HINT} for a better drawing")
    dot_path = out.with_suffix(".dot")
    dot_path.write_text(dot)
    return f"graphviz `dot` not found: wrote {dot_path} (DOT text) instead of {out}; {INSTALL_HINT}"


def plan_svg(program, after: str | None = None) -> tuple[str | None, str]:
    """The plan as SVG text to inline in a page (notebook display): (svg, how it was drawn), by
    graphviz when `dot` runs, else by matplotlib, else (None, why)."""
    import io
    g = graph_after(program, after)
    title = f"{program.filename} after {_stage(program, after)}"
    exe = shutil.which("dot")
    if exe:
        r = subprocess.run([exe, "-Tsvg"], input=to_dot(g, title), text=True, capture_output=True)
        if r.returncode == 0:
            return _inline(r.stdout), "graphviz"
    buf = io.BytesIO()
    if _draw_matplotlib(g, buf, "svg", title):
        return _inline(buf.getvalue().decode("utf-8")), "matplotlib"
    return None, f"no drawing: {INSTALL_HINT}, or install matplotlib"


def _inline(svg: str) -> str:
    """SVG without its XML prologue (declaration, doctype, comments), to sit inside HTML."""
    k = svg.find("<svg")
    return svg[k:] if k >= 0 else svg


def _draw_matplotlib(g, out, fmt: str, title: str) -> bool:
    """A layered drawing (operands above users) with matplotlib, to a path or a binary file;
    False when matplotlib is not installed."""
    try:        # a Figure without pyplot: no global backend switch (a notebook keeps its own)
        from matplotlib.figure import Figure
    except Exception:
        return False
    live = g.live()
    depth: dict[int, int] = {}
    for v in live:
        ops = g[v].operands
        depth[v] = 1 + max((depth[o] for o in ops), default=-1)
    layers: dict[int, list[int]] = {}
    for v in live:
        layers.setdefault(depth[v], []).append(v)
    width = max(len(vs) for vs in layers.values())
    pos = {}
    for d, vs in layers.items():
        for i, v in enumerate(vs):
            pos[v] = ((i + 0.5) * width / len(vs), -d)
    fig_w, fig_h = max(6.0, 2.6 * width), max(4.0, 1.3 * (len(layers) + 1))
    fig = Figure(figsize=(min(fig_w, 60), min(fig_h, 200)))
    ax = fig.subplots()
    exports = set(g.exports.values())
    for v in live:
        for o in g[v].operands:
            (x0, y0), (x1, y1) = pos[o], pos[v]
            ax.annotate("", xy=(x1, y1 + 0.18), xytext=(x0, y0 - 0.18),
                        arrowprops=dict(arrowstyle="->", color="#555555", lw=0.8))
    for v in live:
        shape, fill = _STYLE[_role(g, v)]
        x, y = pos[v]
        ax.text(x, y, _label(g, v), ha="center", va="center", fontsize=7,
                bbox=dict(boxstyle="round,pad=0.3" if shape == "ellipse" else "square,pad=0.3", fc=fill,
                          ec="#c5221f" if v in exports else "#333333", lw=2 if v in exports else 0.8))
    ax.set_xlim(-0.2, width + 0.2)
    ax.set_ylim(-max(layers) - 0.7, 0.7)
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, format=fmt)
    return True
