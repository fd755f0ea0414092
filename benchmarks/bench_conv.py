"""N-d convolutions, the FNO layer, FFT-diagonal inverses and a multigrid V-cycle (issue 17,
docs/conv.md), torch CPU, float32, 2 threads; each opdsl result is checked against its baseline
before timing, then both are timed interleaved (median of several rounds; the fastest in the note).

- 2-D conv on a 256 x 256 image, `mode=same`, 3 x 3 and 31 x 31 kernels (one channel), against
  torch.nn.functional.conv2d of the flipped kernel: opdsl chooses the sliding window for 3 x 3 and
  FFTs for 31 x 31 (the row says which it chose).
- FNO layer: `spectral_conv(W, n)` 1-d, width 64, 16 modes, n = 1024, 32 samples; 2-d, width 32,
  12 x 12 modes, 64 x 64, 8 samples — against the hand-written torch layer of the FNO reference code
  (rfft, einsum over the kept modes, irfft, its weights complex already), on the samples in its own
  layout [b, c, n]; opdsl gets the same memory as a batch [b, c n, 1].  Target >= 1x.
- Shifted 2-D circular inverse at 512 x 512: `inv(Hᵀ H + 0.01 I) @ y` for a 5 x 5 circular blur H,
  against the same FFT formula written in torch (the dense matrix would be 262,144² float32 = 275 GB:
  not timed).
- One MgNO V-cycle (examples/multigrid.op's) on 16 channels of 128 x 128, against the same written with
  torch's conv2d / conv_transpose2d.

Quick mode: smaller sizes.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

import opdsl

from .bench_linalg import fastest, interleaved
from .common import row, setup_threads

THREADS = 2


def _check(name, got, want, rtol):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
    if not err <= rtol:
        raise AssertionError(f"{name}: opdsl differs from the baseline by {err:.1e}")
    return err


def _choice(prog) -> str:
    return "; ".join(c.split(" (")[0] for c in prog.primitive.meta.get("choices", []))


def conv_rows(quick):
    n = 64 if quick else 256
    out = []
    for k in (3, 31 if not quick else 15):
        prog = opdsl.compile(f"input h : [{k}, {k}]\ninput x : [{n * n}, 1]\nexport y = conv(h, {n}, {n}, mode=same) @ x",
                             backend="torch", dtype="float32", filename="bench_conv")
        h, x = torch.randn(k, k), torch.randn(n * n, 1)
        w = h.flip(0, 1)[None, None]
        img = x.reshape(1, 1, n, n)
        pad = ((k - 1) // 2, k - 1 - (k - 1) // 2)
        cands = {"opdsl": lambda: prog.y(h=h, x=x),
                 "conv2d": lambda: torch.nn.functional.conv2d(
                     torch.nn.functional.pad(img, (pad[0], pad[1], pad[0], pad[1])), w)}
        with torch.no_grad():
            err = _check(f"conv {k}", cands["opdsl"]().reshape(n, n), cands["conv2d"]()[0, 0], 1e-3)
            t = interleaved(cands, reps=9, inner=3)
        out.append(row(f"2-D conv {n}x{n}, {k}x{k} kernel, mode=same, float32", "torch.nn.functional.conv2d",
                       t["opdsl"], t["conv2d"], None, None,
                       f"opdsl chose: {_choice(prog)}; {fastest(t, 'opdsl', 'conv2d')}; max rel diff {err:.0e}"))
    return out


def _fno_reference(w1, w2, x, modes):
    """The FNO reference code's SpectralConv1d / 2d forward (complex weights), torch."""
    if w2 is None:
        xf = torch.fft.rfft(x)
        out = torch.zeros(x.shape[0], w1.shape[1], x.shape[-1] // 2 + 1, dtype=torch.cfloat)
        out[:, :, :modes[0]] = torch.einsum("bix,iox->box", xf[:, :, :modes[0]], w1)
        return torch.fft.irfft(out, n=x.shape[-1])
    m1, m2 = modes
    xf = torch.fft.rfft2(x)
    out = torch.zeros(x.shape[0], w1.shape[1], x.shape[-2], x.shape[-1] // 2 + 1, dtype=torch.cfloat)
    out[:, :, :m1, :m2] = torch.einsum("bixy,ioxy->boxy", xf[:, :, :m1, :m2], w1)
    out[:, :, -m1:, :m2] = torch.einsum("bixy,ioxy->boxy", xf[:, :, -m1:, :m2], w2)
    return torch.fft.irfft2(out, s=x.shape[-2:])


def fno_rows(quick):
    out = []
    for dims, width, modes, batch in ((((256,) if quick else (1024,)), 64, (16,), 32),
                                      (((32, 32) if quick else (64, 64)), 32, (12, 12), 8)):
        npts = int(np.prod(dims))
        wshape = (width, width) + ((modes[0],) if len(dims) == 1 else (2 * modes[0], modes[1])) + (2,)
        prog = opdsl.compile(f"input W : {list(wshape)}\ninput v : [{batch}, {width * npts}, 1]\n"
                             f"export y = spectral_conv(W, {', '.join(map(str, dims))}) @ v",
                             backend="torch", dtype="float32", filename="bench_conv")
        w = torch.randn(wshape) / width
        wc = torch.complex(w[..., 0], w[..., 1]).transpose(0, 1).contiguous()          # [c_in, c_out, ...]
        w1, w2 = (wc, None) if len(dims) == 1 else (wc[:, :, :modes[0]].contiguous(), wc[:, :, modes[0]:].contiguous())
        xb = torch.randn((batch, width) + dims)
        v = xb.reshape(batch, -1, 1)                   # a batch of flattened images (a view of xb)
        cands = {"opdsl": lambda: prog.y(W=w, v=v), "torch": lambda: _fno_reference(w1, w2, xb, modes)}
        with torch.no_grad():
            err = _check("fno", cands["opdsl"]().reshape(xb.shape), cands["torch"](), 1e-3)
            t = interleaved(cands, reps=9, inner=3)
        out.append(row(f"FNO spectral conv {'x'.join(map(str, dims))}, width {width}, modes "
                       f"{'x'.join(map(str, modes))}, {batch} samples, float32",
                       "the FNO reference code's torch layer (rfft, einsum, irfft), samples as [b, c, n]",
                       t["opdsl"], t["torch"], None, 1.0,
                       f"opdsl applied to the batch [b, c n, 1] (a view of [b, c, n]); {fastest(t, 'opdsl', 'torch')}; "
                       f"max rel diff {err:.0e}"))
    return out


def deblur_rows(quick):
    n = 128 if quick else 512
    prog = opdsl.compile(f"dim h = {n}\ndim w = {n}\ninput k : [5, 5]\ninput y : [h * w, 1]\n"
                         "let H = conv(k, h, w, mode=circular)\n"
                         "export x = inv(H.T @ H + 0.01 * eye(h * w)) @ y", backend="torch", dtype="float32",
                         filename="bench_conv")
    k, y = torch.rand(5, 5), torch.randn(n * n, 1)
    k = k / k.sum()

    def by_hand():
        kp = torch.zeros(n, n)
        kp[:5, :5] = k
        lam = torch.fft.rfft2(torch.roll(kp, (-2, -2), (0, 1)))
        return torch.fft.irfft2(torch.fft.rfft2(y.reshape(n, n)) / (lam.abs() ** 2 + 0.01), s=(n, n))
    cands = {"opdsl": lambda: prog.x(k=k, y=y), "torch": by_hand}
    with torch.no_grad():
        err = _check("deblur", cands["opdsl"]().reshape(n, n), cands["torch"](), 1e-3)
        t = interleaved(cands, reps=9, inner=3)
    g = prog.primitive
    peak = max(int(np.prod([g.dims.value(s) for s in g.type(v).shape])) for v in g.live())
    return [row(f"shifted 2-D circular inverse inv(HᵀH + 0.01 I) y, {n}x{n} (N = {n * n:,}), 5x5 blur, float32",
                "the FFT formula written in torch (the dense N x N matrix: not formed)", t["opdsl"], t["torch"],
                None, None, f"dense matrix would be {4 * (n * n) ** 2 / 1e9:,.0f} GB; largest opdsl value "
                f"{peak:,} entries; {fastest(t, 'opdsl', 'torch')}; max rel diff {err:.0e}")]


def vcycle_rows(quick):
    from pathlib import Path
    c, n = (4, 32) if quick else (16, 128)
    text = (Path(__file__).resolve().parent.parent / "examples" / "multigrid.op").read_text()
    prog = opdsl.compile(text, backend="torch", dtype="float32", dims={"n": n, "m": n // 2, "c": c},
                         filename="bench_conv")
    ws = {name: torch.randn(c, c, 3, 3) / (3 * c) for name in ("A", "B", "R", "Bc")}
    f = torch.randn(1, c, n, n)
    flip = {k: w.flip(-1, -2) for k, w in ws.items()}

    def conv(w, x, stride=1):
        return torch.nn.functional.conv2d(x, w, padding=1, stride=stride)

    def plain():
        u1 = conv(flip["B"], f)
        r = f - conv(flip["A"], u1)
        u2 = u1 + torch.nn.functional.conv_transpose2d(conv(flip["Bc"], conv(flip["R"], r, 2)), flip["R"],
                                                       padding=1, stride=2, output_padding=1)
        return u2 + conv(flip["B"], f - conv(flip["A"], u2))
    fv = f.reshape(-1, 1)
    cands = {"opdsl": lambda: prog.u(f=fv, **ws), "torch": plain}
    with torch.no_grad():
        err = _check("vcycle", cands["opdsl"]().reshape(f.shape), cands["torch"](), 1e-3)
        t = interleaved(cands, reps=9, inner=3)
    return [row(f"MgNO V-cycle (examples/multigrid.op), {c} channels, {n}x{n}, float32",
                "the same V-cycle with torch conv2d / conv_transpose2d", t["opdsl"], t["torch"], None, None,
                f"opdsl chose: {'; '.join(sorted(set(_choice(prog).split('; '))))}; {fastest(t, 'opdsl', 'torch')}; "
                f"max rel diff {err:.0e}")]


def rows(quick: bool = False):
    setup_threads(THREADS)
    return conv_rows(quick) + fno_rows(quick) + deblur_rows(quick) + vcycle_rows(quick)


if __name__ == "__main__":
    for r in rows("--quick" in sys.argv):
        print(r)
