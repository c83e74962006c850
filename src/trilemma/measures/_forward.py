"""How measures evaluate a model: a pure-function view with detached parameters.

Every measure that runs a model goes through :func:`functional_view`, which

* puts the model in a well-defined mode and restores every module's ``training`` flag
  on exit. ``batchnorm="eval"`` (default): every module in eval mode, BatchNorm uses its
  running statistics, so each output depends only on its own input (the per-sample
  functions the NTK literature assumes). ``batchnorm="batch"``: BatchNorm layers
  normalize with the statistics of the batch (as in train mode, the way the zero-cost-proxy
  papers run their code) without updating their running statistics (``track_running_stats``
  is switched off for the call and restored); all other modules (dropout) in eval mode;
* exposes the parameters as detached tensors (optionally cast to ``dtype``) so the model's
  own weights are never touched: ``view(params, x)`` is
  :func:`torch.func.functional_call`;
* selects the *feature node* a measure looks at (see :func:`functional_view`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.func import functional_call

from trilemma.errors import InvalidArgumentError, InvalidTypeError

__all__ = ["BATCHNORM_MODES", "Feature", "FunctionalView", "functional_view", "check_batchnorm", "output_width"]

BATCHNORM_MODES: tuple[str, ...] = ("eval", "batch")

#: How to pick the tensor a measure looks at: ``"output"`` (the model output),
#: ``"auto"`` (``model.features(x)`` when the model has such a method, e.g. the DAG-MLP's
#: output node before the readout; otherwise the input of the last ``nn.Linear`` called,
#: i.e. the penultimate representation; the output if there is none), ``"penultimate"``,
#: a submodule name (its output, hooked; the last call wins) or a callable
#: ``feature(model, x) -> Tensor``.
Feature = str | Callable[[nn.Module, torch.Tensor], torch.Tensor]


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
        for name, m in model.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is None:
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
        self._captured: list[torch.Tensor] = []

    def _resolve(self) -> Feature:
        f = self.feature
        if f == "auto":
            if callable(getattr(self.m, "features", None)) and not isinstance(self.m.features, nn.Module):
                return "features"
            if any(isinstance(mod, nn.Linear) for mod in self.m.modules()):
                return "penultimate"
            return "output"
        return f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self._resolve()
        if f == "output":
            return self.m(x)
        if f == "features":
            return self.m.features(x)
        if callable(f) and not isinstance(f, str):
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
    """

    def __init__(
        self, model: nn.Module, feature: Feature, dtype: torch.dtype | None, batchnorm: str
    ) -> None:
        self.model = model
        self._select = _Select(model, feature)
        params = dict(model.named_parameters())
        buffers = dict(model.named_buffers())
        first = next(iter(params.values()), next(iter(buffers.values()), None))
        self.device = first.device if first is not None else torch.device("cpu")
        if dtype is None:
            dtype = next((p.dtype for p in params.values() if p.is_floating_point()), torch.get_default_dtype())
        self.dtype = dtype

        def cast(t: torch.Tensor) -> torch.Tensor:
            t = t.detach()
            return t.to(dtype) if t.is_floating_point() else t

        self.params = {k: cast(v) for k, v in params.items()}
        self.buffers = {k: cast(v) for k, v in buffers.items()}

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the model's device, floating inputs cast to the view's dtype."""
        x = x.to(self.device)
        return x.to(self.dtype) if x.is_floating_point() else x

    def __call__(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The selected feature of the model with parameters ``params`` on ``x``."""
        state = {f"m.{k}": v for k, v in params.items()}
        state.update({f"m.{k}": v for k, v in self.buffers.items()})
        return functional_call(self._select, state, (x,), strict=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The selected feature with the view's own (detached) parameters."""
        return self(self.params, x)

    def trainable(self, requires_grad: bool = True) -> dict[str, torch.Tensor]:
        """Fresh leaf copies of :attr:`params` with ``requires_grad`` set (for autograd)."""
        return {k: v.detach().requires_grad_(requires_grad) if v.is_floating_point() else v
                for k, v in self.params.items()}


@contextlib.contextmanager
def functional_view(
    model: nn.Module,
    *,
    feature: Feature = "output",
    dtype: torch.dtype | None = None,
    batchnorm: str = "eval",
) -> Iterator[FunctionalView]:
    """Put ``model`` in the requested mode and yield a :class:`FunctionalView` of it.

    Args:
        model: Any ``nn.Module``.
        feature: Which tensor the view returns (see :data:`Feature`).
        dtype: Floating dtype to compute in (``None``: the model's); parameters are cast
            copies, the model is untouched.
        batchnorm: ``"eval"`` or ``"batch"`` (see module docstring).

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
    flags = [(m, m.training) for m in model.modules()]
    norms = [(m, m.track_running_stats) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        model.eval()
        if batchnorm == "batch":
            # batch statistics without touching the running ones (and without the in-place
            # counter update that torch.func transforms reject)
            for m, _ in norms:
                m.train()
                m.track_running_stats = False
        yield FunctionalView(model, feature, dtype, batchnorm)
    finally:
        for m, mode in flags:
            m.training = mode
        for m, track in norms:
            m.track_running_stats = track


def output_width(model: nn.Module, x: torch.Tensor, *, feature: Feature = "output", batchnorm: str = "eval") -> int:
    """Number of features per sample of ``model``'s ``feature`` node on inputs like ``x``."""
    xb = x if batchnorm == "batch" else x[:1]
    with functional_view(model, feature=feature, batchnorm=batchnorm) as view, torch.no_grad():
        return int(view.forward(view.input(xb)).reshape(xb.shape[0], -1).shape[1])
