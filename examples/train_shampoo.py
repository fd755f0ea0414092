"""Train a small MLP with Adam, with Shampoo and with SOAP, the last two built from compiled opdsl steps.

    python examples/train_shampoo.py                     # 300 steps per optimizer
    python examples/train_shampoo.py --quick             # 40 steps, seconds; exits 1 unless every
                                                         # optimizer's loss went down (the tests run this)
    python examples/train_shampoo.py --plot losses.png --out results.json

The model is  Linear(16, 64) -> tanh -> Linear(64, 64) -> tanh -> Linear(64, 4)  on a synthetic
regression task (a random teacher network plus noise); the three runs start from the same weights and
see the same batches.  Adam is torch.optim.Adam.  Shampoo and SOAP precondition each weight matrix
W [m, n] with its gradient G (biases get Adam) through the steps of examples/shampoo.op and
examples/soap.op, each compiled once per weight shape for torch:

    Shampoo   L ← β₂ L + G Gᵀ, R ← β₂ R + Gᵀ G every step; the direction L^(-1/4) G R^(-1/4)
              (shampoo.op's direction_eps: per-factor eps, float64 eigendecompositions) from the
              factors as they were at the last preconditioner update (every `precondition_frequency`
              steps), then momentum
    SOAP      the same factors; at each preconditioner update their eigenvectors Q_L, Q_R (an opdsl
              eigvecs program); Adam's moments with the second one in the rotated basis, and the step
              Q_L (Q_Lᵀ M Q_R / (√v + ε)) Q_Rᵀ (soap.op's rotated and step)

Matrices are passed flattened row-major (G.reshape(-1)); the .op files explain the vec convention.
Shampoo's first preconditioner comes from the first gradient alone (factors of rank ≤ min(m, n)),
which shows as a bump in its loss over the first 20 steps; Distributed Shampoo avoids it by stepping
with its grafted method (Adam) until `start_preconditioning_step`.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

import opdsl

HERE = Path(__file__).resolve().parent
D_IN, HIDDEN, D_OUT = 16, 64, 4


# ---- the compiled steps: one program per example and weight shape -------------------------------

@functools.cache
def step_program(example: str, m: int, n: int) -> opdsl.Program:
    """examples/<example>.op compiled for torch with its free dims fixed to a weight's [m, n]."""
    return opdsl.compile_file(HERE / f"{example}.op", backend="torch", dims={"m": m, "n": n})


@functools.cache
def eigvecs_program(m: int) -> opdsl.Program:
    """Q with L = Q diag(λ) Qᵀ for a psd L [m, m] (λ ascending), in float64 (SOAP retries in float64
    when float32 fails; at these sizes float64 costs nothing)."""
    return opdsl.compile(f"dim m = {m}\ninput L : [m, m] float64 psd\nexport basis = eigvecs(L)\n",
                         backend="torch")


def adam_update(p, state, lr, betas, eps=1e-8):
    """One Adam step on p (for the parameters that are not matrices: the biases)."""
    if "exp_avg" not in state:
        state["exp_avg"], state["exp_avg_sq"], state["adam_step"] = torch.zeros_like(p), torch.zeros_like(p), 0
    state["adam_step"] += 1
    t = state["adam_step"]
    state["exp_avg"].lerp_(p.grad, 1 - betas[0])
    state["exp_avg_sq"].lerp_(p.grad.square(), 1 - betas[1])
    denom = (state["exp_avg_sq"] / (1 - betas[1] ** t)).sqrt_().add_(eps)
    p.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - betas[0] ** t))


def factored_params(group, states, adam_betas, factor_beta):
    """(p, state, g) for each weight matrix of `group` (states: the optimizer's per-parameter state)
    that has a gradient, after its Kronecker
    factors are accumulated (L ← β L + G Gᵀ, R ← β R + Gᵀ G) and its step counted; the other
    parameters (biases) take an Adam step here instead.  What Shampoo and SOAP share."""
    for p in group["params"]:
        if p.grad is None:
            continue
        state = states[p]
        if p.ndim != 2:
            adam_update(p, state, group["lr"], adam_betas)
            continue
        g = p.grad
        m, n = g.shape
        if "L" not in state:
            state.update(step=0, L=p.new_zeros(m, m), R=p.new_zeros(n, n))
        state["step"] += 1
        state["L"].mul_(factor_beta).addmm_(g, g.T)
        state["R"].mul_(factor_beta).addmm_(g.T, g)
        yield p, state, g


class Shampoo(torch.optim.Optimizer):
    """Shampoo for the weight matrices, Adam for the other parameters.

    For W [m, n] with gradient G: L ← β₂ L + G Gᵀ [m, m] and R ← β₂ R + Gᵀ G [n, n] at every step;
    every `precondition_frequency` steps (the first one included) the factors are copied to the
    ones the inverse roots are taken of; the direction L^(-1/4) G R^(-1/4) of those copies goes
    through momentum β₁ (an average, bias-corrected) and W ← W − lr · direction.  The compiled step
    takes the eigendecompositions on every call: at these sizes (two at most 64 x 64) that costs less
    than keeping the roots as extra state; large models would export the roots and cache them.
    """

    def __init__(self, params, lr=3e-2, betas=(0.9, 0.99), precondition_frequency=10, adam_betas=(0.9, 0.999)):
        super().__init__(params, dict(lr=lr, betas=betas, precondition_frequency=precondition_frequency,
                                      adam_betas=adam_betas))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p, state, g in factored_params(group, self.state, group["adam_betas"], beta2):
                m, n = g.shape
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(p)
                if (state["step"] - 1) % group["precondition_frequency"] == 0:
                    state["L_used"], state["R_used"] = state["L"].clone(), state["R"].clone()
                direction = step_program("shampoo", m, n).direction_eps(
                    L=state["L_used"], R=state["R_used"], g=g.reshape(-1)).reshape(m, n)
                state["momentum"].lerp_(direction, 1 - beta1)
                p.add_(state["momentum"], alpha=-group["lr"] / (1 - beta1 ** state["step"]))


class SOAP(torch.optim.Optimizer):
    """SOAP (Vyas et al. 2024) for the weight matrices, Adam for the other parameters.

    For W [m, n] with gradient G: L ← β L + G Gᵀ and R ← β R + Gᵀ G at every step (β =
    shampoo_beta); every `precondition_frequency` steps (the first one included) Q_L, Q_R ←
    eigvecs(L), eigvecs(R).  Adam runs in that basis: M ← β₁ M + (1 − β₁) G (kept in the original
    basis: the rotation is linear), v ← β₂ v + (1 − β₂) (Q_Lᵀ G Q_R)², and W ← W − lr ·
    Q_L (Q_Lᵀ M̂ Q_R / (√v̂ + ε)) Q_Rᵀ with Adam's bias corrections (M̂, v̂).  The basis is not
    sorted, nor v permuted with it (SOAP sorts by the estimated eigenvalues and permutes v).
    """

    def __init__(self, params, lr=3e-3, betas=(0.95, 0.95), shampoo_beta=0.95, precondition_frequency=10):
        super().__init__(params, dict(lr=lr, betas=betas, shampoo_beta=shampoo_beta,
                                      precondition_frequency=precondition_frequency))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p, state, g in factored_params(group, self.state, group["betas"], group["shampoo_beta"]):
                m, n = g.shape
                if "exp_avg" not in state:
                    state.update(exp_avg=p.new_zeros(m * n), exp_avg_sq=p.new_zeros(m * n))
                t = state["step"]
                if (t - 1) % group["precondition_frequency"] == 0:
                    state["QL"], state["QR"] = (eigvecs_program(f.shape[0]).basis(L=f.double()).float()
                                                for f in (state["L"], state["R"]))
                prog = step_program("soap", m, n)
                rotated = prog.rotated(QL=state["QL"], QR=state["QR"], g=g.reshape(-1))
                state["exp_avg"].lerp_(g.reshape(-1), 1 - beta1)
                state["exp_avg_sq"].lerp_(rotated.square(), 1 - beta2)
                step = prog.step(QL=state["QL"], QR=state["QR"], M=state["exp_avg"] / (1 - beta1 ** t),
                                 v=state["exp_avg_sq"] / (1 - beta2 ** t))
                p.add_(step.reshape(m, n), alpha=-group["lr"])


OPTIMIZERS = {
    "adam": lambda params: torch.optim.Adam(params, lr=3e-3),
    "shampoo": lambda params: Shampoo(params, lr=3e-2),   # 0.1 diverges on this task
    "soap": lambda params: SOAP(params, lr=3e-3),
}


# ---- the task ------------------------------------------------------------------------------------

def mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(D_IN, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, HIDDEN),
                               torch.nn.Tanh(), torch.nn.Linear(HIDDEN, D_OUT))


def batches(steps: int, batch: int, seed: int):
    """Batches from a random teacher network y = W2 tanh(W1 x) + noise (the same for every run)."""
    g = torch.Generator().manual_seed(seed + 1)
    w1 = torch.randn(32, D_IN, generator=g) / D_IN ** 0.5
    w2 = torch.randn(D_OUT, 32, generator=g) / 32 ** 0.5
    for _ in range(steps):
        x = torch.randn(batch, D_IN, generator=g)
        yield x, torch.tanh(x @ w1.T) @ w2.T + 0.01 * torch.randn(batch, D_OUT, generator=g)


def train(name: str, steps: int, batch: int, seed: int) -> dict:
    model = mlp(seed)
    opt = OPTIMIZERS[name](model.parameters())
    losses, error = [], None
    start = time.perf_counter()
    for x, y in batches(steps, batch, seed):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        try:
            opt.step()
        except torch.linalg.LinAlgError as e:      # a diverged run's factors (inf, nan): eigh fails
            error = str(e)
            losses.append(math.nan)
            break
        losses.append(loss.item())
    window = max(1, len(losses) // 10)
    first, last = statistics.fmean(losses[:window]), statistics.fmean(losses[-window:])
    return {"losses": losses, "initial loss": first, "final loss": last, "seconds": time.perf_counter() - start,
            "decreased": math.isfinite(last) and last < first, "error": error}


def plot(results: dict, path: str) -> None:
    try:
        import matplotlib
    except ImportError:
        print(f"matplotlib is not installed: not writing {path}")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        ax.plot(r["losses"], label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (MSE)")
    ax.set_title("MLP on a teacher network: Adam vs Shampoo vs SOAP")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short run (40 steps) that checks every loss went down")
    ap.add_argument("--steps", type=int, default=None, help="training steps per optimizer (default 300)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS), help="comma-separated, of: " + ", ".join(OPTIMIZERS))
    ap.add_argument("--plot", default=None, help="save the loss curves (PNG) here (needs matplotlib)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    names = args.optimizers.split(",")
    if not set(names) <= set(OPTIMIZERS):
        ap.error(f"unknown optimizer in --optimizers {args.optimizers}; known: {', '.join(OPTIMIZERS)}")
    steps = args.steps or (40 if args.quick else 300)
    # One thread: the matrices are tiny, and on a busy 2-core machine MKL's eigh of a 64 x 64 matrix
    # took about 100 ms with two threads (waiting on each other) against 0.2 ms with one.
    torch.set_num_threads(1)

    results = {name: train(name, steps, args.batch, args.seed) for name in names}
    print(f"{'optimizer':<10} {'initial loss':>12} {'final loss':>11} {'seconds':>8}")
    for name, r in results.items():
        print(f"{name:<10} {r['initial loss']:>12.5f} {r['final loss']:>11.5f} {r['seconds']:>8.2f}"
              + (f"  stopped after {len(r['losses'])} steps: {r['error']}" if r["error"] else ""))
    if args.plot:
        plot(results, args.plot)
    if args.out:
        Path(args.out).write_text(json.dumps({"steps": steps, "batch": args.batch, "seed": args.seed,
                                              "optimizers": results}, indent=1))
    failed = [name for name, r in results.items() if not r["decreased"]]
    if failed:
        print(f"the loss did not go down with: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
