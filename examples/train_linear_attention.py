"""Train a small causal language model on associative recall with five kinds of linear attention.

    python examples/train_linear_attention.py            # 1000 steps per kind (minutes on 2 cores)
    python examples/train_linear_attention.py --quick    # 30 steps per kind on a shorter task, seconds
    python examples/train_linear_attention.py --out results.json   # also write the per-kind results

Either mode prints each kind's loss on a held-out batch before and after training and its recall
accuracy, and exits 1 unless every kind's loss went down and gradients reached all its parameters
(the tests run --quick).

The task is multi-query associative recall (MQAR, Arora et al. 2023, "Zoology"): a sequence of P
key-value pairs  k1 v1 k2 v2 ... kP vP  followed by Q queries, each one of the P keys; at every query
the model predicts the value stored under it.  Only the query positions are scored (the keys and
values themselves are random), so chance is 1 / VALUES.  Measured (seed 0, 2 CPU cores): with the
defaults (16 pairs, 1000 steps, about 5 minutes) every kind reaches accuracy ≥ 0.99; with --pairs 32
--steps 800 retention reaches 0.84 (its fixed decays forget the first pairs), gated 0.96, the
others ≥ 0.99.

The model is embeddings -> LAYERS x [attention mixer, MLP] (pre-norm, residual) -> vocabulary.  The
mixer's Q, K, V (and gates, betas) are nn.Linear projections of the tokens, split into heads
[batch, heads, L, d_head], and the attention itself is an opdsl operator, compiled once per kind
by @opdsl.jit on the first call and applied as `operator @ V` (gradients flow through the generated
torch code to every projection):

    linear          attention(q, k, causal=true)                 φ = elu + 1, rows normalized (2020)
    retention       attention(q, k, ..., decay=γ)                RetNet: γ_h = 1 − 2^(−5−h) per head
    gated           attention(q, k, ..., gate=G)                 GLA / Mamba-2: G = logsigmoid(W x) / 16
    deltanet        delta_attention(q, k, β, normalize_keys=..)  β = sigmoid(W x)
    gated_deltanet  delta_attention(q, k, β, gate=G, ...)        both of the above

Conventions (the kinds' module docstrings, docs/families_attention_conv.md): per head the state is
S ∈ R^{d x dv} and a token reads o_t = Sᵀ q_t; retention and gated use S_t = exp(G_t) S_{t−1} + k_t v_tᵀ,
the delta rule S_t = exp(G_t)(I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

import opdsl

# ---- the operators: one @opdsl.jit function per kind -------------------------------------------
# q, k [B, H, L, d], v [B, H, L, dv], per-token gates and betas [B, H, L], decays [H].  Each compiles
# on its first call and is reused for every later call with the same shapes (f.cache_size counts).


@opdsl.jit(backend="torch")
def linear_attention(q, k, v):
    """Causal kernelized attention (Katharopoulos et al. 2020): elu + 1 features, normalized rows."""
    return opdsl.attention(q, k, causal=True) @ v


@opdsl.jit(backend="torch")
def retention(q, k, v, gamma):
    """Multi-scale retention: A_ij = q_i·k_j γ_h^(i−j) for i ≥ j, one decay per head (gamma [H])."""
    return opdsl.attention(q, k, feature="identity", normalize=False, decay=gamma) @ v


@opdsl.jit(backend="torch")
def gated_attention(q, k, v, log_gate):
    """Simple GLA: A_ij = q_i·k_j exp(G_{j+1} + ... + G_i), one log-gate per token and head."""
    return opdsl.attention(q, k, feature="identity", normalize=False, gate=log_gate) @ v


@opdsl.jit(backend="torch")
def deltanet(q, k, v, beta):
    """The delta rule with L2-normalized queries and keys (fla's use_qk_l2norm_in_kernel)."""
    return opdsl.delta_attention(q, k, beta, normalize_keys=True, normalize_queries=True) @ v


@opdsl.jit(backend="torch")
def gated_deltanet(q, k, v, beta, log_gate):
    """The gated delta rule: DeltaNet whose state also decays by exp(G_t) at every token."""
    return opdsl.delta_attention(q, k, beta, gate=log_gate, normalize_keys=True, normalize_queries=True) @ v


KINDS = {                     # name -> (operator, its per-token inputs besides q, k, v)
    "linear": (linear_attention, ()),
    "retention": (retention, ()),          # the decays are fixed, not per token
    "gated": (gated_attention, ("gate",)),
    "deltanet": (deltanet, ("beta",)),
    "gated_deltanet": (gated_deltanet, ("beta", "gate")),
}
GLA_GATE_NORMALIZER = 16      # GLA divides logsigmoid by 16 so that the gates start close to 1


# ---- the task ----------------------------------------------------------------------------------

class Recall:
    """MQAR batches: tokens [batch, L] and targets [batch, L] (−100 = not scored), L = 2 P + Q.

    Keys are tokens 0 .. keys−1 and values keys .. keys+values−1; each sequence draws P distinct keys,
    a value for each, and Q queries among its P keys."""

    IGNORE = -100

    def __init__(self, keys=32, values=32, pairs=16, queries=16):
        self.keys, self.values, self.pairs, self.queries = keys, values, pairs, queries
        self.vocab = keys + values
        self.length = 2 * pairs + queries

    def batch(self, size, generator):
        P, Q = self.pairs, self.queries
        keys = torch.rand(size, self.keys, generator=generator).argsort(-1)[:, :P]       # distinct
        vals = self.keys + torch.randint(self.values, (size, P), generator=generator)
        which = torch.randint(P, (size, Q), generator=generator)
        tokens = torch.cat([torch.stack([keys, vals], -1).reshape(size, 2 * P), keys.gather(1, which)], 1)
        targets = torch.full_like(tokens, self.IGNORE)
        targets[:, 2 * P:] = vals.gather(1, which)
        return tokens, targets


# ---- the model ---------------------------------------------------------------------------------

class Mixer(torch.nn.Module):
    """One attention layer of the given kind: x [B, L, D] -> [B, L, D]."""

    def __init__(self, kind, d_model, heads):
        super().__init__()
        self.kind, self.heads, self.d_head = kind, heads, d_model // heads
        self.op, per_token = KINDS[kind]
        self.q = torch.nn.Linear(d_model, d_model, bias=False)
        self.k = torch.nn.Linear(d_model, d_model, bias=False)
        self.v = torch.nn.Linear(d_model, d_model, bias=False)
        # one scalar per token and head
        self.per_token = torch.nn.ModuleDict({name: torch.nn.Linear(d_model, heads) for name in per_token})
        self.out = torch.nn.Linear(d_model, d_model, bias=False)
        if kind == "retention":
            self.register_buffer("gamma", 1 - 2.0 ** (-5 - torch.arange(heads, dtype=torch.float32)))

    def split(self, t):                          # [B, L, H*d] -> [B, H, L, d]
        b, L, _ = t.shape
        return t.view(b, L, self.heads, self.d_head).transpose(1, 2)

    def forward(self, x):
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        extra = []
        if self.kind in ("retention", "gated"):
            k = k / math.sqrt(self.d_head)       # RetNet and GLA scale QKᵀ by d^(−1/2); the others normalize
        if self.kind == "retention":
            extra.append(self.gamma)
        for name, proj in self.per_token.items():
            s = proj(x).transpose(1, 2)          # [B, H, L]
            extra.append(torch.sigmoid(s) if name == "beta" else F.logsigmoid(s) / GLA_GATE_NORMALIZER)
        o = self.op(q, k, v, *extra)             # [B, H, L, d]
        o = F.rms_norm(o, (self.d_head,))        # per head, as GLA and DeltaNet (RetNet: GroupNorm)
        return self.out(o.transpose(1, 2).reshape(x.shape))


class Block(torch.nn.Module):
    def __init__(self, kind, d_model, heads):
        super().__init__()
        self.norm1, self.norm2 = torch.nn.LayerNorm(d_model), torch.nn.LayerNorm(d_model)
        self.mixer = Mixer(kind, d_model, heads)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(d_model, 2 * d_model), torch.nn.GELU(),
                                       torch.nn.Linear(2 * d_model, d_model))

    def forward(self, x):
        x = x + self.mixer(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class RecallModel(torch.nn.Module):
    """tokens [B, L] -> logits [B, L, vocab].

    Each position also embeds the previous token (RWKV's token shift; fla's layers use a short
    convolution for the same purpose), so that one attention layer can store each value under its key."""

    def __init__(self, kind, vocab, d_model=64, heads=2, layers=2):
        super().__init__()
        self.embed, self.embed_prev = torch.nn.Embedding(vocab, d_model), torch.nn.Embedding(vocab, d_model)
        self.blocks = torch.nn.ModuleList(Block(kind, d_model, heads) for _ in range(layers))
        self.norm = torch.nn.LayerNorm(d_model)
        self.head = torch.nn.Linear(d_model, vocab)

    def forward(self, tokens):
        prev = self.embed_prev(tokens[:, :-1])
        x = self.embed(tokens) + F.pad(prev, (0, 0, 1, 0))       # nothing before the first token
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


# ---- training ----------------------------------------------------------------------------------

def loss_and_accuracy(model, tokens, targets):
    logits = model(tokens)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=Recall.IGNORE)
    scored = targets != Recall.IGNORE
    accuracy = (logits.argmax(-1)[scored] == targets[scored]).float().mean()
    return loss, accuracy.item()


def without_gradient(model):
    """Names of the parameters that got no (or a zero, or a non-finite) gradient."""
    return [name for name, p in model.named_parameters()
            if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.any()]


def train(kind, task, steps, batch, lr, seed):
    torch.manual_seed(seed)                       # every kind starts from the same embeddings and data
    model = RecallModel(kind, task.vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    data = torch.Generator().manual_seed(seed)
    held_out = task.batch(batch, torch.Generator().manual_seed(seed + 1))   # same batch size: same program

    with torch.no_grad():
        loss_before, acc_before = loss_and_accuracy(model, *held_out)
    times, missing = [], None
    bar = tqdm(range(steps), desc=f"{kind:>14}", leave=True, file=sys.stderr)
    for step in bar:
        tokens, targets = task.batch(batch, data)
        t = time.perf_counter()
        loss, _ = loss_and_accuracy(model, tokens, targets)
        opt.zero_grad()
        loss.backward()
        if missing is None:
            missing = without_gradient(model)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    with torch.no_grad():
        loss_after, acc_after = loss_and_accuracy(model, *held_out)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "loss_before": loss_before.item(),
        "loss_after": loss_after.item(),
        "accuracy_before": acc_before,
        "accuracy": acc_after,
        "step_ms": 1e3 * statistics.median(times[len(times) // 5:]),     # after warm-up
        "programs": KINDS[kind][0].cache_size,    # compiled once: training and evaluation share shapes
        "params_without_gradient": missing or [],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="30 steps per kind, 8 pairs")
    ap.add_argument("--steps", type=int, default=None, help="training steps per kind (default 1000)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    ap.add_argument("--pairs", type=int, default=None, help="key-value pairs per sequence (default 16; --quick 8)")
    ap.add_argument("--queries", type=int, default=None, help="queries per sequence (default: --pairs)")
    ap.add_argument("--vocab", type=int, default=None,
                    help="number of keys, and of values (default 2 x --pairs; at least --pairs)")
    ap.add_argument("--out", default=None, help="write the per-kind results to this JSON file")
    args = ap.parse_args(argv)
    steps = args.steps or (30 if args.quick else 1000)
    pairs = args.pairs or (8 if args.quick else 16)
    queries, vocab = args.queries or pairs, args.vocab or 2 * pairs
    kinds = args.kinds.split(",")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        ap.error(f"unknown kind(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    if vocab < pairs:
        ap.error(f"--vocab {vocab} < --pairs {pairs}: the keys of a sequence are distinct")
    # The tensors are tiny: a second thread costs more in hand-offs than it saves (and far more
    # when other processes share the cores).
    torch.set_num_threads(1)

    task = Recall(keys=vocab, values=vocab, pairs=pairs, queries=queries)
    results = {kind: train(kind, task, steps, args.batch, args.lr, args.seed) for kind in kinds}

    print(f"\nassociative recall: {task.pairs} pairs, {task.queries} queries, L = {task.length}, "
          f"chance accuracy {1 / task.values:.3f}, {steps} steps per kind")
    print(f"{'kind':<15} {'params':>7} {'loss before':>12} {'loss after':>11} {'accuracy':>9} {'step ms':>8}")
    for kind, r in results.items():
        print(f"{kind:<15} {r['params']:>7} {r['loss_before']:>12.4f} {r['loss_after']:>11.4f} "
              f"{r['accuracy']:>9.3f} {r['step_ms']:>8.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.out}")

    failed = [f"{kind}: the loss did not go down ({r['loss_before']:.4f} -> {r['loss_after']:.4f})"
              for kind, r in results.items() if not r["loss_after"] < r["loss_before"]]
    failed += [f"{kind}: no gradient reached {', '.join(r['params_without_gradient'])}"
               for kind, r in results.items() if r["params_without_gradient"]]
    for line in failed:
        print(f"error: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
