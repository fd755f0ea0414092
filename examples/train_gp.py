"""Fit a Gaussian process's hyperparameters with the marginal log-likelihood compiled from examples/gp.op.

    python examples/train_gp.py                  # n = 200, 200 Adam steps; vs GPyTorch if it is installed
    python examples/train_gp.py --quick          # n = 100, 60 steps, with checks (the tests run this)
    python examples/train_gp.py --plot gp.png    # the posterior mean and a 2σ band
    python examples/train_gp.py --out gp.json    # the results as JSON

The data: y = sin(3x) + ε, ε ~ N(0, 0.2²), x uniform in [-3, 3].  The model is GPyTorch's
ExactGP with a zero mean, ScaleKernel(RBFKernel()) and a GaussianLikelihood: the lengthscale ℓ,
outputscale s and noise variance σ² are softplus of unconstrained raw values (σ² also plus
GPyTorch's floor 1e-4), all raw values start at 0 (GPyTorch's initial values, ℓ = s ≈ 0.693),
and the loss is GPyTorch's: the negative marginal log-likelihood divided by n.  The program is
compiled once (torch, float64) and called every step; autograd differentiates the generated code.

The run checks that the loss went down and that the learned σ² is within a factor of 3 of the
true 0.04, and exits 1 when a check fails.  With gpytorch importable (not in --quick), the same
fit is repeated with a GPyTorch ExactGP and the two are compared, as is our log-likelihood at
GPyTorch's hyperparameters with GPyTorch's.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import opdsl

HERE = Path(__file__).resolve().parent
NOISE_STD = 0.2          # of the toy data: the true noise variance is NOISE_STD² = 0.04
NOISE_FLOOR = 1e-4       # GPyTorch's GaussianLikelihood: noise = 1e-4 + softplus(raw_noise)
CHECK_FACTOR = 3.0       # the learned noise variance must be within this factor of the true one


def toy_data(n: int, seed: int, dtype=torch.float64):
    """x [n, 1] uniform in [-3, 3], y [n, 1] = sin(3x) + N(0, NOISE_STD²)."""
    g = torch.Generator().manual_seed(seed)
    x = 6 * torch.rand(n, 1, generator=g, dtype=dtype) - 3
    return x, torch.sin(3 * x) + NOISE_STD * torch.randn(n, 1, generator=g, dtype=dtype)


class Hyperparameters(torch.nn.Module):
    """The positive GP hyperparameters from unconstrained raw values (GPyTorch's Positive() and
    GreaterThan(1e-4) constraints): lengthscale [d], outputscale [1], noise variance [1]."""

    def __init__(self, d: int, dtype=torch.float64):
        super().__init__()
        self.raw_lengthscale = torch.nn.Parameter(torch.zeros(d, dtype=dtype))
        self.raw_outputscale = torch.nn.Parameter(torch.zeros(1, dtype=dtype))
        self.raw_noise = torch.nn.Parameter(torch.zeros(1, dtype=dtype))

    def forward(self) -> dict:
        sp = torch.nn.functional.softplus
        return {"lengthscale": sp(self.raw_lengthscale), "outputscale": sp(self.raw_outputscale),
                "noise": NOISE_FLOOR + sp(self.raw_noise)}


class CompiledGP:
    """Exact GP regression on training data X [n, d], y [n, 1] through gp.op's exports.

    `loss()` is −log p(y | X) / n (a 0-d tensor, differentiable in the hyperparameters);
    `predict(Xs)` the posterior mean [m] and variance [m] of f at Xs [m, d]."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, path=HERE / "gp.op"):
        self.X, self.y = X, y
        self.prog = opdsl.compile_file(path, backend="torch", dtype="float64")    # once: n, d are free dims
        self.hyper = Hyperparameters(X.shape[1], X.dtype)

    def _args(self, h: dict | None = None) -> dict:
        h = self.hyper() if h is None else h
        # gp.op takes the noise per training point: the likelihood's one σ² repeated n times
        return {"X": self.X, "lengthscale": h["lengthscale"], "outputscale": h["outputscale"],
                "noise": h["noise"].expand(self.X.shape[0])}

    def loss(self, hyper: dict | None = None) -> torch.Tensor:
        """−log p(y | X) / n at the current hyperparameters, or at `hyper` (tensors, as Hyperparameters gives)."""
        return -self.prog.mll(y=self.y, **self._args(hyper)) / self.X.shape[0]

    @torch.no_grad()
    def predict(self, Xs: torch.Tensor):
        args = self._args()
        return self.prog.mean(Xs=Xs, y=self.y, **args)[:, 0], self.prog.var(Xs=Xs, **args)

    def values(self) -> dict:
        """The hyperparameters as Python floats (lengthscale: a float when d = 1, else a list)."""
        h = {k: v.detach().tolist() for k, v in self.hyper().items()}
        return {k: v[0] if len(v) == 1 else v for k, v in h.items()}


def fit(params, loss_fn, steps: int, lr: float) -> list[float]:
    """Adam on loss_fn(); the loss before each step, and after the last one."""
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    losses.append(loss_fn().item())
    return losses


def gpytorch_fit(X, y, steps: int, lr: float):
    """The same model, initial values and optimizer in GPyTorch (exact: Cholesky at this n): (values, losses)."""
    import gpytorch

    class ExactGP(gpytorch.models.ExactGP):
        def __init__(self, likelihood):
            super().__init__(X, y[:, 0], likelihood)
            self.mean_module = gpytorch.means.ZeroMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    likelihood = gpytorch.likelihoods.GaussianLikelihood().to(X.dtype)
    model = ExactGP(likelihood).to(X.dtype)
    model.train()
    likelihood.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    losses = fit(model.parameters(), lambda: -mll(model(X), y[:, 0]), steps, lr)
    values = {"lengthscale": model.covar_module.base_kernel.lengthscale.item(),
              "outputscale": model.covar_module.outputscale.item(), "noise": likelihood.noise.item()}
    return values, losses


def plot(gp: CompiledGP, path: str, truth=lambda x: torch.sin(3 * x)) -> None:
    try:
        import matplotlib
    except ImportError:
        print(f"matplotlib is not installed: no plot written to {path}")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = torch.linspace(-3.5, 3.5, 300, dtype=gp.X.dtype)[:, None]
    mean, var = gp.predict(xs)
    sd_f = var.clamp_min(0).sqrt()                        # of the latent f
    sd_y = (var + gp.values()["noise"]).clamp_min(0).sqrt()  # of a new observation y*
    x = xs[:, 0]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.fill_between(x, mean - 2 * sd_y, mean + 2 * sd_y, color="C0", alpha=0.15, label="±2σ of y*")
    ax.fill_between(x, mean - 2 * sd_f, mean + 2 * sd_f, color="C0", alpha=0.35, label="±2σ of f")
    ax.plot(x, mean, color="C0", label="posterior mean")
    ax.plot(x, truth(x), "k--", lw=1, label="sin(3x)")
    ax.plot(gp.X[:, 0], gp.y[:, 0], "k.", ms=3, label="training data")
    ax.set_title("GP posterior, hyperparameters fitted through examples/gp.op")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=5, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="n = 100, 60 steps, no GPyTorch comparison")
    ap.add_argument("--n", type=int, default=None, help="training points (default 200; 100 with --quick)")
    ap.add_argument("--steps", type=int, default=None, help="Adam steps (default 200; 60 with --quick)")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", metavar="FILE", help="save the posterior mean and 2σ band (PNG)")
    ap.add_argument("--out", metavar="FILE", help="write the results as JSON")
    args = ap.parse_args(argv)
    n = args.n or (100 if args.quick else 200)
    steps = args.steps or (60 if args.quick else 200)
    torch.set_num_threads(1)       # small dense kernels: a second thread spin-waits more than it helps

    X, y = toy_data(n, args.seed)
    t0 = time.perf_counter()
    gp = CompiledGP(X, y)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    losses = fit(gp.hyper.parameters(), gp.loss, steps, args.lr)
    fit_s = time.perf_counter() - t0
    learned = gp.values()
    true_noise = NOISE_STD ** 2
    results = {"n": n, "steps": steps, "lr": args.lr, **learned, "true_noise": true_noise,
               "initial_loss": losses[0], "final_loss": losses[-1], "final_nll": losses[-1] * n,
               "compile_s": compile_s, "fit_s": fit_s, "losses": losses}
    ratio = learned["noise"] / true_noise
    results["checks"] = {"loss went down": losses[-1] < losses[0],
                         f"noise within {CHECK_FACTOR:g}x of {true_noise:g}": 1 / CHECK_FACTOR < ratio < CHECK_FACTOR}
    results["ok"] = all(results["checks"].values())

    print(f"n = {n}, {steps} Adam steps (lr {args.lr}): compile {compile_s:.2f} s, fit {fit_s:.2f} s")
    print(f"  lengthscale {learned['lengthscale']:.4f}   outputscale {learned['outputscale']:.4f}   "
          f"noise {learned['noise']:.4f} (true {true_noise:g})")
    print(f"  loss −log p(y)/n: {losses[0]:.4f} -> {losses[-1]:.4f}   "
          f"(final negative log-likelihood {losses[-1] * n:.3f})")

    if not args.quick:
        try:
            import gpytorch
        except ImportError:
            print("gpytorch is not installed: no comparison")
        else:
            values, g_losses = gpytorch_fit(X, y, steps, args.lr)
            # our loss at GPyTorch's hyperparameters: the two marginal likelihoods must agree
            at = {k: torch.tensor([v], dtype=X.dtype) for k, v in values.items()}
            ours_at_theirs = gp.loss(at).item()
            rel = max(abs(learned[k] / v - 1) for k, v in values.items())
            results["gpytorch"] = {**values, "final_loss": g_losses[-1], "our_loss_at_these": ours_at_theirs,
                                   "max_rel_diff": rel}
            print(f"GPyTorch {gpytorch.__version__}: lengthscale {values['lengthscale']:.4f}   outputscale "
                  f"{values['outputscale']:.4f}   noise {values['noise']:.4f}   loss {g_losses[-1]:.4f}")
            print(f"  ours vs GPyTorch: hyperparameters within {rel:.1e} (relative), loss at GPyTorch's "
                  f"values {ours_at_theirs:.10f} vs {g_losses[-1]:.10f}")

    if args.plot:
        plot(gp, args.plot)
    for what, ok in results["checks"].items():
        print(f"  check: {what}: {'ok' if ok else 'FAILED'}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
