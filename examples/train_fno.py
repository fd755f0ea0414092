"""Train a 1-D Fourier neural operator whose Fourier layers are examples/fno.op.

    python examples/train_fno.py            # 400 Adam steps, well under a minute on 2 cores
    python examples/train_fno.py --quick    # 80 steps, with checks (the tests run this)
    python examples/train_fno.py --out fno.json

The task: the solution operator of −u'' + u = f on the periodic interval [0, 2π) (n = 64 points),
û_j = f̂_j / (j² + 1), for random smooth right-hand sides f = Σ_{j=1..8} (a_j cos jx + b_j sin jx) / j.
The model is the FNO of Li et al. (2021): a lifting Linear(2 → c) of (f(x), x) at each point, four
Fourier layers  v ← GELU(K v + L v + bias)  (the last without GELU) — K v + L v is the opdsl program
(spectral_conv and a 1 x 1 conv, examples/fno.op, as an opdsl.torch.Module) — and a projection
Linear(c → 1).  Loss: the relative L2 error on the training batch.

The run checks that the relative test error fell below half its initial value and below 0.2, and
exits 1 when a check fails.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

import opdsl.torch

HERE = Path(__file__).resolve().parent
N, WIDTH, LAYERS, FREQS = 64, 16, 4, 8


def poisson_data(count: int, seed: int):
    """(f, u) [count, n]: random smooth periodic f and the solution u of −u'' + u = f."""
    g = torch.Generator().manual_seed(seed)
    x = torch.arange(N) * (2 * math.pi / N)
    j = torch.arange(1, FREQS + 1, dtype=torch.float32)
    a, b = torch.randn(count, FREQS, generator=g) / j, torch.randn(count, FREQS, generator=g) / j
    cos, sin = torch.cos(j[:, None] * x), torch.sin(j[:, None] * x)          # [FREQS, n]
    f = a @ cos + b @ sin
    u = (a / (j ** 2 + 1)) @ cos + (b / (j ** 2 + 1)) @ sin
    return f, u


class FourierLayer(torch.nn.Module):
    """v ← K v + L v + bias on [batch, c, n]: examples/fno.op, samples as its columns."""

    def __init__(self, seed: int):
        super().__init__()
        self.op = opdsl.torch.Module.from_file(HERE / "fno.op", generator=seed)
        self.bias = torch.nn.Parameter(torch.zeros(WIDTH, 1))

    def forward(self, v):
        batch = v.shape[0]
        z = self.op(v.reshape(batch, WIDTH * N).T)                 # [c n, batch]
        return z.T.reshape(batch, WIDTH, N) + self.bias


class FNO(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lift = torch.nn.Linear(2, WIDTH)
        self.layers = torch.nn.ModuleList([FourierLayer(seed) for seed in range(LAYERS)])
        self.project = torch.nn.Sequential(torch.nn.Linear(WIDTH, 64), torch.nn.GELU(), torch.nn.Linear(64, 1))

    def forward(self, f):
        x = torch.arange(N, dtype=f.dtype) * (2 * math.pi / N)
        v = self.lift(torch.stack([f, x.expand_as(f)], dim=-1)).transpose(1, 2)       # [batch, c, n]
        for i, layer in enumerate(self.layers):
            v = layer(v)
            if i < LAYERS - 1:
                v = torch.nn.functional.gelu(v)
        return self.project(v.transpose(1, 2))[..., 0]


def relative_error(pred, u) -> float:
    return float(((pred - u).norm(dim=1) / u.norm(dim=1)).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    steps = 80 if args.quick else 400
    f_train, u_train = poisson_data(256, seed=1)
    f_test, u_test = poisson_data(64, seed=2)
    model = FNO()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        before = relative_error(model(f_test), u_test)
    g = torch.Generator().manual_seed(3)
    for step in range(steps):
        idx = torch.randint(0, f_train.shape[0], (32,), generator=g)
        pred = model(f_train[idx])
        loss = ((pred - u_train[idx]).norm(dim=1) / u_train[idx].norm(dim=1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = relative_error(model(f_test), u_test)
    print(f"relative test error: {before:.3f} before training, {after:.3f} after {steps} steps")
    result = {"steps": steps, "error_before": before, "error_after": after}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    ok = after < 0.5 * before and after < 0.2
    if not ok:
        print("FAIL: the test error did not fall enough", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
