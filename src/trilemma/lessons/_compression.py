"""Lesson ``compression-bound``: a compression-based generalization bound (Arora et al. 2018).

Arora, Ge, Neyshabur & Zhang (2018), "Stronger generalization bounds for deep nets via a
compression approach": if a trained network f can be replaced by a network g that is
described by few numbers, each taking few values, and g's outputs stay close to f's on the
training set, then g generalizes with a bound that depends on the length of that
description, not on the parameter count of f (their Theorem 2.1). The description may use
a *helper string* fixed before the data are seen; here it is the seed of the
initialization, so g is coded relative to the initial weights.

The bound, for a finite class of ``2^B`` networks (Hoeffding's inequality and a union bound;
the same argument as Arora et al.'s Theorem 2.1 with explicit constants):

    L(g) ≤ L̂(g) + sqrt((B·ln 2 + ln(C/δ)) / (2m))

with probability ``≥ 1 − δ`` over the m training samples, uniformly over the ``C``
compression settings tried; ``L`` and ``L̂`` are the test and training 0-1 errors.

* **compression bound**: every layer's change from initialization, ``[ΔW | Δb]``, is
  replaced by its best rank-k approximation (truncated SVD), the two factors quantized to b
  bits per number (plus one 32-bit scale each): ``B = Σ_layers (k·(n_out + n_in + 1)·b + 64)``.
  The error budget is measured: of the settings (k, b) tried, only those whose compressed
  net g misclassifies at most ``budget`` more training samples than f are admissible, and
  the smallest bound among them is reported.
* **parameter-count bound**: the same bound for f itself with every weight and bias
  quantized to b bits (under the same error budget): ``B = b·#params + 64·#layers``. It grows
  like the square root of the parameter count.
* **spectral term**: ``R̂_γ(f) + ‖X‖_F·R_A/(γ·m)`` of Bartlett, Foster & Telgarsky (2017),
  with R_A their spectral complexity relative to the initial weights and γ the 10% quantile
  of the training margins, *without* the constants and logarithmic factors of their
  Theorem 1.1 (which only make the bound larger): beating this term beats their bound.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from trilemma.data import load_dataset
from trilemma.errors import InvalidArgumentError
from trilemma.lessons._base import Check, LessonOutput, register_lesson
from trilemma.measures import get_measure
from trilemma.models import build_model
from trilemma.training import TrainConfig, train

__all__ = ["occam_bound", "quantize", "low_rank_delta"]


def occam_bound(train_error: float, bits: float, m: int, *, settings: int = 1, delta: float = 0.05) -> float:
    """``train_error + sqrt((bits·ln 2 + ln(settings/δ)) / (2m))``: the finite-class bound.

    Args:
        train_error: Training 0-1 error of the described network.
        bits: Description length B (the class has ``2^B`` members).
        m: Number of training samples.
        settings: Number of description schemes tried (union bound).
        delta: Failure probability.

    Raises:
        InvalidArgumentError: Non-positive ``m`` / ``settings`` or ``delta`` outside (0, 1).
    """
    if m < 1 or settings < 1 or not 0 < delta < 1:
        raise InvalidArgumentError(f"need m ≥ 1, settings ≥ 1 and δ in (0, 1), got {m}, {settings}, {delta}")
    return train_error + math.sqrt((bits * math.log(2) + math.log(settings / delta)) / (2 * m))


def quantize(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Round to the ``2^(bits−1) − 1`` symmetric uniform levels per sign on ``[−max|v|, max|v|]``.

    Args:
        values: Any tensor.
        bits: Bits per number (≥ 2).

    Returns:
        The quantized tensor (the scale ``max|v|`` is stored separately, 32 bits).
    """
    if bits < 2:
        raise InvalidArgumentError(f"bits must be ≥ 2, got {bits!r}")
    scale = values.abs().max()
    if scale == 0:
        return values.clone()
    levels = 2 ** (bits - 1) - 1
    return torch.round(values / scale * levels) / levels * scale


def low_rank_delta(delta: torch.Tensor, rank: int, bits: int) -> tuple[torch.Tensor, int]:
    """Best rank-``rank`` approximation of ``delta`` with quantized factors, and its length in bits.

    Args:
        delta: ``(n_out, n_in)`` matrix.
        rank: k (clipped to ``min(n_out, n_in)``).
        bits: Bits per factor entry.

    Returns:
        ``(approximation, bits used)``; the factors are ``U·√S`` and ``V·√S``.
    """
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    k = min(rank, s.numel())
    root = s[:k].sqrt()
    left, right = quantize(u[:, :k] * root, bits), quantize(vh[:k].T * root, bits)
    return left @ right.T, (left.numel() + right.numel()) * bits + 64


def _augmented(linears: list[nn.Linear]) -> list[torch.Tensor]:
    return [torch.cat([m.weight.detach(), m.bias.detach()[:, None]], 1).clone() for m in linears]


def _load(linears: list[nn.Linear], mats: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for m, mat in zip(linears, mats):
            m.weight.copy_(mat[:, :-1])
            m.bias.copy_(mat[:, -1])


@torch.no_grad()
def _error(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) != y).double().mean())


@register_lesson(
    "compression-bound",
    title="Compression-based bounds vs spectral and parameter-count bounds",
    claim=(
        "For a width sweep of a 2-hidden-layer MLP, the compression-based bound (low-rank change from "
        "initialization, quantized, within a measured error budget) is the tightest of the three bounds at every "
        "width, and it grows far more slowly with width than the parameter-count bound."
    ),
    references=(
        "Arora, Ge, Neyshabur & Zhang (2018), Stronger generalization bounds for deep nets via a compression "
        "approach, ICML.",
        "Bartlett, Foster & Telgarsky (2017), Spectrally-normalized margin bounds for neural networks, NeurIPS.",
        "Zhou, Veitch, Austern, Adams & Orbanz (2019), Non-vacuous generalization bounds at the ImageNet scale: a "
        "PAC-Bayesian compression approach, ICLR.",
    ),
    defaults={
        "widths": (32, 64, 128, 256, 512),
        "epochs": 40,
        "batch_size": 64,
        "lr": 0.001,
        "ranks": (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64),
        "bits": (3, 4, 5, 6, 8),
        "param_bits": (2, 3, 4, 5, 6, 8, 10, 12, 16),
        "budget": 0.02,
        "delta": 0.05,
        "seed": 0,
    },
    quick={"widths": (32, 128, 512), "epochs": 25, "ranks": (1, 2, 4, 8, 16, 32), "bits": (3, 4, 6),
           "param_bits": (2, 3, 4, 6, 8)},
)
def _compute(p: dict[str, Any]) -> LessonOutput:
    widths = p["widths"]
    if len(widths) < 2 or min(widths) < 1 or list(widths) != sorted(set(widths)):
        raise InvalidArgumentError(f"widths must be at least two strictly increasing positive ints, got {widths!r}")
    if min(p["ranks"]) < 1 or min(p["bits"]) < 2 or min(p["param_bits"]) < 2 or not 0 <= p["budget"] < 1:
        raise InvalidArgumentError("ranks must be ≥ 1, bits ≥ 2 and budget in [0, 1)")
    ds = load_dataset("digits", normalize="standardize", seed=p["seed"])
    x, y, m = ds.x_train, ds.y_train, ds.num_train
    spectral = get_measure("spectral_margin_bound")
    settings_c = len(p["ranks"]) * len(p["bits"])
    settings_p = len(p["param_bits"])
    rows = []
    for width in widths:
        model = build_model("2", ds.in_features, ds.num_classes, width=width, seed=p["seed"])
        init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        linears = [mod for mod in model.modules() if isinstance(mod, nn.Linear)]
        init = _augmented(linears)
        cfg = TrainConfig(epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"], optimizer="adam",
                          eval_every=p["epochs"], seed=p["seed"])
        res = train(model, ds, cfg)
        if res.diverged:
            raise InvalidArgumentError(f"training diverged at width {width}; lower lr={p['lr']}")
        trained = _augmented(linears)
        n_params = sum(t.numel() for t in trained)
        err_f, test_f = _error(model, x, y), _error(model, ds.x_test, ds.y_test)
        allowed = err_f + p["budget"] + 1e-12
        spec = spectral(model, x, y, init_state=init_state)
        spectral_term = spec.extras["margin_loss"] + spec.value
        best_p: tuple[float, int, float] | None = None
        for b in p["param_bits"]:
            _load(linears, [quantize(t, b) for t in trained])
            e = _error(model, x, y)
            bound = occam_bound(e, b * n_params + 64 * len(linears), m, settings=settings_p, delta=p["delta"])
            if e <= allowed and (best_p is None or bound < best_p[0]):
                best_p = (bound, b, e)
        best_c: tuple[float, int, int, float, int, float] | None = None
        free_c = math.inf
        for k in p["ranks"]:
            for b in p["bits"]:
                mats, bits = [], 0
                for t0, t in zip(init, trained):
                    approx, used = low_rank_delta(t - t0, k, b)
                    mats.append(t0 + approx)
                    bits += used
                _load(linears, mats)
                e = _error(model, x, y)
                bound = occam_bound(e, bits, m, settings=settings_c, delta=p["delta"])
                free_c = min(free_c, bound)
                if e <= allowed and (best_c is None or bound < best_c[0]):
                    with torch.no_grad():
                        test_g = _error(model, ds.x_test, ds.y_test)
                    best_c = (bound, k, b, e, bits, test_g)
        _load(linears, trained)
        if best_p is None or best_c is None:
            raise InvalidArgumentError(
                f"width {width}: no {'quantization' if best_p is None else 'compression'} setting keeps the training "
                f"error within the budget {p['budget']}; allow more bits or ranks")
        rows.append({
            "width": width, "params": n_params, "train_error": err_f, "test_error": test_f,
            "compression_bound": best_c[0], "rank": best_c[1], "bits": best_c[2], "compressed_train_error": best_c[3],
            "compressed_test_error": best_c[5], "description_bits": best_c[4],
            "compression_bound_free": free_c,
            "param_count_bound": best_p[0], "param_bits": best_p[1], "quantized_train_error": best_p[2],
            "spectral_term": spectral_term, "spectral_gamma": spec.extras["gamma"],
            "spectral_complexity": spec.extras["spectral_complexity"],
        })
    table = pd.DataFrame(rows)
    comp, par, spec_t = (table[c].to_numpy() for c in ("compression_bound", "param_count_bound", "spectral_term"))
    logp = np.log(table.params.to_numpy(dtype=float))
    slope_c = float(np.polyfit(logp, np.log(comp), 1)[0])
    slope_p = float(np.polyfit(logp, np.log(par), 1)[0])
    vacuous = [int(w) for w, c in zip(table.width, comp) if c >= 1]
    checks = [
        Check(
            "the compression bound is the tightest of the three at every width",
            bool(np.all(comp < par) and np.all(comp < spec_t)),
            "; ".join(f"width {int(r.width)}: compression {r.compression_bound:.3g}, parameter count "
                      f"{r.param_count_bound:.3g}, spectral ≥ {r.spectral_term:.3g}" for r in table.itertuples()),
        ),
        Check(
            "the compression bound grows with width at most half as fast as the parameter-count bound "
            "(log-log slope against the parameter count)",
            bool(slope_c <= 0.5 * slope_p),
            f"slope {slope_c:.3f} vs {slope_p:.3f}; from width {widths[0]} to {widths[-1]} the compression bound goes "
            f"{comp[0]:.3g} → {comp[-1]:.3g} (×{comp[-1] / comp[0]:.2f}) and the parameter-count bound "
            f"{par[0]:.3g} → {par[-1]:.3g} (×{par[-1] / par[0]:.2f}) while the parameters grow "
            f"×{table.params.iloc[-1] / table.params.iloc[0]:.0f}",
        ),
    ]
    notes = [
        f"digits: m = {m} training / {ds.num_test} test samples. build_model('2', width=w) "
        f"(Linear-ReLU-Linear-ReLU-Linear, He init), Adam lr={p['lr']}, batch {p['batch_size']}, {p['epochs']} epochs.",
        f"Error budget: a compressed or quantized net is admissible when its training error is at most "
        f"{p['budget']} above the trained net's; δ = {p['delta']}; {settings_c} compression settings (ranks × bits) "
        f"and {settings_p} quantization settings enter the union bound.",
        ("Vacuous (≥ 1, no better than guessing) at widths " + ", ".join(map(str, vacuous)) + ": "
         if vacuous else "Non-vacuous at every width. ")
        + f"with m = {m} samples the description of a compressed net that stays within the error budget is longer "
        "than the data can pay for. The trained change from initialization is nearly low-rank at every width (ranks "
        "chosen: " + ", ".join(f"{int(w)}: {int(k)}" for w, k in zip(table.width, table["rank"]))
        + "), so the description grows with the length of each factor rather than with the number of parameters. "
        "The bound is on the compressed net g, whose test error is in `compressed_test_error` (Arora et al.'s "
        "bound is on g too).",
        "`compression_bound_free`: the smallest bound over all settings without the error budget (also valid, "
        "since the union bound covers every setting); it trades training error for description length.",
        "The spectral column is the data-dependent term of Bartlett et al. without their constants and log "
        "factors (R̂_γ + ‖X‖_F·R_A/(γm), reference matrices = initialization), i.e. smaller than their bound.",
    ]

    def draw(fig: Any) -> None:
        ax1, ax2 = fig.subplots(1, 2)
        fig.set_size_inches(11, 4)
        ax1.loglog(table.width, table.spectral_term, "^-", label="spectral term (no constants)")
        ax1.loglog(table.width, table.param_count_bound, "s-", label="parameter-count bound")
        ax1.loglog(table.width, table.compression_bound, "o-", label="compression bound")
        ax1.loglog(table.width, table.test_error.clip(lower=1e-3), "k.--", label="test error of f")
        ax1.axhline(1.0, color="0.5", ls=":", lw=1)
        ax1.set_xscale("log", base=2)
        ax1.set_xlabel("hidden units per layer")
        ax1.set_ylabel("bound on the test error")
        ax1.legend(fontsize=8)
        ax1.grid(alpha=0.3, which="both")
        ax2.semilogx(table.width, table["rank"], "o-", label="rank k of every layer's change")
        ax2.semilogx(table.width, table["bits"], "s-", label="bits per number")
        ax2.set_xscale("log", base=2)
        ax2.set_xlabel("hidden units per layer")
        ax2.set_title("chosen compression (within the error budget)")
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3)

    return LessonOutput(
        table=table, checks=checks, figures={"bounds": draw}, notes=notes,
        numbers={"slope_compression": slope_c, "slope_param_count": slope_p,
                 "compression_bound_largest_width": float(comp[-1]),
                 "param_count_bound_largest_width": float(par[-1])},
    )
