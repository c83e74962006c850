"""The measure protocol, its result type and the measure registry.

A *measure* maps a model and a batch to one number (plus optional extras such as a
spectrum). Every registered measure is reached by name (like timm's ``create_model``)
and every call goes through one path, :meth:`RegisteredMeasure.__call__`, which

* validates the model, the batch and the labels,
* seeds the random number generators (``seed=0`` by default, so the same call gives the
  same number),
* snapshots and restores the model's mutable state (train/eval flags, ``requires_grad``
  flags, ``.grad`` tensors and buffers such as BatchNorm running statistics),
* times the call, and
* turns a non-finite value into :class:`~trilemma.errors.MeasureFailedError`
  naming the measure and the model (never a silent NaN).

Measure functions themselves therefore only compute. They should still avoid mutating
parameters: use :func:`torch.func.functional_call` with detached parameters, or
:func:`preserved_state` with ``parameters=True`` when that is impossible.

Example:
    >>> import torch
    >>> from trilemma.measures import register_measure, get_measure
    >>> @register_measure(name="doc_output_norm", axis="example")
    ... def output_norm(model, x, y=None):
    ...     '''Mean output norm.'''
    ...     return model(x).norm(dim=1).mean().item()
    >>> m = get_measure("doc_output_norm")
    >>> round(m(torch.nn.Identity(), torch.ones(2, 4)).value, 3)
    2.0
    >>> unregister_measure("doc_output_norm")
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from trilemma._registry import Registry
from trilemma.errors import (
    InvalidArgumentError,
    InvalidTypeError,
    MeasureFailedError,
    TrilemmaError,
)

__all__ = [
    "INPUT_KINDS",
    "REQUIREMENTS",
    "Measure",
    "MeasureResult",
    "RegisteredMeasure",
    "describe_model",
    "get_measure",
    "list_measures",
    "measure_all",
    "model_device",
    "preserved_state",
    "register_measure",
    "unregister_measure",
    "check_requirements",
]

logger = logging.getLogger(__name__)

#: How a measure uses its input. Every kind is fed the same ``(n, *)`` batch of inputs;
#: the kind says what is built from it, so callers (and the conformance test) know how
#: many samples are needed:
#:
#: * ``"batch"``: the batch itself (``n >= 2``).
#: * ``"circle"``: a great circle through the input space spanned by the first two
#:   inputs (or random directions); only the input shape is essential.
#: * ``"segment"``: a segment / closed polygon through the first inputs of the batch.
INPUT_KINDS: tuple[str, ...] = ("batch", "circle", "segment")

#: Model properties a measure can require (see :func:`check_requirements`):
#:
#: * ``"relu"``: every nonlinearity is an ``nn.ReLU`` module, so the network is
#:   piecewise linear and its activation pattern is visible to forward hooks.
REQUIREMENTS: tuple[str, ...] = ("relu",)

# Leaf modules that make a network non-piecewise-linear or hide its kinks from hooks.
_NOT_PIECEWISE_LINEAR: tuple[type[nn.Module], ...] = (
    nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.SELU, nn.CELU, nn.Softplus, nn.Mish,
    nn.Softmax, nn.LogSoftmax, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.Hardtanh, nn.Hardswish, nn.LeakyReLU,
    nn.PReLU, nn.MultiheadAttention, nn.LayerNorm, nn.GroupNorm, nn.RNNBase,
)


@dataclass(frozen=True)
class MeasureResult:
    """The outcome of one measure call.

    Attributes:
        value: The measure's scalar (always finite).
        seconds: Wall-clock time of the call (CUDA synchronized when the model is on a GPU).
        extras: Measure-specific side results, e.g. ``{"eigenvalues": tensor}`` or the
            jitter added to a singular kernel.
        name: The registered name of the measure that produced it.
    """

    value: float
    seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    def __float__(self) -> float:
        return self.value


@runtime_checkable
class Measure(Protocol):
    """What every measure looks like to its callers.

    Attributes:
        name: Registered name.
        needs_labels: Whether ``y`` must be given.
        input_kind: One of :data:`INPUT_KINDS`.
    """

    name: str
    needs_labels: bool
    input_kind: str

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, **options: Any
    ) -> MeasureResult:
        """Measure ``model`` on the batch ``x`` (labels ``y`` when ``needs_labels``)."""
        ...


# --------------------------------------------------------------------------- helpers


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a stateless model)."""
    for t in model.parameters():
        return t.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def describe_model(model: nn.Module) -> str:
    """Short human description of a model for error messages, e.g. ``DAGMLP(spec=2_02_002, ...)``."""
    extra = model.extra_repr() if isinstance(model, nn.Module) else ""
    return f"{type(model).__name__}({extra})" if extra else type(model).__name__


@contextlib.contextmanager
def preserved_state(model: nn.Module, *, parameters: bool = False) -> Iterator[nn.Module]:
    """Snapshot the model's mutable state and restore it on exit (also on error).

    Restored: every module's ``training`` flag, every parameter's ``requires_grad`` flag
    and ``.grad`` tensor (the same object, with its values), every buffer's value (BatchNorm running statistics,
    ``num_batches_tracked``) and, with ``parameters=True``, every parameter's value.

    Args:
        model: The module to protect.
        parameters: Also copy and restore parameter values (costs one copy of the weights;
            measures that use :func:`torch.func.functional_call` do not need it).

    Yields:
        The same model.
    """
    training = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [(p.grad, None if p.grad is None else p.grad.detach().clone()) for p in params]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    values = [p.detach().clone() for p in params] if parameters else None
    try:
        yield model
    finally:
        for m, mode in training:
            m.training = mode
        with torch.no_grad():
            for (b, saved) in buffers:
                b.copy_(saved)
            if values is not None:
                for p, v in zip(params, values):
                    p.copy_(v)
        for p, flag, (g, value) in zip(params, flags, grads):
            p.requires_grad_(flag)
            if g is not None and value is not None:
                with torch.no_grad():
                    g.copy_(value)
            p.grad = g


def check_requirements(model: nn.Module, requires: Sequence[str]) -> str | None:
    """Why ``model`` does not meet ``requires`` (``None`` when it does).

    Args:
        model: The model to check.
        requires: Names from :data:`REQUIREMENTS`.

    Returns:
        ``None`` when every requirement holds, else a sentence saying which does not.
    """
    for req in requires:
        if req == "relu":
            if not any(isinstance(m, nn.ReLU) for m in model.modules()):
                return "the model has no nn.ReLU module, so it has no visible activation pattern"
            bad = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _NOT_PIECEWISE_LINEAR)})
            if bad:
                return (
                    "the model must be piecewise linear with nn.ReLU as its only nonlinearity; "
                    f"it contains {', '.join(bad)}"
                )
    return None


def _timed_sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- registry


class RegisteredMeasure:
    """A measure function with its metadata and the shared, checked call path.

    Attributes:
        fn: The raw function ``fn(model, x, y=None, **options)`` returning a float, a
            ``(float, extras)`` pair or a :class:`MeasureResult`.
        name: Registered name.
        needs_labels: Whether ``y`` is required.
        input_kind: One of :data:`INPUT_KINDS`.
        higher_is_better: Direction of the measure for the quantity on ``axis``
            (``None`` when it has no direction, e.g. a cost).
        axis: The family or trilemma axis: ``"expressivity"``, ``"convergence"``,
            ``"generalization"``, ``"baseline"``, ``"cost"``, ``"capacity"``, ...
        requires: Model properties from :data:`REQUIREMENTS`.
        description: One line (defaults to the first docstring line of ``fn``).
        required_options: Options without which the measure cannot run (e.g. the initial
            weights of a trained network); :func:`measure_all` skips the measure when
            they are not given.
        example_options: ``example_options(model, x, y) -> dict`` building valid values
            of the required options for a freshly built model (used by the conformance
            test suite and by documentation examples).
        also: Further axes the measure speaks about, ``{axis: higher_is_better}`` (e.g. the
            NTK's least eigenvalue bounds generalization as well as convergence, Theorems
            4.5/4.6 of Chen, Huang & Wang 2023).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str,
        needs_labels: bool,
        input_kind: str,
        higher_is_better: bool | None,
        axis: str | None,
        requires: tuple[str, ...],
        description: str,
        required_options: tuple[str, ...] = (),
        example_options: Callable[..., dict[str, Any]] | None = None,
        also: Mapping[str, bool] | None = None,
    ) -> None:
        self.fn = fn
        self.also = dict(also or {})
        self.required_options = required_options
        self.example_options = example_options
        self.name = name
        self.needs_labels = needs_labels
        self.input_kind = input_kind
        self.higher_is_better = higher_is_better
        self.axis = axis
        self.requires = requires
        self.description = description
        self.__doc__ = getattr(fn, "__doc__", None)
        self._options = self._option_names(fn)

    @staticmethod
    def _option_names(fn: Callable[..., Any]) -> set[str] | None:
        """Keyword options ``fn`` accepts (``None`` if it takes ``**kwargs``)."""
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return None
        names = set()
        for i, p in enumerate(sig.parameters.values()):
            if p.kind is p.VAR_KEYWORD:
                return None
            if i < 3 and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                continue  # model, x, y
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                names.add(p.name)
        return names

    @property
    def directions(self) -> dict[str, bool]:
        """``{axis: higher_is_better}`` over the measure's axis and :attr:`also`."""
        out = dict(self.also)
        if self.axis is not None and self.higher_is_better is not None:
            out[self.axis] = bool(self.higher_is_better)
        return out

    @property
    def options(self) -> list[str]:
        """Names of the keyword options this measure accepts (empty if unknown)."""
        return sorted(self._options or ())

    def __repr__(self) -> str:
        return (
            f"RegisteredMeasure(name={self.name!r}, axis={self.axis!r}, "
            f"needs_labels={self.needs_labels}, input_kind={self.input_kind!r})"
        )

    def applicable(self, model: nn.Module) -> str | None:
        """Why this measure cannot run on ``model`` (``None`` if it can)."""
        return check_requirements(model, self.requires)

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        seed: int | None = 0,
        **options: Any,
    ) -> MeasureResult:
        """Run the measure through the checked call path (see module docstring).

        Args:
            model: Any ``nn.Module``; it is evaluated on its own device and left unchanged.
            x: Input batch ``(n, *)`` on any device (moved to the model's device).
            y: Labels ``(n,)`` class indices or ``(n, k)`` targets; required when
                :attr:`needs_labels`.
            seed: Seed of the torch random generators for the call (``None``: do not
                reseed; the global generator state is consumed).
            **options: Measure-specific keyword options (see :attr:`options`).

        Returns:
            The :class:`MeasureResult` with a finite value.

        Raises:
            InvalidTypeError: ``model`` is not an ``nn.Module`` or ``x``/``y`` not tensors.
            InvalidArgumentError: Labels missing, unknown option, or the model does not
                meet the measure's requirements.
            MeasureFailedError: The value is NaN/inf or a linear-algebra routine failed.
        """
        if not isinstance(model, nn.Module):
            raise InvalidTypeError(
                f"measure {self.name!r}: model must be a torch.nn.Module, got {type(model).__name__}"
            )
        if not isinstance(x, torch.Tensor):
            raise InvalidTypeError(f"measure {self.name!r}: x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim < 1 or x.shape[0] < 1:
            raise InvalidArgumentError(
                f"measure {self.name!r}: x must be a non-empty batch (n, *), got shape {tuple(x.shape)}"
            )
        if self.needs_labels and y is None:
            raise InvalidArgumentError(f"measure {self.name!r} needs labels y; got y=None")
        if y is not None and not isinstance(y, torch.Tensor):
            raise InvalidTypeError(f"measure {self.name!r}: y must be a torch.Tensor, got {type(y).__name__}")
        if y is not None and y.shape[0] != x.shape[0]:
            raise InvalidArgumentError(
                f"measure {self.name!r}: y must have one row per input ({x.shape[0]}), got shape {tuple(y.shape)}"
            )
        if self._options is not None:
            unknown = sorted(set(options) - self._options)
            if unknown:
                raise InvalidArgumentError(
                    f"measure {self.name!r} got unknown option(s) {unknown}; "
                    f"allowed: {sorted(self._options) or 'none'}"
                )
        missing = [o for o in self.required_options if options.get(o) is None]
        if missing:
            raise InvalidArgumentError(
                f"measure {self.name!r} needs option(s) {missing}; got {sorted(options) or 'none'}"
            )
        reason = self.applicable(model)
        if reason is not None:
            raise InvalidArgumentError(f"measure {self.name!r} cannot run on {describe_model(model)}: {reason}")
        device = model_device(model)
        x = x.to(device)
        if y is not None:
            y = y.to(device)
        devices = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []
        with preserved_state(model), torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            _timed_sync(device)
            start = time.perf_counter()
            try:
                out = self.fn(model, x, y, **options)
            except (torch.linalg.LinAlgError, MeasureFailedError) as err:
                raise MeasureFailedError(
                    f"measure {self.name!r} failed on {describe_model(model)}: {err}"
                ) from err
            _timed_sync(device)
            seconds = time.perf_counter() - start
        return self._result(out, seconds, model)

    def _result(self, out: Any, seconds: float, model: nn.Module) -> MeasureResult:
        if isinstance(out, MeasureResult):
            value, extras = out.value, dict(out.extras)
        elif isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping):
            value, extras = out[0], dict(out[1])
        else:
            value, extras = out, {}
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise MeasureFailedError(
                    f"measure {self.name!r} returned a tensor of shape {tuple(value.shape)} "
                    f"for {describe_model(model)}; a scalar is required"
                )
            value = value.item()
        try:
            value = float(value)
        except (TypeError, ValueError) as err:
            raise MeasureFailedError(
                f"measure {self.name!r} returned {type(value).__name__}, not a number, for {describe_model(model)}"
            ) from err
        if not math.isfinite(value):
            raise MeasureFailedError(
                f"measure {self.name!r} returned a non-finite value ({value}) for {describe_model(model)}"
            )
        return MeasureResult(value=value, seconds=seconds, extras=extras, name=self.name)


_REGISTRY: Registry[RegisteredMeasure] = Registry("measure")


def register_measure(
    measure_or_fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    needs_labels: bool | None = None,
    input_kind: str | None = None,
    higher_is_better: bool | None = None,
    axis: str | None = None,
    requires: Sequence[str] = (),
    description: str | None = None,
    required_options: Sequence[str] = (),
    example_options: Callable[..., dict[str, Any]] | None = None,
    also: Mapping[str, bool] | None = None,
) -> Any:
    """Register a measure; usable as ``register_measure(fn, name=...)`` or as a decorator.

    Args:
        measure_or_fn: A function ``fn(model, x, y=None, **options)`` returning a float,
            ``(float, extras)`` or a :class:`MeasureResult`, or an object following the
            :class:`Measure` protocol (its ``name``/``needs_labels``/``input_kind`` are
            used unless given here). ``None`` returns a decorator.
        name: Registry name (default: the object's ``name`` or the function's ``__name__``).
        needs_labels: Whether labels are required (default ``False``).
        input_kind: One of :data:`INPUT_KINDS` (default ``"batch"``).
        higher_is_better: Direction of the measure on its axis (``None``: none).
        axis: Family / trilemma axis the measure belongs to.
        requires: Model properties from :data:`REQUIREMENTS`.
        description: One line for listings (default: first docstring line).
        required_options: Options the measure cannot run without (a missing one raises
            :class:`~trilemma.errors.InvalidArgumentError` before the call).
        example_options: ``fn(model, x, y) -> dict`` giving valid required options for
            a freshly built model, so the conformance suite can run the measure, e.g.
            ``lambda model, x, y: {"init_state": model.state_dict()}``.
        also: Further axes the measure speaks about, ``{axis: higher_is_better}``; a study's
            result column carries :attr:`RegisteredMeasure.directions` (its axis and these).

    Returns:
        The :class:`RegisteredMeasure` (direct form) or a decorator returning it.

    Raises:
        DuplicateNameError: The name is already registered.
        InvalidArgumentError: ``input_kind`` or ``requires`` hold unknown values.
        InvalidTypeError: The object is not callable.
    """

    def wrap(obj: Callable[..., Any]) -> RegisteredMeasure:
        if not callable(obj):
            raise InvalidTypeError(f"a measure must be callable, got {type(obj).__name__}")
        reg_name = name or getattr(obj, "name", None) or getattr(obj, "__name__", None)
        if not isinstance(reg_name, str) or not reg_name:
            raise InvalidArgumentError(f"cannot infer a measure name from {obj!r}; pass name=...")
        kind = input_kind or getattr(obj, "input_kind", None) or "batch"
        if kind not in INPUT_KINDS:
            raise InvalidArgumentError(f"input_kind must be one of {INPUT_KINDS}, got {kind!r}")
        labels = needs_labels if needs_labels is not None else bool(getattr(obj, "needs_labels", False))
        reqs = tuple(requires)
        bad = [r for r in reqs if r not in REQUIREMENTS]
        if bad:
            raise InvalidArgumentError(f"requires must hold names from {REQUIREMENTS}, got {bad}")
        doc = inspect.getdoc(obj) or ""
        desc = description if description is not None else (doc.strip().splitlines() or [""])[0]
        fn = obj.fn if isinstance(obj, RegisteredMeasure) else obj
        measure = RegisteredMeasure(
            fn, name=reg_name, needs_labels=labels, input_kind=kind,
            higher_is_better=higher_is_better, axis=axis, requires=reqs, description=desc,
            required_options=tuple(required_options), example_options=example_options, also=also,
        )
        return _REGISTRY.register(reg_name, measure)

    if measure_or_fn is None:
        return wrap
    return wrap(measure_or_fn)


def unregister_measure(name: str) -> None:
    """Remove a measure from the registry (for tests and plug-ins that re-register).

    Raises:
        UnknownNameError: ``name`` is not registered.
    """
    _REGISTRY.unregister(name)


def get_measure(name: str) -> RegisteredMeasure:
    """The registered measure called ``name``.

    Raises:
        UnknownNameError: Unknown name; the message lists the valid names and the
            closest match.
    """
    return _REGISTRY.get(name)


def list_measures(
    pattern: str | None = None, *, axis: str | None = None, needs_labels: bool | None = None
) -> list[str]:
    """Sorted names of registered measures.

    Args:
        pattern: Shell-style filter on the name (``"ntk*"``).
        axis: Keep only measures of this axis/family.
        needs_labels: Keep only measures that do (``True``) / do not (``False``) need labels.

    Returns:
        Sorted list of names.
    """
    names = _REGISTRY.names(pattern)
    out = []
    for n in names:
        m = _REGISTRY.get(n)
        if axis is not None and m.axis != axis:
            continue
        if needs_labels is not None and m.needs_labels != needs_labels:
            continue
        out.append(n)
    return out


def measure_all(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    names: Sequence[str] | None = None,
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int | None = 0,
    on_error: str = "raise",
) -> dict[str, MeasureResult]:
    """Run several measures on one model and batch.

    Args:
        model: Any ``nn.Module``.
        x: Input batch ``(n, *)``.
        y: Labels (measures that need them are skipped when ``y`` is ``None`` and
            ``names`` is not given).
        names: Measures to run (default: every registered measure that can run on this
            model with the given labels and options).
        options: Per-measure keyword options, ``{name: {option: value}}``.
        seed: Seed passed to every measure.
        on_error: ``"raise"`` (default) or ``"skip"``: a measure raising a
            :class:`~trilemma.errors.TrilemmaError` is logged and left out.

    Returns:
        ``{name: MeasureResult}`` in the order run.

    Raises:
        InvalidArgumentError: Bad ``on_error``, options for measures not run, or a named
            measure needs labels that were not given.
        UnknownNameError: A name in ``names`` is not registered.
    """
    if on_error not in ("raise", "skip"):
        raise InvalidArgumentError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    options = dict(options or {})
    if names is None:
        selected = []
        for n in list_measures():
            m = _REGISTRY.get(n)
            if m.needs_labels and y is None:
                logger.debug("measure_all: skipping %s (needs labels)", n)
                continue
            reason = m.applicable(model)
            if reason is not None:
                logger.debug("measure_all: skipping %s (%s)", n, reason)
                continue
            missing = [o for o in m.required_options if o not in options.get(n, {})]
            if missing:
                logger.debug("measure_all: skipping %s (needs options %s)", n, missing)
                continue
            selected.append(n)
    else:
        selected = list(names)
        for n in selected:
            if _REGISTRY.get(n).needs_labels and y is None:
                raise InvalidArgumentError(f"measure {n!r} needs labels; pass y")
    extra = sorted(set(options) - set(selected))
    if extra:
        raise InvalidArgumentError(f"options given for measures that are not run: {extra}; running {selected}")
    results: dict[str, MeasureResult] = {}
    for n in selected:
        try:
            results[n] = _REGISTRY.get(n)(model, x, y, seed=seed, **dict(options.get(n, {})))
        except TrilemmaError as err:
            if on_error == "raise":
                raise
            logger.warning("measure %s failed on %s: %s", n, describe_model(model), err)
    return results
