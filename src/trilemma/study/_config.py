"""Study configuration: a TOML file parsed into validated, frozen pydantic models.

A study file looks like (every section but ``name`` and ``[space]`` is optional)::

    name = "nfl_digits"
    seeds = [0]                      # or: repeats = 3  (seeds 0, 1, 2)
    plugins = []                     # modules or .py files imported first (custom tasks, measures)

    [space]
    name = "dag"                     # a registered space, or "module:function" / "file.py:function"
    nodes = 3
    archs = ["2_02_002"]             # explicit subset (optional)
    [space.filter]                   # keep cells whose topology matches (optional)
    trainable = true
    P = [1, 2, 3]
    mean_depth = { min = 0.5, max = 2.0 }
    [space.sample]                   # seeded random subset (optional)
    n = 50
    seed = 0

    [model]
    width = 64                       # or: param_budget = 50000
    init = "he"                      # "he" (the papers) or "ntk"
    bias = true
    batchnorm = false

    [data]
    names = ["digits"]
    options = { normalize = "l2" }   # keyword options for trilemma.data.load_dataset

    [theory]                         # closed-form quantities (trilemma.theory)
    options = { C = 0.5 }
    [measures]                       # measures at initialization (trilemma.measures)
    names = ["ntk_lambda_min", "naswot"]
    batch_size = 32
    repeats = 1
    [measures.options.ntk_lambda_min]
    mode = "summed"
    [training]                       # ground truth (trilemma.training); other keys: TrainConfig fields
    epochs = 60
    lr = 0.2
    batched = true
    [training.metrics]               # the papers' curve metrics
    eps = 5e-3
    [tasks.probe]                    # a plug-in task kind, by its registered name
    [analysis]                       # how the report reads the results (optional)
    axes = { convergence = "epochs_to_50" }   # each axis's ground truth (the papers' by default)
    exclude_unconverged = false      # keep runs that never reached the loss plateau (flagged)

    [executor]
    kind = "local"                   # "serial", "local" (processes) or "ray"
    n_workers = 2
    address = "auto"                 # ray only: the cluster to join

Errors are collected and raised together as one :class:`~trilemma.errors.ConfigError`
whose lines name the key path in the file (``model.width: must be greater than 0, got -3``),
what is allowed and what was given.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trilemma._checks import is_real
from trilemma.errors import ConfigError
from trilemma.spaces import ModelRecipe

__all__ = [
    "StudyConfig",
    "SpaceConfig",
    "SampleConfig",
    "ModelConfig",
    "DataConfig",
    "TheoryConfig",
    "MeasuresConfig",
    "TrainingConfig",
    "AnalysisConfig",
    "ExecutorConfig",
    "load_config",
    "parse_config",
    "format_validation_error",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- sections


class SampleConfig(_Section):
    """A seeded uniform random subset of the (filtered) space.

    Attributes:
        n: Number of architectures to draw (without replacement).
        seed: Seed of the draw.
    """

    n: int = Field(gt=0)
    seed: int = 0


def _check_filter_value(value: Any) -> Any:
    """A filter value is a scalar (equality), a list (membership) or ``{min, max}`` (range)."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"min", "max"})
        if unknown or not value:
            raise ValueError(
                f"a range filter is a table with keys min and/or max, got keys {sorted(value)}"
            )
        for bound in ("min", "max"):
            b = value.get(bound)
            if b is not None and (not is_real(b)):
                raise ValueError(f"{bound} must be a number, got {b!r}")
        if "min" in value and "max" in value and value["min"] > value["max"]:
            raise ValueError(f"min ({value['min']}) must not exceed max ({value['max']})")
        return dict(value)
    if isinstance(value, list):
        if not value:
            raise ValueError("a list filter must not be empty")
        for v in value:
            if not isinstance(v, (bool, int, float, str)):
                raise ValueError(f"list filter items must be numbers, booleans or strings, got {v!r}")
        return tuple(value)
    if isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(
        "a filter value is a number/boolean/string (equality), a list (membership) "
        f"or a table {{min = .., max = ..}} (range), got {value!r}"
    )


class SpaceConfig(_Section):
    """Which architectures the study covers.

    Attributes:
        name: A registered space (``"dag"``) or a user-defined one as ``"module:function"``
            or ``"path/to/file.py:function"`` (relative to the config file). The function
            is called with ``options`` as keyword arguments and returns
            ``(archs, build_model)``; see :mod:`trilemma.study._spaces`.
        nodes: H for the ``dag`` space (default 3); other spaces take their options from ``options``.
        archs: Explicit subset (architecture names); the filter and sample then apply to it.
        filter: ``{topology column: value | [values] | {min, max}}``; columns are those of
            :meth:`trilemma.spaces.Topology.as_dict` plus ``trainable``, ``group_P``…
        sample: Seeded random subset, drawn after the filter.
        options: Keyword options for a user-defined space function.
    """

    name: str = "dag"
    nodes: int | None = Field(None, ge=1, le=8)
    archs: tuple[str, ...] | None = None
    filter: dict[str, Annotated[Any, AfterValidator(_check_filter_value)]] = Field(default_factory=dict)
    sample: SampleConfig | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("archs")
    @classmethod
    def _archs_nonempty(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None and not v:
            raise ValueError("must list at least one architecture (or be left out for the whole space)")
        if v is not None:
            dup = sorted({a for a in v if v.count(a) > 1})
            if dup:
                raise ValueError(f"lists {dup} more than once")
        return v


class ModelConfig(_Section):
    """How each architecture is instantiated.

    Attributes:
        width: Width m of every node (the papers: fixed m). Default 64 unless
            ``param_budget`` is given.
        param_budget: Exact budget matching: the width of each architecture is solved so its
            parameter count is within ``budget_tolerance`` of this (trilemma.spaces.solve_width).
        budget_tolerance: Largest relative parameter-count error under ``param_budget``.
        init: ``"he"`` (PyTorch parameterization, the papers) or ``"ntk"`` (the theory's).
        bias: Linear layers with (zero-initialized) biases.
        batchnorm: BatchNorm after every linear layer.
    """

    width: int | None = Field(None, gt=0)
    param_budget: int | None = Field(None, gt=0)
    budget_tolerance: float = Field(0.01, ge=0, lt=1)
    init: Literal["he", "ntk"] = "he"
    bias: bool = True
    batchnorm: bool = False

    @model_validator(mode="after")
    def _width_or_budget(self) -> ModelConfig:
        if self.width is not None and self.param_budget is not None:
            raise ValueError(
                f"give either width or param_budget, not both (got width={self.width}, "
                f"param_budget={self.param_budget})"
            )
        return self

    def recipe(self) -> ModelRecipe:
        """How networks are built (:class:`~trilemma.spaces.ModelRecipe`): init, bias, BatchNorm."""
        return ModelRecipe(init=self.init, bias=self.bias, batchnorm=self.batchnorm)

    @property
    def fixed_width(self) -> int | None:
        """The common width, or ``None`` when solved per architecture from the budget."""
        if self.param_budget is not None:
            return None
        return self.width if self.width is not None else 64


class DataConfig(_Section):
    """Datasets the measures and training use.

    Attributes:
        names: Registered dataset names (``trilemma.data.list_datasets()``).
        options: Keyword options passed to ``load_dataset`` for every dataset.
        per_dataset: ``{name: options}`` overriding ``options`` for one dataset.
    """

    names: tuple[str, ...] = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)
    per_dataset: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _per_dataset_known(self) -> DataConfig:
        extra = sorted(set(self.per_dataset) - set(self.names))
        if extra:
            raise ValueError(f"per_dataset has options for {extra}, which are not in names {list(self.names)}")
        return self

    def options_for(self, name: str) -> dict[str, Any]:
        """``options`` updated with ``per_dataset[name]``."""
        return {**self.options, **self.per_dataset.get(name, {})}


class TheoryConfig(_Section):
    """Closed-form quantities of each architecture (trilemma.theory).

    Attributes:
        enabled: Run the task (a present ``[theory]`` table enables it).
        options: Keyword options for ``trilemma.theory.theory_row`` (e.g. ``C = 0.5``).
    """

    enabled: bool = True
    options: dict[str, Any] = Field(default_factory=dict)


class MeasuresConfig(_Section):
    """Measures at initialization (trilemma.measures).

    Attributes:
        enabled: Run the task.
        names: Registered measure names.
        batch_size: Number of training inputs measured on (papers: 128), a seeded subset.
        repeats: Re-initializations averaged per seed (init seeds ``seed + 1_000_000·r``;
            ``r = 0`` is the initialization that training starts from).
        options: ``{measure: {option: value}}``.
        on_error: ``"fail"``: a failing measure fails the task; ``"record"``: its value is
            left empty and its error message stored as ``<name>_error``.
        sample: Measure only a seeded subset of the study's architectures (e.g. closed-form
            theory for all 15,625 NAS-Bench-201 cells, measures for 1,000 of them).
    """

    enabled: bool = True
    names: tuple[str, ...] = Field(min_length=1)
    batch_size: int = Field(128, gt=1)
    repeats: int = Field(1, ge=1, le=1000)
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    on_error: Literal["fail", "record"] = "fail"
    sample: SampleConfig | None = None

    @model_validator(mode="after")
    def _options_for_named(self) -> MeasuresConfig:
        extra = sorted(set(self.options) - set(self.names))
        if extra:
            raise ValueError(f"options given for measures not in names: {extra}; names are {list(self.names)}")
        return self


class ConvergenceConfig(_Section):
    """Options of the curve metrics (Chen, Huang & Wang, AutoML-Conf 2023, appendix A; ``trilemma.training.curve_metrics``).

    ``None`` keeps the training module's default.

    Attributes:
        eps: Tolerance on the change of the moving-mean training loss.
        window: Length of the moving mean (papers: 10).
        patience: Consecutive small changes required (papers: 10).
        min_epoch: Earliest epoch that may count as converged.
        span: Epochs after convergence averaged for the expressivity metric (papers: 10).
        accuracy_threshold: Training accuracy of the convergence-speed metric
            (``epochs_to_<threshold·100>``, papers: 0.5).
    """

    eps: float | None = Field(None, gt=0)
    window: int | None = Field(None, gt=0)
    patience: int | None = Field(None, gt=0)
    min_epoch: int | None = Field(None, ge=1)
    span: int | None = Field(None, gt=0)
    accuracy_threshold: float = Field(0.5, gt=0, le=1)

    def options(self) -> dict[str, Any]:
        """Keyword options for ``curve_metrics`` (unset ones left out)."""
        out = {k: v for k, v in self.model_dump().items() if v is not None and k != "accuracy_threshold"}
        out["threshold"] = self.accuracy_threshold
        return out


class TrainingConfig(_Section):
    """Ground-truth training (trilemma.training).

    Keys other than those below are fields of ``trilemma.training.TrainConfig`` (epochs,
    lr, batch_size, optimizer, …) and are checked against it when the study is run.

    Attributes:
        enabled: Run the task.
        batched: Train cells of one shape as one batched computation (``train_batched``).
        group_size: Most models per batched job (``"auto"``: split each group so every
            worker gets a few jobs).
        keep_curves: Store the per-epoch curves in the payload.
        sample: Train only a seeded subset of the study's architectures.
        metrics: Options of the curve metrics.
        protocol: The ``TrainConfig`` fields (collected from the other keys).
    """

    enabled: bool = True
    batched: bool = True
    group_size: Any = "auto"
    keep_curves: bool = True
    sample: SampleConfig | None = None
    metrics: ConvergenceConfig = Field(default_factory=ConvergenceConfig)
    protocol: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _collect_protocol(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        own = set(cls.model_fields)
        data = dict(data)
        protocol = dict(data.pop("protocol", {}) or {})
        for key in [k for k in data if k not in own]:
            protocol[key] = data.pop(key)
        data["protocol"] = protocol
        return data

    @field_validator("group_size")
    @classmethod
    def _group_size_positive(cls, v: Any) -> int | str:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError("must be a positive integer or 'auto'")


class AnalysisConfig(_Section):
    """How the report analyses the results (read by ``trilemma report``).

    Attributes:
        axes: ``{axis: column}`` replacing an axis's ground truth. Defaults are the papers':
            ``expressivity`` (training loss at convergence), ``epochs_to_<p>`` with ``p`` the
            training's ``accuracy_threshold`` (epochs to 50% training accuracy by default) and
            ``generalization_gap``. E.g. ``axes = { convergence = "steps_to_50" }`` for the
            sub-epoch crossing, or ``"convergence_epoch"`` for the loss plateau.
        exclude_unconverged: Leave out runs whose training loss never reached the plateau
            (default: keep them, flagged, with the last epochs' loss and gap).
    """

    axes: dict[str, str] = Field(default_factory=dict)
    exclude_unconverged: bool = False

    @field_validator("axes")
    @classmethod
    def _known_axes(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - {"expressivity", "convergence", "generalization"})
        if unknown:
            raise ValueError(f"unknown axis {unknown}; axes are expressivity, convergence, generalization")
        for axis, col in v.items():
            if not isinstance(col, str) or not col:
                raise ValueError(f"the ground truth of {axis!r} must be a column name, got {col!r}")
        return v


class ExecutorConfig(_Section):
    """Where the tasks run.

    Attributes:
        kind: A registered executor: ``"serial"`` (in the driver), ``"local"`` (worker
            processes, default), ``"ray"`` (a Ray cluster; needs ``trilemma[ray]``), or one a
            plug-in registered (:func:`trilemma.study.register_executor`).
        n_workers: Worker processes / concurrent Ray tasks (default: CPU count).
        threads_per_worker: torch threads in each worker (default: CPUs / workers).
        start_method: Process start method of the local executor.
        address: Ray cluster address (``"auto"``, ``"ray://host:10001"``; default: start a
            local Ray instance).
        max_in_flight: Jobs submitted ahead of completion per worker (Ray: only when the cluster's
            CPUs bound the workers, i.e. without ``n_workers``; with it, exactly ``n_workers`` run).
    """

    kind: str = "local"
    n_workers: int | None = Field(None, gt=0, le=4096)
    threads_per_worker: int | None = Field(None, gt=0, le=1024)
    start_method: Literal["spawn", "forkserver"] = "spawn"
    address: str | None = None
    max_in_flight: int = Field(2, gt=0, le=64)


class StudyConfig(_Section):
    """A whole study (see the module docstring for the file layout).

    Attributes:
        name: Study name (letters, digits, ``_.-``); the default store is ``runs/<name>.sqlite``.
        description: Free text shown in reports.
        store: Path of the SQLite store (default ``runs/<name>.sqlite``, relative to the
            working directory).
        seeds: Seeds; every seeded task runs once per seed.
        repeats: Shorthand for ``seeds = [0, …, repeats-1]``.
        device: Torch device for measures and training (``"cpu"``, ``"cuda"``, ``"auto"``).
        plugins: Modules (``"pkg.mod"``) or Python files (relative to the config file)
            imported in the driver and in every worker before anything runs; they may
            register task kinds, measures, datasets or spaces.
        tasks: Options of plug-in task kinds, ``{kind: {option: value}}``.
        base_dir: Directory relative paths in the config refer to (the config file's
            directory; not read from the file).
    """

    name: str
    description: str = ""
    store: str | None = None
    seeds: tuple[int, ...] | None = None
    repeats: int | None = Field(None, gt=0, le=10_000)
    device: str = "cpu"
    plugins: tuple[str, ...] = ()
    space: SpaceConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig | None = None
    theory: TheoryConfig | None = None
    measures: MeasuresConfig | None = None
    training: TrainingConfig | None = None
    tasks: dict[str, dict[str, Any]] = Field(default_factory=dict)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    base_dir: str = Field(".", exclude=True)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(
                "must start with a letter or digit and contain only letters, digits, '_', '.', '-'"
            )
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds_ok(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None:
            if not v:
                raise ValueError("must list at least one seed")
            if len(set(v)) != len(v):
                raise ValueError("must be distinct")
            if any(s < 0 for s in v):
                raise ValueError("must be non-negative")
        return v

    @field_validator("device")
    @classmethod
    def _device_ok(cls, v: str) -> str:
        if not re.match(r"^(cpu|auto|cuda(:\d+)?|mps)$", v):
            raise ValueError("must be 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'")
        return v

    # ------------------------------------------------------------------ derived
    @property
    def seed_list(self) -> tuple[int, ...]:
        """The seeds every seeded task runs with."""
        if self.seeds is not None:
            return self.seeds
        return tuple(range(self.repeats or 1))

    @property
    def datasets(self) -> tuple[str, ...]:
        return self.data.names if self.data is not None else ()

    def store_path(self) -> Path:
        """Where the store lives (``store`` or ``runs/<name>.sqlite``)."""
        return Path(self.store) if self.store else Path("runs") / f"{self.name}.sqlite"

    def resolve(self, path: str) -> Path:
        """A path from the config, relative to the config file's directory."""
        p = Path(path)
        return p if p.is_absolute() else Path(self.base_dir) / p

    def task_sections(self) -> dict[str, Any]:
        """Options of every enabled task kind: ``{kind name: options}``."""
        out: dict[str, Any] = {}
        if self.theory is not None and self.theory.enabled:
            out["theory"] = self.theory
        if self.measures is not None and self.measures.enabled:
            out["measures"] = self.measures
        if self.training is not None and self.training.enabled:
            out["train"] = self.training
        for kind, options in self.tasks.items():
            out[kind] = options
        return out

    def to_json(self) -> str:
        """Canonical JSON (sorted keys) of the whole config, ``base_dir`` included."""
        data = self.model_dump(mode="json")
        data["base_dir"] = self.base_dir
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> StudyConfig:
        """Inverse of :meth:`to_json`."""
        return cls.model_validate(json.loads(text))

    def fingerprint(self) -> str:
        """Hash of the settings that change results (executor, store, description excluded)."""
        data = self.model_dump(mode="json", exclude={"executor", "store", "description", "name", "analysis"})
        return stable_hash(data)


def stable_hash(obj: Any) -> str:
    """Short SHA-256 of the canonical JSON of ``obj``."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- errors


def _loc_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _unwrap_models(annotation: Any) -> list[type[BaseModel]]:
    """The BaseModel classes inside an annotation (through Optional/Union/containers)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) or origin is not None:
        out: list[type[BaseModel]] = []
        for arg in typing.get_args(annotation):
            out.extend(_unwrap_models(arg))
        return out
    return []


def _model_at(root: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The section model that owns the key at ``loc`` (for listing the allowed keys)."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        found = _unwrap_models(field.annotation)
        model = found[0] if found else None
    return model


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _readable(err: Mapping[str, Any], root: type[BaseModel]) -> str:
    loc = list(err.get("loc", ()))
    # drop pydantic's union-member / function tags from the location
    loc = [p for p in loc if not (isinstance(p, str) and ("[" in p or p in ("function-after", "function-before")))]
    path = _loc_path(loc)
    kind = err.get("type", "")
    value = err.get("input")
    if kind == "extra_forbidden":
        owner = _model_at(root, loc)
        allowed = sorted(n for n in owner.model_fields if not owner.model_fields[n].exclude) if owner else []
        key = str(loc[-1]) if loc else "?"
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{path}: unknown key{hint}; allowed keys: {', '.join(allowed)}"
    if kind == "missing":
        return f"{path}: required key is missing"
    msg = str(err.get("msg", "invalid value"))
    msg = re.sub(r"^(Value error|Assertion failed), ", "", msg)
    msg = re.sub(r"^Input should be", "must be", msg)
    msg = re.sub(r"^Input", "value", msg)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{path}: must be a table (a [section] or {{key = value}}), got {_short(value)}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{path}: {msg}, got {type(value).__name__} {_short(value)}"
    if kind == "too_short":
        return f"{path}: must not be empty, got {_short(value)}"
    if kind == "finite_number":
        return f"{path}: must be a finite number, got {_short(value)}"
    if kind in ("value_error", "assertion_error") and (isinstance(value, Mapping) or "got " in msg):
        return f"{path}: {msg}"
    return f"{path}: {msg}, got {_short(value)}"


def format_validation_error(
    err: ValidationError, root: type[BaseModel] | None = None, prefix: Sequence[str | int] = ()
) -> list[str]:
    """One readable line per pydantic error, each starting with the key path.

    Args:
        err: The pydantic error.
        root: The model that was validated (for listing allowed keys); default StudyConfig.
        prefix: Key path prepended to every location (for sections validated separately).

    Returns:
        Lines like ``"model.width: must be greater than 0, got -3"``.
    """
    root = root or StudyConfig
    lines = []
    for details in err.errors(include_url=False):
        e: dict[str, Any] = dict(details)
        if prefix:
            line = _readable(e, root)
            path = _loc_path(list(prefix) + list(e.get("loc", ())))
            line = path + line[line.index(":"):] if ":" in line else f"{path}: {line}"
            lines.append(line)
        else:
            lines.append(_readable(e, root))
    return lines


def config_error(source: str, lines: Sequence[str]) -> ConfigError:
    """A :class:`ConfigError` listing ``lines`` under a header naming ``source``."""
    n = len(lines)
    if n == 1:  # one problem: one line
        return ConfigError(f"invalid study config {source}: {lines[0]}")
    head = f"invalid study config {source} ({n} problems):"
    return ConfigError("\n  ".join([head, *lines]))


# --------------------------------------------------------------------------- loading


def parse_config(data: Mapping[str, Any], *, source: str = "<dict>", base_dir: str | Path = ".") -> StudyConfig:
    """Validate a config mapping (the parsed TOML).

    Args:
        data: The TOML document as a dict.
        source: Name used in error messages (the file path).
        base_dir: Directory that relative paths in the config refer to.

    Returns:
        The frozen :class:`StudyConfig`.

    Raises:
        ConfigError: Structural problems (unknown keys, wrong types or ranges), one line
            per problem, each naming its key path.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"a study config must be a table of keys, got {type(data).__name__}")
    if "base_dir" in data:
        raise config_error(source, ["base_dir: unknown key; it is set from the config file's location"])
    lines: list[str] = []
    try:
        cfg = StudyConfig.model_validate({**data, "base_dir": str(base_dir)})
    except ValidationError as err:
        lines = format_validation_error(err)
    else:
        lines = _cross_checks(cfg)
    reported = {ln.split(":", 1)[0] for ln in lines}
    lines += [ln for ln in _non_finite(data) if ln.split(":", 1)[0] not in reported]
    if lines:
        raise config_error(source, lines)
    return cfg


def _cross_checks(cfg: StudyConfig) -> list[str]:
    """Problems that involve several sections, each reported at one key path."""
    lines = []
    if cfg.seeds is not None and cfg.repeats is not None:
        lines.append(f"repeats: give either seeds or repeats, not both (seeds = {list(cfg.seeds)}, "
                     f"repeats = {cfg.repeats})")
    for section in ("measures", "training"):
        sec = getattr(cfg, section)
        if sec is not None and sec.enabled and cfg.data is None:
            lines.append(f"{section}: needs a [data] section listing the datasets (data.names = [...])")
    return lines


def _non_finite(data: Mapping[str, Any]) -> list[str]:
    """Lines for NaN/inf anywhere in the raw config (TOML allows ``nan`` and ``inf``)."""
    bad: list[str] = []

    def walk(obj: Any, path: list[str | int]) -> None:
        if isinstance(obj, float) and not math.isfinite(obj):
            bad.append(f"{_loc_path(path)}: must be a finite number, got {obj}")
        elif isinstance(obj, Mapping):
            for k, v in obj.items():
                walk(v, [*path, k])
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, [*path, i])

    walk(data, [])
    return bad


def load_config(path_or_data: str | Path | Mapping[str, Any] | StudyConfig) -> StudyConfig:
    """Read and validate a study config.

    Args:
        path_or_data: A TOML file path, an already parsed mapping, or a :class:`StudyConfig`
            (returned as is).

    Returns:
        The validated config. Names of spaces, measures, datasets and task kinds are
        checked later, when the study is planned (:func:`trilemma.study.plan_study`).

    Raises:
        ConfigError: The file is missing, is not valid TOML, or has invalid keys/values.
    """
    if isinstance(path_or_data, StudyConfig):
        return path_or_data
    if isinstance(path_or_data, Mapping):
        return parse_config(path_or_data)
    path = Path(path_or_data)
    if not path.is_file():
        raise ConfigError(f"study config {str(path)!r} does not exist (expected a .toml file)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"study config {path} is not valid TOML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"study config {path} is not UTF-8 text: {err}") from None
    return parse_config(data, source=str(path), base_dir=path.resolve().parent)
