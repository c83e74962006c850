"""Architecture spaces as a study sees them: names, topology columns, and a model builder.

A study space turns architecture *names* (strings, the store's keys) into models. The
built-in ``"dag"`` space is the papers' DAG-cell space (:mod:`trilemma.spaces`); more are
added with :func:`register_space`, or named in a config as ``"module:function"`` /
``"file.py:function"``. Such a function is called with the ``[space.options]`` as keyword
arguments and returns ``(archs, build_model)`` or ``(archs, build_model, columns)``:

* ``archs``: the architectures, strings or objects (an object's name is its ``name``
  attribute, else ``str(obj)``; names must be unique);
* ``build_model(arch, *, in_features, num_classes, width, init, bias, batchnorm, seed,
  device)``: an ``nn.Module`` (keywords it does not accept are not passed);
* ``columns(arch) -> dict`` (optional): scalar columns for filtering and for the results
  table. Without it, objects with a ``topology.as_dict()`` (like ``CellSpec``) provide those.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from trilemma._registry import Registry
from trilemma.errors import ConfigError, InvalidSpecError, TrilemmaError
from trilemma.study._config import SpaceConfig
from trilemma.study._plugins import call_plugin, import_object, is_object_ref

__all__ = ["StudySpace", "DagSpace", "CallableSpace", "register_space", "make_space", "select_archs", "list_spaces"]

logger = logging.getLogger(__name__)


class StudySpace:
    """Base class of study spaces.

    Subclasses implement :meth:`arch_names`, :meth:`canonical`, :meth:`build_model` and
    may override :meth:`columns`, :meth:`cell_spec`, :meth:`count_params` and
    :meth:`solve_width`.
    """

    name: str = "?"

    def arch_names(self) -> list[str]:
        """Every architecture of the space, in its natural order."""
        raise NotImplementedError

    def canonical(self, arch: str) -> str:
        """The canonical name of ``arch``.

        Raises:
            InvalidSpecError: ``arch`` is not an architecture of this space.
        """
        raise NotImplementedError

    def columns(self, arch: str) -> dict[str, Any]:
        """Scalar descriptive columns (topology) of ``arch``; empty by default."""
        return {}

    def cell_spec(self, arch: str) -> Any | None:
        """The :class:`~trilemma.spaces.CellSpec` of ``arch`` if it is a DAG cell, else ``None``."""
        return None

    def build_model(self, arch: str, **kwargs: Any) -> Any:
        """An ``nn.Module`` for ``arch`` (keywords: in_features, num_classes, width, init,
        bias, batchnorm, seed, device)."""
        raise NotImplementedError

    def count_params(self, arch: str, *, width: int, in_features: int, num_classes: int, bias: bool,
                     batchnorm: bool) -> int | None:
        """Exact trainable parameter count, or ``None`` if the space cannot tell without a model."""
        return None

    def solve_width(self, arch: str, *, target: int, tolerance: float, in_features: int, num_classes: int,
                    bias: bool, batchnorm: bool) -> int:
        """Width meeting a parameter budget.

        Raises:
            ConfigError: The space does not support budgets.
        """
        raise ConfigError(f"space {self.name!r} does not support model.param_budget; give model.width")


class DagSpace(StudySpace):
    """The papers' DAG-cell space with H = ``nodes`` (:mod:`trilemma.spaces`)."""

    def __init__(self, nodes: int = 3) -> None:
        from trilemma.spaces import num_cells

        self.nodes = nodes
        self.name = "dag"
        if num_cells(nodes) > 1_000_000:
            raise ConfigError(
                f"space.nodes: H={nodes} has {num_cells(nodes)} cells, too many for a study "
                f"(limit 1,000,000); use nodes <= 4"
            )

    def arch_names(self) -> list[str]:
        from trilemma.spaces import enumerate_cells

        return [c.name for c in enumerate_cells(self.nodes)]

    def canonical(self, arch: str) -> str:
        from trilemma.spaces import CellSpec

        return CellSpec.parse(arch, nodes=self.nodes).name

    def cell_spec(self, arch: str) -> Any:
        from trilemma.spaces import CellSpec

        return CellSpec.parse(arch, nodes=self.nodes)

    def columns(self, arch: str) -> dict[str, Any]:
        spec = self.cell_spec(arch)
        topo = spec.topology
        cols: dict[str, Any] = {"index": spec.index}
        cols.update(topo.as_dict())
        cols["trainable"] = topo.trainable
        g = topo.group
        cols["group"] = None if g is None else f"P{g[0]}_d{g[1]:.4g}"
        return cols

    def build_model(self, arch: str, **kwargs: Any) -> Any:
        from trilemma.models import build_model

        return build_model(self.cell_spec(arch), **kwargs)

    def count_params(self, arch: str, *, width: int, in_features: int, num_classes: int, bias: bool,
                     batchnorm: bool) -> int:
        from trilemma.spaces import count_params

        return count_params(self.cell_spec(arch), width, in_features, num_classes, bias, batchnorm)

    def solve_width(self, arch: str, *, target: int, tolerance: float, in_features: int, num_classes: int,
                    bias: bool, batchnorm: bool) -> int:
        from trilemma.spaces import solve_width

        return solve_width(self.cell_spec(arch), target, in_features, num_classes, bias=bias,
                           batchnorm=batchnorm, tolerance=tolerance).width


def _arch_name(obj: Any) -> str:
    name = getattr(obj, "name", None)
    return name if isinstance(name, str) and name else str(obj)


def _call_accepting(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` with only the keyword arguments its signature accepts."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(*args, **kwargs)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return fn(*args, **kwargs)
    return fn(*args, **{k: v for k, v in kwargs.items() if k in params})


@dataclass
class CallableSpace(StudySpace):
    """A user-defined space from ``function(**options) -> (archs, build_model[, columns])``."""

    ref: str
    archs: dict[str, Any] = field(default_factory=dict)
    builder: Callable[..., Any] | None = None
    column_fn: Callable[[Any], Mapping[str, Any]] | None = None

    def __post_init__(self) -> None:
        self.name = self.ref

    @classmethod
    def from_function(cls, ref: str, fn: Callable[..., Any], options: Mapping[str, Any]) -> CallableSpace:
        out = call_plugin(f"space function {ref!r}", fn, **options)
        if not isinstance(out, tuple) or len(out) not in (2, 3):
            raise ConfigError(
                f"space {ref!r}: the function must return (archs, build_model) or "
                f"(archs, build_model, columns), got {type(out).__name__}"
            )
        archs_in, builder = out[0], out[1]
        column_fn = out[2] if len(out) == 3 else None
        if not callable(builder):
            raise ConfigError(f"space {ref!r}: build_model must be callable, got {type(builder).__name__}")
        archs: dict[str, Any] = {}
        for obj in archs_in:
            name = _arch_name(obj)
            if name in archs:
                raise ConfigError(f"space {ref!r}: architecture name {name!r} appears twice")
            archs[name] = obj
        if not archs:
            raise ConfigError(f"space {ref!r}: the function returned no architectures")
        return cls(ref=ref, archs=archs, builder=builder, column_fn=column_fn)

    def arch_names(self) -> list[str]:
        return list(self.archs)

    def canonical(self, arch: str) -> str:
        if arch not in self.archs:
            import difflib

            close = difflib.get_close_matches(arch, list(self.archs), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InvalidSpecError(f"{arch!r} is not an architecture of space {self.ref!r}{hint}")
        return arch

    def columns(self, arch: str) -> dict[str, Any]:
        obj = self.archs[arch]
        if self.column_fn is not None:
            return dict(call_plugin(f"columns function of space {self.ref!r}", self.column_fn, obj))
        topo = getattr(obj, "topology", None)
        if topo is not None and hasattr(topo, "as_dict"):
            return dict(topo.as_dict())
        return {}

    def cell_spec(self, arch: str) -> Any | None:
        from trilemma.spaces import CellSpec

        obj = self.archs[arch]
        return obj if isinstance(obj, CellSpec) else None

    def build_model(self, arch: str, **kwargs: Any) -> Any:
        if self.builder is None:
            raise ConfigError(f"space {self.ref!r} has no model builder")
        return call_plugin(f"build_model of space {self.ref!r}", _call_accepting, self.builder, self.archs[arch],
                           **kwargs)


_SPACES: Registry[Callable[..., StudySpace]] = Registry("study space")


def register_space(name: str, factory: Callable[..., StudySpace]) -> Callable[..., StudySpace]:
    """Register a study space factory, called as ``factory(nodes=..., **space.options)``.

    Raises:
        DuplicateNameError: ``name`` is taken.
    """
    return _SPACES.register(name, factory)


def list_spaces() -> list[str]:
    """Names of the registered study spaces."""
    return _SPACES.names()


register_space("dag", lambda nodes=3, **options: DagSpace(nodes, **options))


def make_space(cfg: SpaceConfig, base_dir: str = ".") -> StudySpace:
    """The space a config names.

    Raises:
        ConfigError: Unknown space name (the message lists the registered ones), or a
            user-defined space that cannot be imported or returns something invalid.
    """
    if is_object_ref(cfg.name):
        fn = import_object(cfg.name, base_dir)
        if not callable(fn):
            raise ConfigError(f"space.name: {cfg.name!r} is not callable")
        return CallableSpace.from_function(cfg.name, fn, cfg.options)
    try:
        factory = _SPACES.get(cfg.name)
    except TrilemmaError as err:
        raise ConfigError(f"space.name: {err}; or give a user-defined space as 'module:function'") from None
    try:
        return factory(nodes=cfg.nodes, **cfg.options)
    except TypeError as err:
        raise ConfigError(f"space.options: {err}") from None


def _matches(value: Any, want: Any) -> bool:
    if isinstance(want, Mapping):
        if value is None:
            return False
        lo, hi = want.get("min"), want.get("max")
        return (lo is None or value >= lo - 1e-12) and (hi is None or value <= hi + 1e-12)
    if isinstance(want, (tuple, list)):
        return any(_matches(value, w) for w in want)
    if isinstance(want, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return abs(value - want) <= 1e-9 * max(1.0, abs(want))
    return value == want


def select_archs(space: StudySpace, cfg: SpaceConfig) -> list[str]:
    """The architectures a study covers: explicit list or whole space, then filter, then sample.

    Returns:
        Canonical names, in the space's order (explicit lists keep their order).

    Raises:
        ConfigError: A listed architecture is invalid, a filter names an unknown column,
            or the selection is empty or smaller than the requested sample (one line per
            problem, each starting with its key path).
    """
    problems: list[str] = []
    if cfg.archs is not None:
        archs = []
        for i, a in enumerate(cfg.archs):
            try:
                archs.append(space.canonical(a))
            except (InvalidSpecError, TrilemmaError, ValueError, TypeError) as err:
                problems.append(f"space.archs[{i}]: {err}")
        dup = sorted({a for a in archs if archs.count(a) > 1})
        if dup:
            problems.append(f"space.archs: {dup} listed more than once (under different spellings)")
    else:
        archs = space.arch_names()
    if problems:
        raise ConfigError("\n".join(problems))
    if cfg.filter:
        sample_cols = space.columns(archs[0]) if archs else {}
        unknown = sorted(set(cfg.filter) - set(sample_cols))
        if unknown:
            allowed = ", ".join(sorted(sample_cols)) or "none (this space provides no columns)"
            raise ConfigError(
                "\n".join(f"space.filter.{k}: unknown column; filterable columns: {allowed}" for k in unknown)
            )
        kept = []
        for a in archs:
            cols = space.columns(a)
            if all(_matches(cols.get(k), want) for k, want in cfg.filter.items()):
                kept.append(a)
        archs = kept
    if not archs:
        raise ConfigError(f"space: the selection is empty (space {space.name!r}, filter {cfg.filter})")
    if cfg.sample is not None:
        import random

        if cfg.sample.n > len(archs):
            raise ConfigError(
                f"space.sample.n: cannot draw {cfg.sample.n} architectures from the {len(archs)} selected"
            )
        picked = set(random.Random(cfg.sample.seed).sample(range(len(archs)), cfg.sample.n))
        archs = [a for i, a in enumerate(archs) if i in picked]
    return archs
