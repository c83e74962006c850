"""How measures evaluate a model: a pure-function view with detached parameters.

Every measure that runs a model goes through :func:`functional_view`, which

* puts the model in a well-defined mode and restores every module's ``training`` flag
  (and every BatchNorm's ``track_running_stats`` flag) on exit. Dropout and every other
  module run in eval mode; BatchNorm layers follow the ``batchnorm`` option:

  - ``"batch"`` (default): BatchNorm normalizes with the statistics of the batch, as in
    train mode — the way the reference implementations of the zero-cost proxies
    (Abdelfattah et al., ICLR 2021), NASWOT (Mellor et al., ICML 2021) and TE-NAS
    (Chen, Gong & Wang, ICLR 2021) run a freshly initialized network, whose running
    statistics (mean 0, variance 1) are meaningless. The running statistics are never
    updated (``track_running_stats`` is switched off for the call). With
    ``statistics_of=x`` the statistics of the batch ``x`` are computed once and then held
    fixed, so that every later input is an independent sample (used by the per-sample
    measures: curvature, Jacobian norms, exact linear regions along a curve);
  - ``"eval"``: the running statistics (each output depends on its own input only);
  - ``"remove"``: BatchNorm layers are the identity (zero-cost-nas's synflow convention);

* exposes the parameters as detached tensors (optionally cast to ``dtype``) so the model's
  own weights are never touched: ``view(params, x)`` is
  :func:`torch.func.functional_call`;
* selects the *feature node* a measure looks at (see :func:`functional_view`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from trilemma.errors import InvalidArgumentError, InvalidTypeError, MeasureFailedError

__all__ = [
    "BATCHNORM_MODES",
    "Feature",
    "FunctionalView",
    "check_batchnorm",
    "couples_samples",
    "functional_view",
    "output_width",
]

#: BatchNorm modes of :func:`functional_view` (see the module docstring).
BATCHNORM_MODES: tuple[str, ...] = ("batch", "eval", "remove")

#: How to pick the tensor a measure looks at: ``"output"`` (the model output),
#: ``"auto"`` (``model.features(x)`` when the model has such a method, e.g. the DAG-MLP's
#: output node before the readout; otherwise the input of the last ``nn.Linear`` called,
#: i.e. the penultimate representation; the output if there is none), ``"penultimate"``,
#: a submodule name (its output, hooked; the last call wins) or a callable
#: ``feature(model, x) -> Tensor``.
Feature = str | Callable[[nn.Module, torch.Tensor], Any]


def _batchnorms(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _BatchNorm)]


def couples_samples(model: nn.Module, batchnorm: str) -> bool:
    """Whether outputs depend on other samples of the batch (BatchNorm with batch statistics).

    Args:
        model: The model.
        batchnorm: One of :data:`BATCHNORM_MODES`.

    Returns:
        ``True`` when ``batchnorm == "batch"`` and the model has a BatchNorm layer; then
        ``f_i`` is a function of the whole batch and per-sample shortcuts do not apply.
    """
    return batchnorm == "batch" and bool(_batchnorms(model))


def check_batchnorm(model: nn.Module, batchnorm: str) -> None:
    """Validate the ``batchnorm`` option for ``model``.

    Raises:
        InvalidArgumentError: ``batchnorm`` is not one of :data:`BATCHNORM_MODES`, or it is
            ``"eval"`` while a BatchNorm layer keeps no running statistics (such a layer
            always uses batch statistics, so samples would be coupled).
    """
    if batchnorm not in BATCHNORM_MODES:
        raise InvalidArgumentError(f"batchnorm must be one of {BATCHNORM_MODES}, got {batchnorm!r}")
    if batchnorm == "eval":
        for name, m in _batchnorms(model):
            if m.running_mean is None or m.running_var is None:
                raise InvalidArgumentError(
                    f"BatchNorm layer {name!r} has track_running_stats=False, so it always uses batch "
                    "statistics; batchnorm='eval' needs running statistics, use batchnorm='batch'"
                )


class _Select(nn.Module):
    """Runs ``model`` and returns the selected feature (so functional_call can swap params)."""

    def __init__(self, model: nn.Module, feature: Feature) -> None:
        super().__init__()
        self.m = model
        self.feature = feature

    def _resolve(self) -> Feature:
        f = self.feature
        if f == "auto":
            if callable(getattr(self.m, "features", None)) and not isinstance(self.m.features, nn.Module):
                return "features"
            if any(isinstance(mod, nn.Linear) for mod in self.m.modules()):
                return "penultimate"
            return "output"
        return f

    def forward(self, x: torch.Tensor) -> Any:
        f = self._resolve()
        if f == "output":
            return self.m(x)
        if f == "features":
            return self.m.features(x)  # type: ignore[operator]
        if not isinstance(f, str):
            return f(self.m, x)
        captured: list[torch.Tensor] = []
        handles = []
        if f == "penultimate":
            for mod in self.m.modules():
                if isinstance(mod, nn.Linear):
                    handles.append(mod.register_forward_pre_hook(lambda _m, args: captured.append(args[0])))
        else:
            target = self.m.get_submodule(f)
            handles.append(target.register_forward_hook(lambda _m, _a, out: captured.append(out)))
        try:
            out = self.m(x)
        finally:
            for h in handles:
                h.remove()
        if not captured:
            return out
        return captured[-1]


class FunctionalView:
    """A model seen as a pure function ``view(params, x) -> features``.

    Attributes:
        model: The wrapped module (never modified).
        params: ``{name: tensor}`` detached (and cast) parameters, keyed as in
            ``model.named_parameters()``.
        buffers: ``{name: tensor}`` detached (and cast) buffers.
        dtype: The floating dtype of the computation.
        device: The model's device.
        batchnorm: The BatchNorm mode of the view.
    """

    def __init__(
        self, model: nn.Module, feature: Feature, dtype: torch.dtype | None, batchnorm: str
    ) -> None:
        self.model = model
        self.batchnorm = batchnorm
        self._select = _Select(model, feature)
        params = dict(model.named_parameters())
        buffers = dict(model.named_buffers())
        first = next(iter(params.values()), next(iter(buffers.values()), None))
        self.device = first.device if first is not None else torch.device("cpu")
        if dtype is None:
            dtype = next((p.dtype for p in params.values() if p.is_floating_point()), torch.get_default_dtype())
        self.dtype: torch.dtype = dtype

        def cast(t: torch.Tensor) -> torch.Tensor:
            t = t.detach()
            return t.to(dtype) if t.is_floating_point() else t

        self.params = {k: cast(v) for k, v in params.items()}
        self.buffers = {k: cast(v) for k, v in buffers.items()}

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the model's device, floating inputs cast to the view's dtype."""
        x = x.to(self.device)
        return x.to(self.dtype) if x.is_floating_point() else x

    def __call__(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> Any:
        """The selected feature of the model with parameters ``params`` on ``x``."""
        state = {f"m.{k}": v for k, v in params.items()}
        state.update({f"m.{k}": v for k, v in self.buffers.items()})
        return functional_call(self._select, state, (x,), strict=False)

    def forward(self, x: torch.Tensor) -> Any:
        """The selected feature with the view's own (detached) parameters."""
        return self(self.params, x)

    def trainable(self, requires_grad: bool = True) -> dict[str, torch.Tensor]:
        """Fresh leaf copies of :attr:`params` with ``requires_grad`` set (for autograd)."""
        return {k: v.detach().requires_grad_(requires_grad) if v.is_floating_point() else v
                for k, v in self.params.items()}


def _batch_statistics(view: FunctionalView, x: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel mean and (biased) variance of every BatchNorm input on the batch ``x``.

    Runs one forward pass with batch statistics (the view must be in ``"batch"`` mode).

    Raises:
        InvalidArgumentError: A BatchNorm layer is called more than once (its statistics
            would not be unique).
    """
    stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    calls: dict[int, int] = {}

    def hook(m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        inp = args[0].detach()
        dims = [0, *range(2, inp.ndim)]
        calls[id(m)] = calls.get(id(m), 0) + 1
        stats[id(m)] = (inp.mean(dim=dims), inp.var(dim=dims, unbiased=False))

    norms = _batchnorms(view.model)
    handles = [m.register_forward_pre_hook(hook) for _, m in norms]
    try:
        with torch.no_grad():
            view.forward(view.input(x))
    finally:
        for h in handles:
            h.remove()
    twice = [name for name, m in norms if calls.get(id(m), 0) > 1]
    if twice:
        raise InvalidArgumentError(
            f"BatchNorm layer(s) {twice} are called more than once, so the batch statistics are not unique; "
            "use batchnorm='eval' for this model"
        )
    return stats


@contextlib.contextmanager
def functional_view(
    model: nn.Module,
    *,
    feature: Feature = "output",
    dtype: torch.dtype | None = None,
    batchnorm: str = "batch",
    statistics_of: torch.Tensor | None = None,
) -> Iterator[FunctionalView]:
    """Put ``model`` in the requested mode and yield a :class:`FunctionalView` of it.

    Args:
        model: Any ``nn.Module``.
        feature: Which tensor the view returns (see :data:`Feature`).
        dtype: Floating dtype to compute in (``None``: the model's); parameters are cast
            copies, the model is untouched.
        batchnorm: One of :data:`BATCHNORM_MODES` (see the module docstring).
        statistics_of: With ``batchnorm="batch"``: a batch ``(n, *)`` whose BatchNorm
            statistics are computed once and then held fixed, so the view is a per-sample
            function (BatchNorm normalized as in train mode on that batch).

    Yields:
        The view; on exit every module's ``training`` flag is restored.

    Raises:
        InvalidTypeError: ``model`` is not a module or ``feature`` has a wrong type.
        InvalidArgumentError: Bad ``batchnorm``/``feature`` value.
    """
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not (callable(feature) or isinstance(feature, str)):
        raise InvalidTypeError(f"feature must be a string or a callable, got {type(feature).__name__}")
    if isinstance(feature, str) and feature not in ("output", "auto", "penultimate", "features"):
        try:
            model.get_submodule(feature)
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n]
            raise InvalidArgumentError(
                f"feature must be 'output', 'auto', 'penultimate', 'features' or a submodule name "
                f"({', '.join(names[:20])}{', ...' if len(names) > 20 else ''}); got {feature!r}"
            ) from None
    if feature == "features" and not callable(getattr(model, "features", None)):
        raise InvalidArgumentError(f"feature='features' needs a model with a features(x) method; "
                                   f"{type(model).__name__} has none")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InvalidArgumentError(f"dtype must be a floating torch.dtype or None, got {dtype!r}")
    check_batchnorm(model, batchnorm)
    if statistics_of is not None and not isinstance(statistics_of, torch.Tensor):
        raise InvalidTypeError(f"statistics_of must be a torch.Tensor, got {type(statistics_of).__name__}")
    flags = [(m, m.training) for m in model.modules()]
    norms = [m for _, m in _batchnorms(model)]
    tracking = [(m, m.track_running_stats) for m in norms]
    overridden: list[tuple[nn.Module, Any]] = []

    def override(m: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        overridden.append((m, m.__dict__.get("forward")))
        m.__dict__["forward"] = fn

    try:
        model.eval()
        if batchnorm == "batch":
            # batch statistics without touching the running ones (and without the in-place
            # counter update that torch.func transforms reject)
            for m in norms:
                m.train()
                m.track_running_stats = False
        view = FunctionalView(model, feature, dtype, batchnorm)
        if batchnorm == "remove":
            for m in norms:
                override(m, _identity)
        elif batchnorm == "batch" and statistics_of is not None and norms:
            if statistics_of.ndim < 1 or statistics_of.shape[0] < 2:
                raise InvalidArgumentError(
                    f"batch statistics need a batch of at least 2 inputs, got shape {tuple(statistics_of.shape)}"
                )
            try:
                stats = _batch_statistics(view, statistics_of)
            except ValueError as err:  # torch's "expected more than 1 value per channel"
                if isinstance(err, InvalidArgumentError):
                    raise
                raise MeasureFailedError(f"batch statistics could not be computed: {err}") from err
            for m in norms:
                if id(m) in stats:
                    override(m, _frozen_batchnorm(m, *stats[id(m)]))
        yield view
    finally:
        for m, previous in reversed(overridden):
            if previous is None:
                m.__dict__.pop("forward", None)
            else:
                m.__dict__["forward"] = previous
        for mod, mode in flags:
            mod.training = mode
        for norm, track in tracking:
            norm.track_running_stats = track


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _frozen_batchnorm(
    m: _BatchNorm, mean: torch.Tensor, var: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A BatchNorm forward with fixed statistics (its affine parameters read at call time)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, mean.to(x.dtype), var.to(x.dtype), m.weight, m.bias, False, 0.0, m.eps)

    return forward


def output_width(model: nn.Module, x: torch.Tensor, *, feature: Feature = "output", batchnorm: str = "batch") -> int:
    """Number of features per sample of ``model``'s ``feature`` node on inputs like ``x``."""
    xb = x if couples_samples(model, batchnorm) else x[:1]
    with functional_view(model, feature=feature, batchnorm=batchnorm) as view, torch.no_grad():
        return int(view.forward(view.input(xb)).reshape(xb.shape[0], -1).shape[1])
