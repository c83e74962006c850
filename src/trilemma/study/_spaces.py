"""The architecture space a study names: a registered :class:`~trilemma.spaces.ArchSpace` or a user's.

``space.name`` in a study is either a registered space (``"dag"``, ``"nb201"``, ``"ensemble"``,
or one a plug-in registered with :func:`trilemma.spaces.register_space`) built with
``[space.options]`` (and ``nodes`` for the DAG space), or a user-defined space named as
``"module:function"`` / ``"file.py:function"``. The function is called with
``[space.options]`` and returns either

* an :class:`~trilemma.spaces.ArchSpace` (the full protocol: budgets, theory, batching
  as it declares), or
* ``(archs, build_model)`` or ``(archs, build_model, columns)``, wrapped in
  :class:`CallableSpace`: ``archs`` are strings or objects (an object's name is its ``name``
  attribute, else ``str(obj)``); ``build_model(arch, *, in_features, num_classes, width,
  init, bias, batchnorm, seed, device)`` returns an ``nn.Module`` (keywords it does not accept
  are not passed); ``columns(arch) -> dict`` gives scalar descriptive columns. Such a space
  meets parameter budgets when ``build_model`` takes ``width`` (bisection on the parameter
  count of the model built on the meta device).

Every call into user code goes through :func:`~trilemma.study._plugins.call_plugin`, so its
exceptions are reported as :class:`~trilemma.errors.PluginError` naming the plug-in.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from trilemma._schema import Column
from trilemma.errors import ConfigError, InvalidSpecError, TrilemmaError
from trilemma.spaces import ArchSpace, ModelRecipe, get_space, unknown_arch_error
from trilemma.study._config import SpaceConfig
from trilemma.study._plugins import call_plugin, import_object, is_object_ref

__all__ = ["CallableSpace", "make_space", "select_archs", "BUILTIN_SPACE_PROVIDERS"]

logger = logging.getLogger(__name__)

#: Modules that register the built-in spaces (the layers that build their networks); imported
#: before a registered space is looked up.
BUILTIN_SPACE_PROVIDERS = ("trilemma.models", "trilemma.nb201")

_DTYPES = ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"))


def _dtype(value: Any) -> str:
    for typ, name in _DTYPES:
        if isinstance(value, typ):
            return name
    return "str"


def _arch_name(obj: Any) -> str:
    name = getattr(obj, "name", None)
    return name if isinstance(name, str) and name else str(obj)


def _accepted(fn: Callable[..., Any]) -> set[str] | None:
    """Keyword names ``fn`` accepts (``None``: it takes ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return set(params)


class CallableSpace(ArchSpace):
    """A user-defined space from ``function(**options) -> (archs, build_model[, columns])``.

    Args:
        ref: The ``"module:function"`` reference (the space's name).
        archs: ``{name: object}``.
        builder: ``build_model(arch_object, **keywords)``.
        column_fn: ``columns(arch_object) -> dict`` (optional).
    """

    width_knob = "width"

    def __init__(self, ref: str, archs: Mapping[str, Any], builder: Callable[..., Any],
                 column_fn: Callable[[Any], Mapping[str, Any]] | None = None) -> None:
        self.name = ref
        self.ref = ref
        self.archs = dict(archs)
        self.builder = builder
        self.column_fn = column_fn
        accepted = _accepted(builder)
        self._accepted = accepted
        caps = {"enumerable"}
        if accepted is None or "width" in accepted:
            caps.add("budget")
        self.capabilities = frozenset(caps)

    @classmethod
    def from_function(cls, ref: str, fn: Callable[..., Any], options: Mapping[str, Any]) -> ArchSpace:
        """Call the user's function and wrap what it returns.

        Raises:
            PluginError: the function raised.
            ConfigError: it returned something else than a space or ``(archs, build_model[, columns])``.
        """
        out = call_plugin(f"space function {ref!r}", fn, **options)
        if isinstance(out, ArchSpace):
            return out
        if not isinstance(out, tuple) or len(out) not in (2, 3):
            raise ConfigError(
                f"space {ref!r}: the function must return an ArchSpace, (archs, build_model) or "
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
        return cls(ref, archs, builder, column_fn)

    def names(self) -> list[str]:
        return list(self.archs)

    def canonical(self, arch: str) -> str:
        if arch not in self.archs:
            raise unknown_arch_error(self.ref, arch, list(self.archs))
        return arch

    def spec(self, arch: str) -> Any:
        return self.archs[self.canonical(arch)]

    def describe(self, arch: str) -> dict[str, Any]:
        obj = self.spec(arch)
        if self.column_fn is not None:
            return dict(call_plugin(f"columns function of space {self.ref!r}", self.column_fn, obj))
        topo = getattr(obj, "topology", None)
        if topo is not None and hasattr(topo, "as_dict"):
            return dict(topo.as_dict())
        return {}

    def describe_columns(self) -> tuple[Column, ...]:
        """Columns inferred from the first architecture's :meth:`describe` (no directions: a
        user space that wants its columns on an axis implements :class:`ArchSpace` itself)."""
        first = next(iter(self.archs))
        return tuple(Column(k, "topology", _dtype(v), source=f"space {self.ref}")
                     for k, v in self.describe(first).items())

    def build(self, arch: str, *, recipe: ModelRecipe, in_features: int, num_classes: int, width: int,
              seed: int | None = None, device: Any = None, input_shape: Sequence[int] | None = None,
              dtype: Any = None) -> Any:
        keywords = {"in_features": in_features, "num_classes": num_classes, "width": width, "init": recipe.init,
                    "bias": recipe.bias, "batchnorm": recipe.batchnorm, "seed": seed, "device": device,
                    **recipe.option_dict}
        if dtype is not None:
            keywords["dtype"] = dtype
        if self._accepted is not None:
            keywords = {k: v for k, v in keywords.items() if k in self._accepted}
        model = call_plugin(f"build_model of space {self.ref!r}", self.builder, self.spec(arch), **keywords)
        if dtype is not None and "dtype" not in keywords:
            model = model.to(dtype=dtype)
        return model


def make_space(cfg: SpaceConfig, base_dir: str = ".") -> ArchSpace:
    """The space a config names.

    Raises:
        ConfigError: Unknown space name (the message lists the registered ones), bad options,
            or a user-defined space that returns something invalid.
        PluginError: A user's space function raised.
    """
    if is_object_ref(cfg.name):
        fn = import_object(cfg.name, base_dir)
        if isinstance(fn, type) and issubclass(fn, ArchSpace):
            space: ArchSpace = call_plugin(f"space class {cfg.name!r}", fn, **cfg.options)
            return space
        if not callable(fn):
            raise ConfigError(f"space.name: {cfg.name!r} is not callable")
        return CallableSpace.from_function(cfg.name, fn, cfg.options)
    for module in BUILTIN_SPACE_PROVIDERS:
        importlib.import_module(module)
    options = dict(cfg.options)
    if cfg.nodes is not None:
        options.setdefault("nodes", cfg.nodes)
    try:
        return get_space(cfg.name, **options)
    except TrilemmaError as err:
        if isinstance(err, KeyError):
            raise ConfigError(f"space.name: {err}; or give a user-defined space as 'module:function'") from None
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


def select_archs(space: ArchSpace, cfg: SpaceConfig) -> list[str]:
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
        archs = space.names()
    if problems:
        raise ConfigError("\n".join(problems))
    if cfg.filter:
        sample_cols = space.describe(archs[0]) if archs else {}
        unknown = sorted(set(cfg.filter) - set(sample_cols))
        if unknown:
            allowed = ", ".join(sorted(sample_cols)) or "none (this space provides no columns)"
            raise ConfigError(
                "\n".join(f"space.filter.{k}: unknown column; filterable columns: {allowed}" for k in unknown)
            )
        kept = []
        for a in archs:
            cols = space.describe(a)
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
