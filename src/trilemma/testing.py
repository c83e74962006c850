"""Public conformance checks for plug-in authors (in the spirit of scikit-learn's ``check_estimator``).

A plug-in that implements one of trilemma's extension points runs the matching check in its
own test suite, and learns the contract by running it; trilemma's tests run the same checks
on everything it registers.

* :func:`check_measure` — a registered measure (or any :class:`~trilemma.measures.Measure`)
  on a set of small reference models (:func:`reference_models`);
* :func:`check_space` — an :class:`~trilemma.spaces.ArchSpace`;
* :func:`check_task_kind` — a study task kind on a small config;
* :func:`check_executor` — a registered executor, with the torch-free probe task.

Example:
    >>> from trilemma.testing import check_measure
    >>> outcomes = check_measure("num_params", models=["dagmlp"])
    >>> [(o.model, o.status) for o in outcomes]
    [('dagmlp', 'passed')]
"""

from __future__ import annotations

import copy
import json
import math
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trilemma._checks import is_int
from trilemma.errors import (
    ConformanceError,
    InvalidArgumentError,
    InvalidTypeError,
    MeasureFailedError,
    TrilemmaError,
    UnknownNameError,
)
from trilemma.measures import INPUT_KINDS, MeasureResult, RegisteredMeasure, get_measure

__all__ = [
    "CheckOutcome",
    "ConformanceError",
    "ReferenceModel",
    "check_executor",
    "check_measure",
    "check_space",
    "check_task_kind",
    "reference_models",
]


@dataclass(frozen=True)
class ReferenceModel:
    """A small model the conformance checks run measures on.

    Attributes:
        name: Short identifier.
        build: ``build() -> nn.Module``, a fresh model each call.
        input_shape: Shape of one input (without the batch dimension).
        num_classes: Number of outputs (class labels are drawn in ``0..num_classes-1``).
        connected: ``False`` when the output does not depend on the input; a measure may
            then raise :class:`~trilemma.errors.MeasureFailedError` (never another error).
    """

    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    num_classes: int = 3
    connected: bool = True


#: A NAS-Bench-201 cell whose output node has no incoming edge (the output ignores the input).
DISCONNECTED_NB201 = "|avg_pool_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|"


def _dagmlp() -> nn.Module:
    from trilemma.models import build_model

    return build_model("2_12_121", in_features=10, num_classes=3, width=12, seed=0)


def _dagmlp_bn() -> nn.Module:
    from trilemma.models import build_model

    return build_model("2_02_002", in_features=10, num_classes=3, width=12, batchnorm=True, init="ntk", seed=1)


def _cnn_bn() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        return nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.Conv2d(4, 12, 3, stride=2, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 3),
        )


def _nb201(arch: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from trilemma.models import build_nb201

        return build_nb201(arch, C=2, N=1, num_classes=3, seed=3)

    return build


def reference_models() -> dict[str, ReferenceModel]:
    """The models :func:`check_measure` uses by default, by name.

    ``dagmlp`` (the papers' DAG-MLP), ``dagmlp_bn`` (with BatchNorm1d), ``cnn_bn`` (conv +
    BatchNorm2d), ``nb201`` (a NAS-Bench-201 network, C = 2, N = 1) and
    ``nb201_disconnected`` (the same with :data:`DISCONNECTED_NB201`, whose output does not
    depend on its input).
    """
    models = [
        ReferenceModel("dagmlp", _dagmlp, (10,)),
        ReferenceModel("dagmlp_bn", _dagmlp_bn, (10,)),
        ReferenceModel("cnn_bn", _cnn_bn, (2, 6, 6)),
        ReferenceModel("nb201", _nb201("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+"
                                       "|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"), (3, 4, 4)),
        ReferenceModel("nb201_disconnected", _nb201(DISCONNECTED_NB201), (3, 4, 4), connected=False),
    ]
    return {m.name: m for m in models}


@dataclass(frozen=True)
class CheckOutcome:
    """What :func:`check_measure` found on one reference model.

    Attributes:
        model: The reference model's name.
        status: ``"passed"``, ``"skipped"`` (the measure does not apply to the model) or
            ``"failed_as_allowed"`` (a disconnected model; the measure raised
            :class:`~trilemma.errors.MeasureFailedError`).
        detail: The skip reason or the error message; empty when passed.
    """

    model: str
    status: str
    detail: str = ""


# --------------------------------------------------------------------------- helpers


def _prepare(model: nn.Module) -> nn.Module:
    """Put the model in a state every part of which a careless measure could change."""
    model.train()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if not isinstance(m, nn.modules.batchnorm._BatchNorm):
                continue
            if m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            if m.running_var is not None:
                m.running_var.copy_(1 + torch.rand(m.running_var.shape, generator=g))
            if m.num_batches_tracked is not None:
                m.num_batches_tracked.fill_(7)
    params = list(model.parameters())
    if params:
        params[0].requires_grad_(False)
        params[-1].grad = torch.full_like(params[-1], 0.5)
    return model


def _hook_counts(m: nn.Module) -> tuple[int, ...]:
    return tuple(len(getattr(m, attr, {})) for attr in (
        "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))


def _snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()],
        "grad_ids": [id(p.grad) for p in model.parameters()],
        "tracking": [getattr(m, "track_running_stats", None) for m in model.modules()],
        "attributes": [sorted(m.__dict__) for m in model.modules()],
        "hooks": [_hook_counts(m) for m in model.modules()],
    }


def _fail(measure: str, model: str, what: str) -> ConformanceError:
    return ConformanceError(f"measure {measure!r} on reference model {model!r}: {what}")


def _assert_unchanged(before: dict[str, Any], model: nn.Module, measure: str, name: str) -> None:
    after = _snapshot(model)
    for key, value in before["state"].items():
        other = after["state"].get(key)
        if other is None or not torch.equal(value, other):
            raise _fail(measure, name, f"changed the model's {key!r} (parameter or buffer)")
    labels = {"training": "train/eval flags", "requires_grad": "requires_grad flags", "grad_ids": ".grad tensors",
              "tracking": "track_running_stats flags", "attributes": "module attributes", "hooks": "hooks"}
    for key, label in labels.items():
        if before[key] != after[key]:
            raise _fail(measure, name, f"changed the model's {label}")
    for g0, g1 in zip(before["grads"], after["grads"]):
        if not ((g0 is None and g1 is None) or (g0 is not None and g1 is not None and torch.equal(g0, g1))):
            raise _fail(measure, name, "changed a .grad tensor's values")


def _batch(ref: ReferenceModel, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(n, *ref.input_shape, generator=g)
    y = torch.arange(n) % ref.num_classes
    return x, y.to(device)


def _resolve(measure_or_name: str | RegisteredMeasure) -> RegisteredMeasure:
    if isinstance(measure_or_name, str):
        return get_measure(measure_or_name)
    if isinstance(measure_or_name, RegisteredMeasure):
        return measure_or_name
    raise InvalidTypeError(
        f"check_measure needs a registered measure or its name, got {type(measure_or_name).__name__}"
    )


def _check_metadata(m: RegisteredMeasure) -> None:
    if not isinstance(m.name, str) or not m.name:
        raise ConformanceError(f"measure {m!r} has no name")
    if not isinstance(m.needs_labels, bool):
        raise ConformanceError(f"measure {m.name!r}: needs_labels must be a bool, got {m.needs_labels!r}")
    if m.input_kind not in INPUT_KINDS:
        raise ConformanceError(f"measure {m.name!r}: input_kind {m.input_kind!r} is not one of {INPUT_KINDS}")
    if not m.description:
        raise ConformanceError(f"measure {m.name!r} has no description (first docstring line)")
    if not m.__doc__:
        raise ConformanceError(f"measure {m.name!r} has no docstring (cite the paper it comes from)")


def _call(
    m: RegisteredMeasure, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, options: dict[str, Any],
    name: str,
) -> MeasureResult:
    try:
        res = m(model, x, y, seed=0, **options)
    except TrilemmaError:
        raise
    except Exception as err:
        raise _fail(m.name, name, f"raised {type(err).__name__} instead of a trilemma error: {err}\n"
                    + "".join(traceback.format_exception(err))[-2000:]) from err
    if not isinstance(res, MeasureResult):
        raise _fail(m.name, name, f"returned {type(res).__name__}, not a MeasureResult")
    if not math.isfinite(res.value):
        raise _fail(m.name, name, f"returned a non-finite value {res.value}")
    if res.name != m.name or not res.seconds >= 0 or not isinstance(res.extras, dict):
        raise _fail(m.name, name, "returned a MeasureResult with a wrong name, negative time or non-dict extras")
    return res


def _check_nan_weights(
    m: RegisteredMeasure, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, options: dict[str, Any],
    name: str,
) -> None:
    """A NaN weight gives a finite value or a trilemma error, never a NaN or a raw exception."""
    broken = copy.deepcopy(model)
    weights = [p for p in broken.parameters() if p.is_floating_point() and p.ndim >= 2]
    if not weights:
        return
    with torch.no_grad():
        weights[-1].view(-1)[0] = float("nan")
    try:
        res = m(broken, x, y, seed=0, **options)
    except TrilemmaError:
        return
    except Exception as err:
        raise _fail(m.name, name, f"with a NaN weight raised {type(err).__name__} instead of "
                                  f"MeasureFailedError: {err}") from err
    if not math.isfinite(res.value):
        raise _fail(m.name, name, f"with a NaN weight returned {res.value}")


# --------------------------------------------------------------------------- check_measure


def check_measure(
    measure_or_name: str | RegisteredMeasure,
    *,
    models: Sequence[str | ReferenceModel] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    compare_with_cpu: bool = True,
) -> list[CheckOutcome]:
    """Run the measure contract on small reference models; raise on the first violation.

    For each model (after :func:`reference_models`' state preparation: train mode, non-trivial
    BatchNorm running statistics, a frozen parameter and a set ``.grad``), the checks are:

    * the metadata is complete (name, ``needs_labels``, ``input_kind``, description, docstring);
    * a call returns a :class:`~trilemma.measures.MeasureResult` with a finite value, its
      name and a non-negative time — or, on a model whose output ignores its input,
      raises :class:`~trilemma.errors.MeasureFailedError`; any non-trilemma exception fails;
    * the model is unchanged: parameters, buffers (BatchNorm statistics,
      ``num_batches_tracked``), train/eval flags, ``requires_grad`` flags, ``.grad``
      tensors (identity and values), ``track_running_stats`` flags, module attributes and
      hooks;
    * the same seed gives the same number;
    * a NaN weight gives a finite value or a trilemma error (never a NaN or a raw error);
    * an unknown option raises :class:`~trilemma.errors.InvalidArgumentError`, and so does a
      missing ``y`` when the measure needs labels;
    * on a non-CPU ``device``, the value matches the CPU's (float64, relative 1e-5).

    Args:
        measure_or_name: A :class:`~trilemma.measures.RegisteredMeasure` or a registered name.
        models: Reference model names or :class:`ReferenceModel` objects (default: all of
            :func:`reference_models`).
        device: Where the models live (inputs are given on the CPU and moved by the measure).
        batch_size: Inputs per batch (>= 2).
        compare_with_cpu: On a non-CPU device, also compare with the CPU value.

    Returns:
        One :class:`CheckOutcome` per model.

    Raises:
        ConformanceError: A check failed (the message names the measure, model and check).
        InvalidArgumentError: Bad ``device``/``batch_size``, or CUDA requested but absent.
        UnknownNameError: Unknown measure or reference model name.
    """
    m = _resolve(measure_or_name)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"device {device!r} requested but CUDA is not available")
    if not is_int(batch_size) or batch_size < 2:
        raise InvalidArgumentError(f"batch_size must be an int >= 2, got {batch_size!r}")
    known = reference_models()
    refs: list[ReferenceModel] = []
    for item in (models if models is not None else list(known)):
        if isinstance(item, ReferenceModel):
            refs.append(item)
        elif item in known:
            refs.append(known[item])
        else:
            raise UnknownNameError(f"unknown reference model {item!r}; known: {sorted(known)}")
    _check_metadata(m)
    outcomes = []
    for ref in refs:
        outcomes.append(_check_one(m, ref, dev, batch_size, compare_with_cpu))
    return outcomes


def _check_one(
    m: RegisteredMeasure, ref: ReferenceModel, dev: torch.device, batch_size: int, compare_with_cpu: bool
) -> CheckOutcome:
    model = _prepare(ref.build()).to(dev)
    reason = m.applicable(model)
    if reason is not None:
        return CheckOutcome(ref.name, "skipped", reason)
    x, y_all = _batch(ref, batch_size, dev)
    y = y_all if m.needs_labels else None
    options = m.example_options(model, x.to(dev), y) if m.example_options else {}
    missing = [o for o in m.required_options if o not in options]
    if missing:
        raise _fail(m.name, ref.name, f"requires options {missing} but its example_options do not provide them")
    before = _snapshot(model)
    try:
        first = _call(m, model, x, y, options, ref.name)
    except MeasureFailedError as err:
        _assert_unchanged(before, model, m.name, ref.name)
        if not ref.connected:
            return CheckOutcome(ref.name, "failed_as_allowed", str(err))
        raise _fail(m.name, ref.name, f"failed: {err}") from err
    except TrilemmaError as err:
        if isinstance(err, ConformanceError):
            raise
        raise _fail(m.name, ref.name, f"raised {type(err).__name__} on a valid call: {err}") from err
    _assert_unchanged(before, model, m.name, ref.name)
    second = _call(m, model, x, y, options, ref.name)
    _assert_unchanged(before, model, m.name, ref.name)
    if first.value != second.value:
        raise _fail(m.name, ref.name, f"is not deterministic under a fixed seed ({first.value} != {second.value})")
    _check_nan_weights(m, model, x, y, options, ref.name)
    _assert_unchanged(before, model, m.name, ref.name)
    if m._options is not None:  # noqa: SLF001 - the measure declares its options
        try:
            m(model, x, y, seed=0, **options, not_an_option_of_any_measure=1)
        except InvalidArgumentError:
            pass
        else:
            raise _fail(m.name, ref.name, "accepted an unknown option")
    if m.needs_labels:
        try:
            m(model, x, None, seed=0, **options)
        except InvalidArgumentError:
            pass
        else:
            raise _fail(m.name, ref.name, "ran without the labels it needs")
    if dev.type != "cpu" and compare_with_cpu:
        cpu_model = model.to("cpu").double()
        opts = m.example_options(cpu_model, x.double(), None if y is None else y.cpu()) if m.example_options else {}
        cpu = m(cpu_model, x.double(), None if y is None else y.cpu(), seed=0, **opts).value
        dev_model = cpu_model.to(dev)
        opts = m.example_options(dev_model, x.double().to(dev), y) if m.example_options else {}
        other = m(dev_model, x.double(), y, seed=0, **opts).value
        if not math.isclose(cpu, other, rel_tol=1e-5, abs_tol=1e-8):
            raise _fail(m.name, ref.name, f"gives {other} on {dev} but {cpu} on the CPU (float64)")
    return CheckOutcome(ref.name, "passed")


# --------------------------------------------------------------------------- spaces


def check_space(
    space: Any,
    *,
    in_features: int = 64,
    num_classes: int = 10,
    width: int = 8,
    input_shape: Sequence[int] | None = None,
    n: int = 3,
    budget_tolerance: float = 0.05,
) -> list[str]:
    """Check an :class:`~trilemma.spaces.ArchSpace` against its contract; raise on the first violation.

    Checks, on the first ``n`` architectures: names are unique canonical strings and a malformed
    name raises :class:`~trilemma.errors.InvalidSpecError`; ``representative`` gives a canonical
    name that is its own representative; ``describe`` returns scalars under the
    names ``describe_columns`` declares; ``build`` gives a module whose output on a batch is
    ``(batch, num_classes)`` and finite, and the same seed gives the same weights;
    ``count_params`` equals the built model's trainable parameters; and for each declared
    capability: a budget solve lands within ``budget_tolerance``, ``theory`` returns finite
    values (or ``None``) under the names ``theory_columns`` declares, ``batch_key`` is not
    ``None``.

    Args:
        space: The space (an :class:`~trilemma.spaces.ArchSpace`).
        in_features, num_classes, width: The networks to build.
        input_shape: One sample's shape (default ``(in_features,)``).
        n: How many architectures to check.
        budget_tolerance: Tolerance of the budget check.

    Returns:
        The names of the checks that ran.

    Raises:
        ConformanceError: a check failed (the message names the space, architecture and check).
    """
    from trilemma._schema import Column
    from trilemma.errors import InvalidSpecError
    from trilemma.spaces import CAPABILITIES, ArchSpace, ModelRecipe

    def fail(what: str) -> ConformanceError:
        return ConformanceError(f"space {getattr(space, 'name', space)!r}: {what}")

    if not isinstance(space, ArchSpace):
        raise fail(f"is a {type(space).__name__}, not an ArchSpace")
    done = ["type"]
    unknown = sorted(set(space.capabilities) - set(CAPABILITIES))
    if unknown:
        raise fail(f"declares unknown capabilities {unknown}; known: {list(CAPABILITIES)}")
    names = space.names()
    if not names or not all(isinstance(a, str) and a for a in names):
        raise fail("names() must return a non-empty list of non-empty strings")
    if len(set(names)) != len(names):
        raise fail("names() repeats a name")
    try:
        space.canonical("\x00 not an architecture \x00")
    except InvalidSpecError:
        pass
    except Exception as err:  # noqa: BLE001 - the contract names the exception type
        raise fail(f"canonical() of a malformed name raised {type(err).__name__}, not InvalidSpecError") from err
    else:
        raise fail("canonical() accepted a malformed name")
    done.append("names")
    declared = list(space.describe_columns())
    if not all(isinstance(c, Column) for c in declared):
        raise fail("describe_columns() must return Column objects")
    shape = tuple(input_shape) if input_shape is not None else (in_features,)
    recipe = ModelRecipe()
    for arch in names[:n]:
        if space.canonical(arch) != arch:
            raise fail(f"names() gives {arch!r}, whose canonical name is {space.canonical(arch)!r}")
        rep = space.representative(arch)
        if space.canonical(rep) != rep or space.representative(rep) != rep:
            raise fail(f"representative({arch!r}) = {rep!r} is not a canonical name that is its own representative")
        desc = space.describe(arch)
        extra = sorted(set(desc) - {c.name for c in declared})
        if declared and extra:
            raise fail(f"describe({arch!r}) returns undeclared columns {extra}")
        bad = [k for k, v in desc.items() if not (v is None or isinstance(v, (bool, int, float, str)))]
        if bad:
            raise fail(f"describe({arch!r}) returns non-scalar values for {bad}")
        kwargs: dict[str, Any] = {"recipe": recipe, "in_features": in_features, "num_classes": num_classes,
                                  "width": width, "input_shape": shape}
        model = space.build(arch, seed=0, **kwargs)
        if not isinstance(model, nn.Module):
            raise fail(f"build({arch!r}) returned a {type(model).__name__}, not an nn.Module")
        with torch.no_grad():
            out = model.eval()(torch.randn(4, *shape, generator=torch.Generator().manual_seed(0)))
        if tuple(out.shape) != (4, num_classes) or not torch.isfinite(out).all():
            raise fail(f"build({arch!r}) gives outputs of shape {tuple(out.shape)} (want (4, {num_classes})) "
                       f"or non-finite values")
        again = space.build(arch, seed=0, **kwargs)
        if any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values())):
            raise fail(f"build({arch!r}, seed=0) twice gives different weights")
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        counted = space.count_params(arch, recipe=recipe, in_features=in_features, num_classes=num_classes,
                                     width=width, input_shape=shape)
        if counted != trainable:
            raise fail(f"count_params({arch!r}) = {counted}, but the built model has {trainable} trainable parameters")
        if "budget" in space.capabilities:
            target = space.count_params(arch, recipe=recipe, in_features=in_features, num_classes=num_classes,
                                        width=2 * width, input_shape=shape)
            w = space.solve_width(arch, target=target, tolerance=budget_tolerance, recipe=recipe,
                                  in_features=in_features, num_classes=num_classes, input_shape=shape)
            got = space.count_params(arch, recipe=recipe, in_features=in_features, num_classes=num_classes,
                                     width=w, input_shape=shape)
            if abs(got - target) > budget_tolerance * target:
                raise fail(f"solve_width({arch!r}, target={target}) gives width {w} with {got} parameters")
        if "closed_form_theory" in space.capabilities:
            row = space.theory(arch, width=width, in_features=in_features, num_classes=num_classes)
            cols = {c.name for c in space.theory_columns()}
            if set(row) - cols:
                raise fail(f"theory({arch!r}) returns undeclared columns {sorted(set(row) - cols)}")
            nonfinite = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
            if nonfinite:
                raise fail(f"theory({arch!r}) returns non-finite values for {nonfinite} (use None)")
        if "batched_training" in space.capabilities and space.batch_key(arch) is None:
            raise fail(f"declares batched_training but batch_key({arch!r}) is None")
    done += ["describe", "build", "seeded build", "count_params"]
    done += [c for c in ("budget", "closed_form_theory", "batched_training") if c in space.capabilities]
    return done


# --------------------------------------------------------------------------- task kinds


def check_task_kind(kind: Any, config: Any, *, n: int = 2) -> list[str]:
    """Check a :class:`~trilemma.study.TaskKind` on a small study config; raise on the first violation.

    The kind must be registered under its name; the config (a mapping or
    :class:`~trilemma.study.StudyConfig`) must enable it. Checks: the study plans; the
    declared columns are :class:`~trilemma._schema.Column` s with unique names; on ``n``
    architectures ``run`` returns JSON-encodable payloads whose scalar keys are declared
    (reserved keys aside); ``run_batch`` returns one entry per architecture; the hash of
    its inputs is stable.

    Returns:
        The names of the checks that ran.

    Raises:
        ConformanceError: a check failed.
    """
    from trilemma._schema import Column
    from trilemma.study import TaskKind, TaskOutput, get_task, plan_study
    from trilemma.study._task_api import RESERVED_KEYS, encode_payload, task_hash

    def fail(what: str) -> ConformanceError:
        return ConformanceError(f"task kind {getattr(kind, 'name', kind)!r}: {what}")

    if not isinstance(kind, TaskKind):
        raise fail(f"is a {type(kind).__name__}, not a TaskKind")
    if get_task(kind.name) is not kind:
        raise fail("is not the instance registered under its name")
    plan = plan_study(config)
    if kind.name not in plan.kinds:
        raise fail("is not enabled by the config")
    _, options = plan.kinds[kind.name]
    ctx = plan.context
    columns = kind.columns(ctx, options)
    if not all(isinstance(c, Column) for c in columns):
        raise fail("columns() must return Column objects")
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise fail(f"columns() repeats a name: {sorted({x for x in names if names.count(x) > 1})}")
    dataset = plan.config.datasets[0] if kind.uses_data and plan.config.datasets else ""
    archs = kind.select(options, plan.archs)[:n]
    for arch in archs:
        out = kind.run(ctx, arch, dataset, 0, options)
        payload = out.payload if isinstance(out, TaskOutput) else out
        try:
            encode_payload(payload)
        except TypeError as err:
            raise fail(f"payload of {arch!r} is not JSON-encodable: {err}") from err
        undeclared = sorted(k for k, v in payload.items() if k not in RESERVED_KEYS and k not in names
                            and (v is None or isinstance(v, (bool, int, float, str))))
        if undeclared:
            raise fail(f"payload of {arch!r} holds undeclared columns {undeclared}")
    batch = kind.run_batch(ctx, archs, dataset, 0, options)
    if len(batch) != len(archs):
        raise fail(f"run_batch returned {len(batch)} results for {len(archs)} architectures")
    if task_hash(kind, plan.config, options, dataset) != task_hash(kind, plan.config, options, dataset):
        raise fail("the hash of its inputs is not stable")
    return ["registered", "plans", "columns", "run", "run_batch", "hash"]


# --------------------------------------------------------------------------- executors


def check_executor(name: str, *, n_workers: int = 2, archs: int = 6) -> list[str]:
    """Check a registered executor with the torch-free ``probe`` task kind; raise on a violation.

    Runs a small study of probe tasks (one planted failure) through the executor: every job
    must come back exactly once, every task's outcome must be the probe's deterministic value
    (or ``failed`` for the planted one), and ``on_submit`` must precede each job's outcome.

    Returns:
        The names of the checks that ran.

    Raises:
        ConformanceError: a check failed.
    """
    import tempfile

    from trilemma.spaces import CellSpec
    from trilemma.study import Job, make_executor, parse_config
    from trilemma.study._runner import make_jobs, plan_study
    from trilemma.study.tasks import ProbeTask

    def fail(what: str) -> ConformanceError:
        return ConformanceError(f"executor {name!r}: {what}")

    cells = [c.name for c in (CellSpec.from_index(i, 2) for i in range(archs))]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = parse_config({"name": "check", "store": f"{tmp}/s.sqlite", "space": {"nodes": 2, "archs": cells},
                            "tasks": {"probe": {"values": 2, "fail": [cells[0]]}},
                            "executor": {"kind": name, "n_workers": n_workers}})
        plan = plan_study(cfg)
        ex = make_executor(cfg.executor)
        jobs = make_jobs(plan, [k for k, _ in plan.tasks], ex.n_workers, ex.threads)
        submitted: list[Job] = []
        seen: list[Job] = []
        with ex:
            for job, outcomes in ex.run(jobs, on_submit=submitted.append):
                if job not in submitted:
                    raise fail(f"yielded job {job.archs} before on_submit was called for it")
                seen.append(job)
                if [o.key for o in outcomes] != job.keys():
                    raise fail(f"outcomes of job {job.archs} do not match its tasks")
                for o in outcomes:
                    want = "failed" if o.key.arch == cells[0] else "complete"
                    if o.status != want:
                        raise fail(f"task {o.key} ended {o.status!r}, expected {want!r}: {o.error}")
                    if want == "complete":
                        payload = json.loads(o.payload or "{}")
                        expected = ProbeTask.expected(o.key.arch, o.key.dataset, o.key.seed, 2)
                        if {k: payload[k] for k in expected} != expected:
                            raise fail(f"task {o.key} returned {payload}, expected {expected}")
    if sorted(map(repr, seen)) != sorted(map(repr, jobs)):
        raise fail(f"{len(jobs)} jobs submitted, {len(seen)} distinct jobs yielded")
    return ["on_submit", "every job once", "outcomes", "failures as outcomes"]
