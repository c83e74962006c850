"""The architecture-space protocol: what every space a study can run over provides.

An :class:`ArchSpace` turns architecture *names* (strings: the store's keys) into networks:

* ``names()`` enumerates the space (a finite space; an infinite one raises), ``sample(n,
  seed)`` draws a seeded subset, ``canonical(arch)`` parses a name (clear
  :class:`~trilemma.errors.InvalidSpecError` for a malformed one) and returns its canonical
  spelling; ``representative(arch)`` names one architecture of the class of architectures
  that compute the same function (default: ``arch`` itself), so that a task measuring the
  function can measure each class once;
* ``describe(arch)`` returns the space's own descriptive columns of one architecture (the
  DAG space: its topology P, d̄, m̄ …), declared once by ``describe_columns()`` as
  :class:`~trilemma._schema.Column` s with their directions on the three axes;
* ``build(arch, recipe=..., in_features=..., num_classes=..., width=..., seed=..., device=...)``
  returns the ``torch.nn.Module``;
* ``count_params(arch, ...)`` the exact trainable-parameter count (default: build the model
  on PyTorch's ``meta`` device, which allocates nothing, and count);
* ``solve_width(arch, target, ...)`` the width that meets a parameter budget (default:
  bisection on ``count_params`` over the space's width knob; spaces with a closed form
  override it);
* ``capabilities``: what else it offers, from :data:`CAPABILITIES`. A study checks the
  capabilities its config needs while planning and refuses a config that needs one the
  space lacks, before anything runs.

Building a network needs torch, which this layer does not import: the concrete spaces that
build (the DAG space, NAS-Bench-201) live in :mod:`trilemma.models` and register themselves
there; a user's space implements this class in its own module. Check one with
:func:`trilemma.testing.check_space`.
"""

from __future__ import annotations

import abc
import difflib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from trilemma._checks import is_int, is_real
from trilemma._registry import Registry
from trilemma._schema import Column
from trilemma.errors import BudgetError, InvalidArgumentError, InvalidSpecError

__all__ = [
    "CAPABILITIES",
    "ArchSpace",
    "ModelRecipe",
    "get_space",
    "list_spaces",
    "register_space",
    "solve_width_by_bisection",
    "unknown_arch_error",
]

logger = logging.getLogger(__name__)

#: What a space may declare beyond the protocol:
#:
#: * ``"closed_form_theory"``: :meth:`ArchSpace.theory` gives closed-form columns (the papers'
#:   Theorems 4.1/4.4/4.6 for DAG cells; the NeurIPS 2022 indicators for NAS-Bench-201);
#: * ``"batched_training"``: :meth:`ArchSpace.batch_key` groups architectures that the batched
#:   trainer trains as one computation;
#: * ``"budget"``: the space has a width knob, so parameter budgets can be met;
#: * ``"enumerable"``: :meth:`ArchSpace.names` lists the whole space.
CAPABILITIES: tuple[str, ...] = ("closed_form_theory", "batched_training", "budget", "enumerable")


@dataclass(frozen=True)
class ModelRecipe:
    """How a network is built, apart from its architecture and width.

    Attributes:
        init: ``"he"`` (PyTorch parameterization, the papers) or ``"ntk"`` (the theory's).
        bias: Layers with (zero-initialized) biases.
        batchnorm: BatchNorm after every linear layer (spaces that have it by design, like
            NAS-Bench-201, ignore this).
        options: Further space-specific build options (``{"N": 5}`` for NAS-Bench-201 …).
    """

    init: str = "he"
    bias: bool = True
    batchnorm: bool = False
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.init not in ("he", "ntk"):
            raise InvalidArgumentError(f"init must be 'he' or 'ntk', got {self.init!r}")
        for name in ("bias", "batchnorm"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgumentError(f"{name} must be a bool, got {getattr(self, name)!r}")
        object.__setattr__(self, "options", tuple(sorted(dict(self.options).items())))

    @property
    def option_dict(self) -> dict[str, Any]:
        """:attr:`options` as a dict."""
        return dict(self.options)

    def as_dict(self) -> dict[str, Any]:
        """Plain form (configs, hashes)."""
        return {"init": self.init, "bias": self.bias, "batchnorm": self.batchnorm, "options": self.option_dict}


class ArchSpace(abc.ABC):
    """An architecture space (see the module docstring for the contract).

    Attributes:
        name: The space's name (registry name, or ``"module:function"`` for a user space).
        capabilities: Subset of :data:`CAPABILITIES`.
        width_knob: What "width" means in this space (``"m"``, ``"C"`` …); ``None`` when the
            space has no width knob (then no parameter budget).
        min_width: Smallest width the space builds.
    """

    name: str = "?"
    capabilities: frozenset[str] = frozenset()
    width_knob: str | None = "width"
    min_width: int = 1

    # ------------------------------------------------------------------ names
    @abc.abstractmethod
    def names(self) -> list[str]:
        """Every architecture of the space, canonical names in the space's natural order."""

    @abc.abstractmethod
    def canonical(self, arch: str) -> str:
        """The canonical name of ``arch``.

        Raises:
            InvalidSpecError: ``arch`` is not an architecture of this space; the message says
                what is wrong and what is allowed.
        """

    def sample(self, n: int, seed: int = 0) -> list[str]:
        """``n`` architectures drawn uniformly without replacement, in the space's order.

        Raises:
            InvalidArgumentError: ``n`` is not in ``[1, size of the space]``.
        """
        names = self.names()
        if not is_int(n) or not 1 <= n <= len(names):
            raise InvalidArgumentError(f"n must be an int in [1, {len(names)}], got {n!r}")
        picked = set(random.Random(seed).sample(range(len(names)), n))
        return [a for i, a in enumerate(names) if i in picked]

    def representative(self, arch: str) -> str:
        """A fixed member of the class of architectures that compute the same function as ``arch``.

        Two architectures with the same representative build networks that differ only in
        parts the output never depends on (and in how their parameters are labelled), so a
        measure of the function may be computed once per class (the ``proxy_suite`` task kind
        does). Must be idempotent and return a canonical name. Default: ``canonical(arch)``
        (every architecture is its own class).
        """
        return self.canonical(arch)

    def spec(self, arch: str) -> Any:
        """The space's value object for ``arch`` (``CellSpec``, ``NB201Spec`` …; default: the name)."""
        return self.canonical(arch)

    # ------------------------------------------------------------------ columns
    def describe_columns(self) -> tuple[Column, ...]:
        """The descriptive columns :meth:`describe` returns, with their kinds and directions."""
        return ()

    def describe(self, arch: str) -> dict[str, Any]:
        """Scalar descriptive columns of ``arch`` (empty by default)."""
        return {}

    # ------------------------------------------------------------------ models
    @abc.abstractmethod
    def build(self, arch: str, *, recipe: ModelRecipe, in_features: int, num_classes: int, width: int,
              seed: int | None = None, device: Any = None, input_shape: Sequence[int] | None = None,
              dtype: Any = None) -> Any:
        """The ``torch.nn.Module`` of ``arch``.

        Args:
            arch: A (canonical) architecture name.
            recipe: How to build it (init, bias, BatchNorm, space options).
            in_features: Flattened input size.
            num_classes: Outputs.
            width: The value of the width knob.
            seed: Initialization seed (``None``: torch's global generator).
            device: Where to build (``"meta"`` must work for :meth:`count_params`'s default).
            input_shape: The shape of one input sample, for spaces that need more than
                ``in_features`` (images).
            dtype: Floating dtype of the parameters (``None``: float32). Drawn in this dtype,
                so float64 networks are not rounded float32 ones.
        """

    def count_params(self, arch: str, *, recipe: ModelRecipe, in_features: int, num_classes: int, width: int,
                     input_shape: Sequence[int] | None = None) -> int:
        """Exact trainable parameters (default: the model built on the ``meta`` device, counted)."""
        model = self.build(arch, recipe=recipe, in_features=in_features, num_classes=num_classes, width=width,
                           seed=None, device="meta", input_shape=input_shape)
        return int(sum(p.numel() for p in model.parameters() if p.requires_grad))

    def solve_width(self, arch: str, *, target: int, tolerance: float, recipe: ModelRecipe, in_features: int,
                    num_classes: int, input_shape: Sequence[int] | None = None) -> int:
        """The width whose parameter count is closest to ``target`` (within ``tolerance``).

        Raises:
            BudgetError: the space has no width knob, or no width meets the budget.
        """
        if self.width_knob is None or "budget" not in self.capabilities:
            raise BudgetError(f"space {self.name!r} has no width knob, so it cannot meet a parameter budget; "
                              f"give model.width instead of model.param_budget")

        def count(width: int) -> int:
            return self.count_params(arch, recipe=recipe, in_features=in_features, num_classes=num_classes,
                                     width=width, input_shape=input_shape)

        return solve_width_by_bisection(count, target, tolerance, what=f"{self.name} architecture {arch!r}",
                                        min_width=self.min_width)

    # ------------------------------------------------------------------ optional capabilities
    def theory(self, arch: str, **options: Any) -> dict[str, Any]:
        """Closed-form columns of ``arch`` (capability ``"closed_form_theory"``)."""
        raise InvalidArgumentError(f"space {self.name!r} has no closed-form theory")

    def theory_columns(self) -> tuple[Column, ...]:
        """The columns :meth:`theory` returns."""
        return ()

    def theory_options(self) -> tuple[str, ...]:
        """Options :meth:`theory` accepts (``[theory] options`` of a study)."""
        return ()

    def batch_key(self, arch: str) -> Any:
        """Architectures with the same non-``None`` key train as one batched computation
        (capability ``"batched_training"``; default ``None``: one at a time)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def solve_width_by_bisection(count: Callable[[int], int], target: int, tolerance: float, *, what: str = "model",
                             min_width: int = 1, max_width: int = 1 << 24) -> int:
    """The width whose ``count(width)`` is closest to ``target``, for an increasing ``count``.

    Bisection on integer widths (``count`` need not have a closed form: a model built on the
    meta device and counted works), then the better of the two widths around the target.

    Raises:
        InvalidArgumentError: a bad ``target`` or ``tolerance``.
        BudgetError: the closest width is further than ``tolerance`` from the target.
    """
    if not is_int(target) or target < 1:
        raise InvalidArgumentError(f"target must be a positive int, got {target!r}")
    if not is_real(tolerance) or not 0 <= tolerance < 1:
        raise InvalidArgumentError(f"tolerance must be a number in [0, 1), got {tolerance!r}")
    lo, hi = min_width, min_width
    while count(hi) < target and hi < max_width:
        lo, hi = hi, min(max_width, hi * 2)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count(mid) < target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda w: (abs(count(w) - target), w))
    err = abs(count(best) - target) / target
    if err > tolerance:
        raise BudgetError(
            f"no width of {what} meets {target:,} parameters within {tolerance:.2%}: width {lo} gives "
            f"{count(lo):,}, width {hi} gives {count(hi):,} (closest: {err:.2%} off); raise the tolerance or the budget"
        )
    return best


_SPACES: Registry[Callable[..., ArchSpace]] = Registry("architecture space")


def register_space(name: str, factory: Callable[..., ArchSpace]) -> Callable[..., ArchSpace]:
    """Register a space factory ``factory(**options) -> ArchSpace`` under ``name``.

    The built-in spaces (``"dag"``, ``"nb201"``, ``"ensemble"``) are registered by
    :mod:`trilemma.models`, the layer that builds their networks.

    Raises:
        DuplicateNameError: ``name`` is taken.
    """
    return _SPACES.register(name, factory)


def get_space(name: str, **options: Any) -> ArchSpace:
    """The space ``name`` built with ``options``.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the registered ones).
        InvalidArgumentError: the factory rejects an option.
    """
    factory = _SPACES.get(name)
    try:
        return factory(**options)
    except TypeError as err:
        import inspect

        try:
            allowed = [p for p in inspect.signature(factory).parameters if p not in ("self", "args", "kwargs")]
        except (TypeError, ValueError):
            allowed = []
        close = ""
        for opt in options:
            hint = difflib.get_close_matches(opt, allowed, n=1)
            if opt not in allowed and hint:
                close = f" (did you mean {hint[0]!r} for {opt!r}?)"
        raise InvalidArgumentError(
            f"space {name!r} does not accept the options {sorted(options)}{close}: {err}; "
            f"its options: {', '.join(allowed) or 'none'}"
        ) from None


def list_spaces() -> list[str]:
    """Names of the registered spaces."""
    return _SPACES.names()


def unknown_arch_error(space: str, arch: object, valid: Sequence[str]) -> InvalidSpecError:
    """The error for a name that is not in ``valid``, with the closest valid name."""
    close = difflib.get_close_matches(str(arch), list(valid), n=1) if len(valid) <= 100_000 else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return InvalidSpecError(f"{arch!r} is not an architecture of space {space!r}{hint}")
