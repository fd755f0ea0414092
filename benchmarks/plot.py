"""benchmarks/results.png: every row of benchmarks/results.md that has a speed-up, as a bar.

    python -m benchmarks.plot [results.md] [-o results.png]

`make bench` draws it after writing results.md (README links it).  One horizontal bar per row, on
a log scale, grouped by section; rows timed against the dense operator (the matrix formed and
multiplied, or factored) in one colour, rows against another baseline (SDPA, a peer library, the
hand-written algorithm, spsolve, another backend) in another, and a row under its target outlined
in red.  A section measured several times keeps its rows from each run (the text says when).
Drawn with a pyplot-free matplotlib Figure.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rows(text: str) -> list[dict]:
    """(section, workload, baseline, speed-up, met) of every table row with a speed-up."""
    out, section, header = [], "", None
    for line in text.splitlines():
        if line.startswith("## "):
            section, header = line[3:].strip(), None
            continue
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if cells and cells[0] == "workload":
            header = cells
            continue
        if header is None or set(line) <= set("|-: "):
            continue
        row = dict(zip(header, cells))
        try:
            speedup = float(row.get("speed-up", ""))
        except ValueError:
            continue
        if speedup <= 0:
            continue
        out.append({"section": section, "workload": row["workload"].replace("\\|", "|"),
                    "baseline": row.get("baseline", ""), "speedup": speedup, "met": row.get("met", "")})
    return out


def dense_baseline(baseline: str) -> bool:
    return bool(re.search(r"\bdense\b|materiali[sz]ed", baseline, re.I))


def draw(data: list[dict], out: Path) -> Path:
    from matplotlib.figure import Figure
    n = len(data)
    fig = Figure(figsize=(11, max(4.0, 0.19 * n + 1.5)))
    ax = fig.subplots()
    ys = list(range(n))[::-1]
    colours = ["#1a73e8" if dense_baseline(r["baseline"]) else "#f29900" for r in data]
    edges = ["#c5221f" if "no" in r["met"] else "none" for r in data]
    ax.barh(ys, [r["speedup"] for r in data], color=colours, edgecolor=edges, linewidth=1.2)
    ax.set_xscale("log")
    ax.axvline(1.0, color="#333333", lw=0.8)
    ax.set_yticks(ys)
    ax.set_yticklabels([f"[{r['section']}] {r['workload'][:70]}" for r in data], fontsize=6)
    ax.set_xlabel("speed-up over the row's baseline (log scale; > 1: opdsl faster)")
    ax.set_title("opdsl benchmark rows (benchmarks/results.md)\nblue: against the dense operator; "
                 "orange: against another baseline; red edge: target missed", fontsize=8)
    ax.set_ylim(-1, n)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="?", default=str(HERE / "results.md"))
    ap.add_argument("-o", "--output", default=str(HERE / "results.png"))
    args = ap.parse_args(argv)
    data = rows(Path(args.results).read_text())
    if not data:
        print(f"{args.results}: no rows with a speed-up; nothing drawn")
        return 1
    print(f"wrote {draw(data, Path(args.output))} ({len(data)} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
