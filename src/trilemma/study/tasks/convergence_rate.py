"""The ``convergence_rate`` task kind: Theorem 4.3 of Chen, Huang & Wang (AutoML-Conf 2023), checked.

Theorem 4.3 (after Du et al. 2019): for a wide enough network and a small enough step ``η``,
full-batch gradient descent on the squared loss ``L = ½‖y − u‖²`` converges linearly,

    ‖y − u(k)‖² ≤ (1 − η λ_min(K⁽ᴴ⁾) / 2)^k · ‖y − u(0)‖²,

with ``K⁽ᴴ⁾`` the NNGP Gram of the output node. This kind runs exactly that on each
architecture: the network in the NTK parameterization (the theory's), no bias, one output;
``n`` unit-norm training inputs with targets ``±1`` (even/odd class; for regression data the
first output, centred); ``K`` measured at initialization as the uncentered feature Gram
``(1/m) h_H h_Hᵀ`` (the readout's share of the NTK, so ``Θ ⪰ K``); the step ``η = eta_scale /
λ_max(Θ(0))`` (small against the stability limit ``2/λ_max``) unless ``eta`` is given; ``steps``
full-batch updates. Reported per architecture: the measured per-step contraction
``(L(k)/L(0))^(1/k)``, the theorem's rate ``1 − η λ_min(K)/2``, and whether the loss stayed
under the bound at every step. At finite width the NTK moves during training, so a step can
contract less than the infinite-width argument promises; the flag says where it did.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from trilemma._schema import Column
from trilemma.study._config import SampleConfig, StudyConfig
from trilemma.study._context import TaskContext
from trilemma.study._task_api import TaskKind
from trilemma.study.tasks._common import check_datasets

__all__ = ["ConvergenceRateOptions", "ConvergenceRateTask", "gd_contraction"]

_C = "convergence"


class ConvergenceRateOptions(BaseModel):
    """Options of ``[tasks.convergence_rate]``.

    Attributes:
        n: Training inputs (a seeded subset; keep ``n <= width`` so that ``K`` can be full rank).
        steps: Full-batch gradient steps ``k``.
        eta: A fixed step for every architecture (default: ``eta_scale / λ_max(Θ(0))``).
        eta_scale: The step as a fraction of ``1/λ_max`` of the NTK at initialization.
        only, sample: Which architectures (as for the other kinds).
        dtype: ``"float64"`` (default) or ``"float32"``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    n: int = Field(32, ge=2, le=4096)
    steps: int = Field(50, ge=1, le=100_000)
    eta: float | None = Field(None, gt=0)
    eta_scale: float = Field(0.25, gt=0, lt=2)
    only: dict[str, Any] = Field(default_factory=dict)
    sample: SampleConfig | None = None
    dtype: str = Field("float64", pattern="^float(32|64)$")


def gd_contraction(losses: Sequence[float], rate: float) -> dict[str, Any]:
    """Compare a loss curve ``L(0), …, L(k)`` with the bound ``L(j) ≤ rate^j L(0)``.

    Returns:
        ``measured_rate`` ``(L(k)/L(0))^(1/k)``, ``worst_step`` (the largest ``L(j+1)/L(j)``),
        ``within_bound`` (``L(j) ≤ rate^j L(0)`` for every ``j``, to a relative 1e-9), and
        ``first_violation`` (the first step that breaks it, or ``None``).
    """
    k = len(losses) - 1
    if k < 1 or not all(math.isfinite(v) for v in losses) or losses[0] <= 0:
        return {"measured_rate": None, "worst_step": None, "within_bound": None, "first_violation": None}
    ratios = [losses[j + 1] / losses[j] for j in range(k) if losses[j] > 0]
    violation = next((j for j in range(1, k + 1) if losses[j] > rate**j * losses[0] * (1 + 1e-9)), None)
    return {"measured_rate": (losses[k] / losses[0]) ** (1.0 / k) if losses[k] > 0 else 0.0,
            "worst_step": max(ratios) if ratios else None, "within_bound": violation is None,
            "first_violation": violation}


class ConvergenceRateTask(TaskKind):
    """Full-batch GD on the squared loss against Theorem 4.3's linear rate (module docstring)."""

    name = "convergence_rate"
    priority = 6
    chunk_size = 8
    options_model = ConvergenceRateOptions

    def validate(self, config: StudyConfig, archs: Sequence[str]) -> list[str]:
        return super().validate(config, archs) + check_datasets(config)

    def columns(self, ctx: TaskContext, options: ConvergenceRateOptions) -> tuple[Column, ...]:
        src = self.name
        return (
            Column("gd_rate", "trained", label="GD contraction per step", directions={_C: False}, source=src,
                   description="measured (L(k)/L(0))^(1/k) of full-batch GD on ½‖y − u‖² (lower = faster)"),
            Column("gd_bound_rate", "theory", label="1 − ηλ_min(K)/2", directions={_C: False}, source=src,
                   description="Theorem 4.3's per-step rate with λ_min of the NNGP Gram measured at init"),
            Column("gd_within_bound", "info", "bool", label="within Theorem 4.3", source=src,
                   description="the loss stayed under (1 − ηλ_min/2)^j L(0) at every step j"),
            Column("gd_first_violation", "info", "int", source=src, description="first step above the bound"),
            Column("gd_worst_step", "info", label="worst step ratio", source=src,
                   description="the largest one-step loss ratio L(j+1)/L(j)"),
            Column("gd_lambda_min", "init", label="λ_min K (init)", directions={_C: True}, source=src,
                   description="least eigenvalue of the feature Gram (1/m) h_H h_Hᵀ at initialization"),
            Column("gd_lambda_max_ntk", "init", label="λ_max Θ (init)", source=src,
                   description="largest eigenvalue of the empirical NTK at initialization"),
            Column("gd_eta", "info", label="η", source=src, description="the gradient-descent step"),
        )

    def run(self, ctx: TaskContext, arch: str, dataset: str, seed: int, options: ConvergenceRateOptions) -> dict[str, Any]:
        import torch

        from trilemma.measures import empirical_ntk
        from trilemma.spaces import ModelRecipe
        from trilemma.study.tasks.measures import measure_batch

        dtype = getattr(torch, options.dtype)
        ds = ctx.dataset(dataset)
        x, y = measure_batch(ds, options.n, seed)
        x = x.reshape(len(x), -1).to(dtype)
        x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        if y.dim() == 1:
            target = (y % 2 == 0).to(dtype) * 2 - 1
        else:
            target = y[:, 0].to(dtype)
            target = target - target.mean()
        in_features, _ = ctx.shape(dataset)
        width = ctx.width(arch, dataset)
        model = ctx.space.build(arch, recipe=ModelRecipe(init="ntk", bias=False, batchnorm=False),
                                in_features=in_features, num_classes=1, width=width, seed=seed, dtype=dtype,
                                input_shape=(in_features,))
        params = [p for p in model.parameters() if p.requires_grad]
        with torch.no_grad():
            feats = model.features(x) if hasattr(model, "features") else None
        if feats is None:
            raise ValueError(f"the {ctx.space.name!r} model has no features() method (the output node)")
        lam_k = float(torch.linalg.eigvalsh(feats @ feats.T / feats.shape[1])[0])
        theta = empirical_ntk(model, x)
        lam_max = float(torch.linalg.eigvalsh(theta)[-1])
        eta = options.eta if options.eta is not None else options.eta_scale / lam_max
        losses = []
        for _ in range(options.steps + 1):
            loss = 0.5 * ((model(x)[:, 0] - target) ** 2).sum()
            losses.append(float(loss.detach()))
            if len(losses) > options.steps:
                break
            grads = torch.autograd.grad(loss, params, allow_unused=True)  # dead edges take no gradient
            with torch.no_grad():
                for p, g in zip(params, grads):
                    if g is not None:
                        p.sub_(eta * g)
        rate = 1.0 - eta * max(lam_k, 0.0) / 2.0
        check = gd_contraction(losses, rate)
        return {
            "gd_rate": check["measured_rate"], "gd_bound_rate": rate, "gd_within_bound": check["within_bound"],
            "gd_first_violation": check["first_violation"], "gd_worst_step": check["worst_step"],
            "gd_lambda_min": lam_k, "gd_lambda_max_ntk": lam_max, "gd_eta": eta,
            "extras": {"gd_loss": losses},
            "info": {"width": width, "n": int(len(x)), "steps": options.steps},
        }
