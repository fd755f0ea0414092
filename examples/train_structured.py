"""Train a small MLP twice: with a dense hidden layer, and with a Monarch layer written in an .op file.

    python examples/train_structured.py            # 200 steps per model, well under a minute on 2 cores
    python examples/train_structured.py --quick    # 15 steps per model (the tests run this)

The hidden n x n layer (n = 256) of  Linear(32, n) -> ReLU -> [n x n] -> ReLU -> Linear(n, 8)  is either
torch.nn.Linear(n, n) or the Monarch layer of examples/layer.op (opdsl.torch.Module, plus a bias):
2 b³ = 8192 weights instead of n² = 65536.  Both learn the same synthetic regression task (a random
teacher network); the script prints each model's parameter count, median step time and final loss,
and saves the two loss curves as a PNG.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import matplotlib
import torch
from tqdm import tqdm

import opdsl
import opdsl.torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent


class MonarchLinear(torch.nn.Module):
    """y = monarch(L, R) x + bias for rows x of a batch: the layer of examples/layer.op, and a bias."""

    def __init__(self, path=HERE / "layer.op", generator=None):
        super().__init__()
        self.op = opdsl.torch.Module.from_file(path, generator=generator)
        n = self.op.program.graph.dims.value(self.op.program.graph.dims.symbols["n"])
        self.bias = torch.nn.Parameter(torch.zeros(n))

    def forward(self, x):
        return self.op(x) + self.bias


def mlp(hidden: torch.nn.Module, d_in: int, n: int, d_out: int) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(d_in, n), torch.nn.ReLU(), hidden, torch.nn.ReLU(),
                               torch.nn.Linear(n, d_out))


def data(steps: int, batch: int, d_in: int, d_out: int, seed: int):
    """Batches from a random teacher network y = W2 tanh(W1 x) + noise."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(64, d_in, generator=g) / d_in ** 0.5
    w2 = torch.randn(d_out, 64, generator=g) / 8
    for _ in range(steps):
        x = torch.randn(batch, d_in, generator=g)
        yield x, torch.tanh(x @ w1.T) @ w2.T + 0.01 * torch.randn(batch, d_out, generator=g)


def train(name: str, model: torch.nn.Module, steps: int, batch: int, d_in: int, d_out: int, seed: int):
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses, times = [], []
    bar = tqdm(data(steps, batch, d_in, d_out, seed), total=steps, desc=f"{name:>8}", leave=True)
    for x, y in bar:
        t = time.perf_counter()
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
        losses.append(loss.item())
        if len(losses) % 10 == 0:
            bar.set_postfix(loss=f"{statistics.fmean(losses[-10:]):.4f}")
    return losses, times


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short run (15 steps)")
    ap.add_argument("--steps", type=int, default=None, help="training steps per model (default 200)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="train_structured.png", help="where to save the loss curves")
    args = ap.parse_args(argv)
    steps = args.steps or (15 if args.quick else 200)
    torch.set_num_threads(2)
    d_in, n, d_out = 32, 256, 8

    torch.manual_seed(args.seed)
    models = {"dense": mlp(torch.nn.Linear(n, n), d_in, n, d_out)}
    torch.manual_seed(args.seed)
    models["monarch"] = mlp(MonarchLinear(generator=args.seed), d_in, n, d_out)

    results = {}
    for name, model in models.items():
        losses, times = train(name, model, steps, args.batch, d_in, d_out, args.seed)
        hidden = model[2]
        results[name] = {
            "params": sum(p.numel() for p in model.parameters()),
            "hidden params": sum(p.numel() for p in hidden.parameters()),
            "step ms": 1e3 * statistics.median(times[len(times) // 5:]),   # after warm-up
            "final loss": statistics.fmean(losses[-max(1, steps // 10):]),
            "losses": losses,
        }

    print(f"\n{'model':<8} {'params':>8} {'hidden layer':>13} {'step ms':>8} {'final loss':>11}")
    for name, r in results.items():
        print(f"{name:<8} {r['params']:>8} {r['hidden params']:>13} {r['step ms']:>8.2f} {r['final loss']:>11.5f}")

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        ax.plot(r["losses"], label=f"{name} ({r['hidden params']} hidden-layer params)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (MSE)")
    ax.set_title(f"MLP with a dense vs a Monarch {n}x{n} hidden layer")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    plt.close(fig)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
