"""The zero-cost proxy suite in as few passes as possible (fused ≡ separate).

Run one by one, every proxy repeats a forward (and usually a backward) pass over the same
network and batch. :func:`proxy_suite` computes

* ``snip``, ``grad_norm``, ``fisher``, ``grasp`` — from **one** labelled forward pass and one
  backward pass of the loss (taken with ``create_graph`` when GraSP's Hessian-vector
  product is requested, plus that second-order backward);
* ``naswot`` and ``linear_regions_batch`` — from the ReLU activation codes recorded during
  the same forward pass (each with its own hook convention);
* ``jacob_cov`` — from the input gradient of the summed output, a backward pass of the same
  graph;
* the NTK spectrum (``ntk_lambda_min``, ``ntk_lambda_max``, ``ntk_condition``,
  ``ntk_trace``, ``ntk_lambda_robust``) — from **one** kernel. With BatchNorm batch
  statistics the kernel's Jacobian rows are vector-Jacobian products of the same forward
  graph; otherwise (per-sample samples) it is the structured NTK of
  :mod:`trilemma.measures._ntk`, computed once for every statistic;
* ``flops`` — MACs counted by hooks on the same forward pass;
* ``synflow`` — its own all-ones pass (absolute weights, no BatchNorm: nothing to share);
  ``num_params`` — no pass.

A computation is shared only between measures whose options agree (BatchNorm mode, dtype, and
the NTK's implementation, mode and convention): each value equals the one the registered
measure returns with the same options (a test checks every convention in float64). A measure
whose options differ from its group's is simply computed on its own.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from trilemma.errors import InvalidArgumentError, InvalidTypeError, MeasureFailedError, TrilemmaError
from trilemma.measures._base import MeasureResult, describe_model, get_measure, preserved_state
from trilemma.measures._convergence import ntk_convention, spectrum_result
from trilemma.measures._cost import mac_hooks, num_parameters
from trilemma.measures._forward import couples_samples, functional_view
from trilemma.measures._kernel import kernel_eigenvalues, spectrum_stats
from trilemma.measures._ntk import NTKImplementation, _contract, _flat, jacobian_rows
from trilemma.measures._regions import _hooked, check_activation_convention, distinct_codes, hamming_similarity
from trilemma.measures._zero_cost import (
    PROXY_CONVENTIONS,
    _layers,
    check_convention,
    fan_in,
    fisher_score,
    grad_norm_score,
    grasp_score,
    input_gradient,
    jacob_cov_score,
    loss_of,
    naswot_score,
    snip_score,
    weight_names,
)

__all__ = ["SUITE", "proxy_suite"]

logger = logging.getLogger(__name__)

#: The measures :func:`proxy_suite` computes (default: all that the labels allow).
SUITE: tuple[str, ...] = (
    "naswot", "synflow", "snip", "grad_norm", "grasp", "fisher", "jacob_cov",
    "ntk_lambda_min", "ntk_lambda_max", "ntk_condition", "ntk_trace", "ntk_lambda_robust",
    "linear_regions_batch", "num_params", "flops",
)

_NTK = ("ntk_lambda_min", "ntk_lambda_max", "ntk_condition", "ntk_trace", "ntk_lambda_robust")
_NTK_STAT = {"ntk_lambda_min": "lambda_min", "ntk_lambda_max": "lambda_max", "ntk_condition": "condition",
             "ntk_trace": "trace", "ntk_lambda_robust": "lambda_robust"}
_LOSS = ("snip", "grad_norm", "grasp", "fisher")
# members of the shared forward pass (in the order that picks the group's options)
_SHARED = ("snip", "grad_norm", "fisher", "grasp", "jacob_cov", "naswot", "linear_regions_batch")


def _defaults(name: str) -> dict[str, Any]:
    sig = inspect.signature(get_measure(name).fn)
    params = list(sig.parameters.values())[3:]
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _float_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype())


class _Failure:
    """A measure's error, raised or logged at the end in the order of ``names``."""

    def __init__(self, err: TrilemmaError) -> None:
        self.err = err


def proxy_suite(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    names: Sequence[str] | None = None,
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int | None = 0,
    on_error: str = "raise",
) -> dict[str, MeasureResult]:
    """Compute the zero-cost proxy suite with shared passes (see the module docstring).

    Every value equals the registered measure's (``get_measure(name)(model, x, y, seed=seed,
    **options[name])``): the suite is an execution plan, not another definition.

    Args:
        model: Any ``nn.Module``; never modified (its state is snapshotted and restored).
        x: Input batch ``(n, *)`` (moved to the model's device).
        y: Labels for ``snip``, ``grad_norm``, ``grasp``, ``fisher`` (class indices ``(n,)``).
        names: Measures from :data:`SUITE` (default: all of them, without the label-needing
            ones when ``y`` is ``None``).
        options: Per-measure keyword options as for the registered measures, e.g.
            ``{"fisher": {"convention": "zero-cost-nas"}, "ntk_condition": {"convention": "te-nas"}}``.
        seed: Seed of the torch random generators for the call (``None``: not reseeded).
        on_error: ``"raise"`` (default) or ``"skip"``: a measure failing with a
            :class:`~trilemma.errors.TrilemmaError` is logged and left out.

    Returns:
        ``{name: MeasureResult}`` in the order of ``names``. ``seconds`` is the wall time of
        the pass group that produced the value (shared by its members).

    Raises:
        InvalidTypeError: ``model``/``x``/``y`` of the wrong type.
        InvalidArgumentError: Unknown names or options, missing labels, a model that does
            not meet a measure's requirements, bad ``on_error``.
        MeasureFailedError: A measure failed (``on_error="raise"``).

    Example:
        >>> from trilemma.models import build_nb201
        >>> net = build_nb201("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+"
        ...                   "|avg_pool_3x3~0|none~1|nor_conv_3x3~2|", C=4, N=1, seed=0)
        >>> x, y = torch.randn(8, 3, 8, 8), torch.arange(8) % 10
        >>> res = proxy_suite(net, x, y, names=["snip", "naswot", "ntk_condition"])
        >>> sorted(res)
        ['naswot', 'ntk_condition', 'snip']
    """
    if on_error not in ("raise", "skip"):
        raise InvalidArgumentError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"proxy_suite: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[0] < 1:
        raise InvalidArgumentError(f"proxy_suite: x must be a non-empty batch tensor (n, *), got "
                                   f"{getattr(x, 'shape', type(x).__name__)!r}")
    if y is not None and (not isinstance(y, torch.Tensor) or y.shape[0] != x.shape[0]):
        raise InvalidArgumentError(f"proxy_suite: y must be a tensor with one row per input ({x.shape[0]}), "
                                   f"got {getattr(y, 'shape', type(y).__name__)!r}")
    if names is None:
        selected = [n for n in SUITE if y is not None or not get_measure(n).needs_labels]
    else:
        selected = list(names)
    unknown = [n for n in selected if n not in SUITE]
    if unknown:
        raise InvalidArgumentError(f"proxy_suite computes {list(SUITE)}; got unknown name(s) {unknown}")
    opts = {n: dict(v) for n, v in (options or {}).items()}
    extra = sorted(set(opts) - set(selected))
    if extra:
        raise InvalidArgumentError(f"options given for measures that are not run: {extra}; running {selected}")
    eff: dict[str, dict[str, Any]] = {}
    for n in selected:
        m = get_measure(n)
        bad = sorted(set(opts.get(n, {})) - set(m.options))
        if bad:
            raise InvalidArgumentError(f"measure {n!r} got unknown option(s) {bad}; allowed: {m.options or 'none'}")
        if m.needs_labels and y is None:
            raise InvalidArgumentError(f"measure {n!r} needs labels y; got y=None")
        reason = m.applicable(model)
        if reason is not None:
            raise InvalidArgumentError(f"measure {n!r} cannot run on {describe_model(model)}: {reason}")
        eff[n] = {**_defaults(n), **opts.get(n, {})}
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    x = x.to(device)
    y = None if y is None else y.to(device)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    out: dict[str, MeasureResult | _Failure] = {}
    with preserved_state(model), torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        _run(model, x, y, eff, out, seed)
    results: dict[str, MeasureResult] = {}
    for n in selected:
        r = out[n]
        if isinstance(r, _Failure):
            if on_error == "raise":
                raise r.err
            logger.warning("measure %s failed on %s: %s", n, describe_model(model), r.err)
            continue
        results[n] = r
    return results


# --------------------------------------------------------------------------- plan and passes


def _run(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, eff: dict[str, dict[str, Any]],
    out: dict[str, MeasureResult | _Failure], seed: int | None,
) -> None:
    model_dtype = _float_dtype(model)

    def resolve(dtype: torch.dtype | None) -> torch.dtype:
        return dtype if dtype is not None else model_dtype

    shared = [n for n in _SHARED if n in eff]
    group: tuple[str, torch.dtype] | None = None
    if shared:
        first = eff[shared[0]]
        group = (first["batchnorm"], resolve(first.get("dtype")))
    members = [n for n in shared if group == (eff[n]["batchnorm"], resolve(eff[n].get("dtype")))]
    # NTK measures: one kernel per distinct kernel configuration
    kernels: dict[tuple[Any, ...], list[str]] = {}
    for n in (n for n in _NTK if n in eff):
        o = eff[n]
        try:
            params, kdtype, edtype = ntk_convention(model, o["convention"], o["dtype"])
        except TrilemmaError as err:
            out[n] = _Failure(_named(n, model, err))
            continue
        key = (o["implementation"], o["mode"], o["batchnorm"], kdtype, edtype, None if params is None else tuple(params))
        kernels.setdefault(key, []).append(n)
    rows_key = None
    if group is not None:
        for key in kernels:
            impl, _mode, bn, kdtype, _e, _p = key
            if (NTKImplementation(impl) is NTKImplementation.STRUCTURED and couples_samples(model, bn)
                    and (bn, kdtype) == group):
                rows_key = key
                break
    if group is not None and (members or rows_key is not None):
        _shared_pass(model, x, y, eff, members, group, rows_key, kernels.get(rows_key, []) if rows_key else [],
                     "flops" in eff, out)
    for key, names in kernels.items():
        if key != rows_key:
            _own_kernel(model, x, eff, key, names, out)
    for n in eff:
        if n in out:
            continue
        if n == "num_params":
            out[n] = MeasureResult(float(num_parameters(model)), 0.0, {}, n)
        else:  # synflow, and members whose options differ from their group's
            try:
                out[n] = get_measure(n)(model, x, y if get_measure(n).needs_labels else None, seed=seed,
                                        **eff[n])
            except TrilemmaError as err:
                out[n] = _Failure(err)


def _named(name: str, model: nn.Module, err: Exception) -> TrilemmaError:
    """The error the registered measure's call path would raise for ``err``."""
    if isinstance(err, (MeasureFailedError, torch.linalg.LinAlgError)):
        return MeasureFailedError(f"measure {name!r} failed on {describe_model(model)}: {err}")
    if isinstance(err, TrilemmaError):
        return err
    raise err


def _finish(name: str, value: Any, extras: dict[str, Any], seconds: float, model: nn.Module) -> MeasureResult:
    """The registered measure's result checks (finite value) on a value computed here."""
    return get_measure(name)._result(MeasureResult(value, extras=extras), seconds, model)  # noqa: SLF001


def _store(name: str, model: nn.Module, out: dict[str, MeasureResult | _Failure], base_seconds: float,
           compute: Any) -> None:
    """Run ``compute() -> (value, extras)`` and store the checked result (or the failure)."""
    t0 = time.perf_counter()
    try:
        value, extras = compute()
        out[name] = _finish(name, value, extras, base_seconds + time.perf_counter() - t0, model)
    except (TrilemmaError, torch.linalg.LinAlgError) as err:
        out[name] = _Failure(_named(name, model, err))


def _ntk_results(names: list[str], eff: dict[str, dict[str, Any]], theta: torch.Tensor, edtype: torch.dtype,
                 seconds: float, model: nn.Module, out: dict[str, MeasureResult | _Failure]) -> None:
    try:
        eigs = kernel_eigenvalues(theta, name="NTK", dtype=edtype).cpu()
    except TrilemmaError as err:
        for n in names:
            out[n] = _Failure(_named(n, model, err))
        return
    for n in names:
        def compute(n: str = n) -> tuple[float, dict[str, Any]]:
            res = spectrum_result(_NTK_STAT[n], eigs, spectrum_stats(eigs, fraction=eff[n]["fraction"]))
            return res.value, res.extras

        _store(n, model, out, seconds, compute)


def _own_kernel(model: nn.Module, x: torch.Tensor, eff: dict[str, dict[str, Any]], key: tuple[Any, ...],
                names: list[str], out: dict[str, MeasureResult | _Failure]) -> None:
    from trilemma.measures._ntk import empirical_ntk

    impl, mode, bn, kdtype, edtype, params = key
    start = time.perf_counter()
    try:
        theta = empirical_ntk(model, x, implementation=impl, mode=mode, batchnorm=bn, dtype=kdtype,
                              params=None if params is None else list(params))
    except (TrilemmaError, torch.linalg.LinAlgError) as err:
        for n in names:
            out[n] = _Failure(_named(n, model, err))
        return
    _ntk_results(names, eff, theta, edtype, time.perf_counter() - start, model, out)


def _shared_pass(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, eff: dict[str, dict[str, Any]], members: list[str],
    group: tuple[str, torch.dtype], rows_key: tuple[Any, ...] | None, ntk_names: list[str], flops: bool,
    out: dict[str, MeasureResult | _Failure],
) -> None:
    """One forward pass of the group's configuration and every backward pass the members need."""
    batchnorm, dtype = group
    start = time.perf_counter()
    members = [n for n in members if _member_ok(n, model, x, eff, out)]
    loss_members = [n for n in _LOSS if n in members]
    weights = weight_names(model) if loss_members else []
    code_members = [n for n in ("naswot", "linear_regions_batch") if n in members]
    conventions = {eff[n]["convention"] for n in code_members}
    ntk_params: list[str] = []
    with functional_view(model, dtype=dtype, batchnorm=batchnorm) as view:
        if rows_key is not None:
            chosen = rows_key[5]
            ntk_params = [k for k, v in view.params.items() if v.is_floating_point()] if chosen is None else list(chosen)
        grad_names = set(weights) | set(ntk_params)
        leaves = {k: v.detach().requires_grad_(k in grad_names) if v.is_floating_point() else v
                  for k, v in view.params.items()}
        xs = view.input(x).detach().requires_grad_("jacob_cov" in members)
        # hooks: activation codes, fisher's layer outputs, MACs, activation sizes (NTK row chunks)
        hooked = {c: {id(m) for m in _hooked(model, c)} for c in conventions}
        union = {id(m): m for c in conventions for m in _hooked(model, c)}
        pre: list[tuple[int, torch.Tensor]] = []
        acts: list[torch.Tensor] = []
        fans: list[int] = []
        macs = [0]
        count = [0]

        def code_hook(m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            pre.append((id(m), args[0].detach() > 0))

        def fisher_hook(m: nn.Module, _a: tuple[torch.Tensor, ...], o: torch.Tensor) -> torch.Tensor:
            acts.append(o)
            fans.append(fan_in(m))
            return o.clone()

        def size_hook(_m: nn.Module, _a: Any, o: Any) -> None:
            if isinstance(o, torch.Tensor):
                count[0] += o.numel()

        handles = [m.register_forward_pre_hook(code_hook) for m in union.values()]
        if "fisher" in members:
            handles += [m.register_forward_hook(fisher_hook) for m in _layers(model)]
        if flops:
            handles += mac_hooks(model, macs)
        if rows_key is not None:
            handles += [m.register_forward_hook(size_hook) for m in model.modules() if not list(m.children())]
        try:
            output = _flat(view(leaves, xs))
        except TrilemmaError as err:
            for nm in [*members, *ntk_names, *(["flops"] if flops else [])]:
                out[nm] = _Failure(_named(nm, model, err))
            return
        finally:
            for h in handles:
                h.remove()
        forward_seconds = time.perf_counter() - start
        n = x.shape[0]
        if flops:
            total = round(macs[0] / n)
            out["flops"] = _finish("flops", float(2 * total), {"macs": total}, forward_seconds, model)
        kernels: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # one Hamming kernel per convention

        def codes_of(c: str) -> tuple[torch.Tensor, torch.Tensor]:
            if c not in kernels:
                parts = [t.reshape(n, -1) for i, t in pre if i in hooked[c] and (c != "te-nas" or t.ndim == 4)]
                codes = torch.cat(parts, dim=1) if parts else torch.zeros((n, 0), dtype=torch.bool)
                kernels[c] = codes, hamming_similarity(codes)
            return kernels[c]

        for name in code_members:
            def from_codes(name: str = name) -> tuple[float, dict[str, Any]]:
                codes, k = codes_of(eff[name]["convention"])
                if name == "naswot":
                    return naswot_score(codes, k), {}
                return float(distinct_codes(k, codes.shape[1])), {"units": codes.shape[1]}

            _store(name, model, out, forward_seconds, from_codes)
        if rows_key is not None:
            t0 = time.perf_counter()
            try:
                jac = jacobian_rows(output, [leaves[k] for k in ntk_params], rows_key[1], activations=count[0])
                theta = _contract(jac, jac, rows_key[1]).detach()
            except (TrilemmaError, torch.linalg.LinAlgError) as err:
                for nm in ntk_names:
                    out[nm] = _Failure(_named(nm, model, err))
            else:
                _ntk_results(ntk_names, eff, theta, rows_key[4], forward_seconds + time.perf_counter() - t0,
                             model, out)
        if "jacob_cov" in members:
            _store("jacob_cov", model, out, forward_seconds,
                   lambda: (jacob_cov_score(input_gradient(output, xs, retain_graph=True)), {}))
        if loss_members:
            _loss_members(model, output, y, leaves, weights, acts, fans, loss_members, eff, forward_seconds, out)


def _member_ok(name: str, model: nn.Module, x: torch.Tensor, eff: dict[str, dict[str, Any]],
               out: dict[str, MeasureResult | _Failure]) -> bool:
    """The separate measure's argument checks; a failing member is recorded and left out of the pass."""
    try:
        if name in PROXY_CONVENTIONS:
            check_convention(name, eff[name]["convention"], PROXY_CONVENTIONS[name])
        elif name == "linear_regions_batch":
            check_activation_convention(eff[name]["convention"])
        if name == "jacob_cov" and (x.shape[0] < 2 or not x.is_floating_point()):
            raise InvalidArgumentError(
                f"jacob_cov needs >= 2 floating inputs, got {x.shape[0]} of dtype {x.dtype}"
            )
        if name in _LOSS and not weight_names(model):
            raise InvalidArgumentError(
                f"{name} scores the weights of nn.Linear/conv layers; {type(model).__name__} has none"
            )
    except TrilemmaError as err:
        out[name] = _Failure(err)
        return False
    return True


def _loss_members(
    model: nn.Module, output: torch.Tensor, y: torch.Tensor | None, leaves: dict[str, torch.Tensor],
    weights: list[str], acts: list[torch.Tensor], fans: list[int], members: list[str],
    eff: dict[str, dict[str, Any]], forward_seconds: float, out: dict[str, MeasureResult | _Failure],
) -> None:
    """snip, grad_norm, fisher (one backward of the loss) and grasp (its Hessian-vector product)."""
    t0 = time.perf_counter()
    try:
        if y is None:
            raise InvalidArgumentError(f"{members[0]} needs labels y; got y=None")
        loss = loss_of(output, y)
        targets = [leaves[k] for k in weights] + (acts if "fisher" in members else [])
        grads = list(torch.autograd.grad(loss, targets, create_graph="grasp" in members, allow_unused=True,
                                         retain_graph=True))
    except (TrilemmaError, torch.linalg.LinAlgError) as err:
        for n in members:
            out[n] = _Failure(_named(n, model, err))
        return
    wgrads = [torch.zeros_like(leaves[k]) if g is None else g for k, g in zip(weights, grads[:len(weights)])]
    base = forward_seconds + time.perf_counter() - t0
    wlist = [leaves[k] for k in weights]
    if "snip" in members:
        _store("snip", model, out, base, lambda: (snip_score(wlist, wgrads), {}))
    if "grad_norm" in members:
        _store("grad_norm", model, out, base, lambda: (grad_norm_score(wgrads), {}))
    if "fisher" in members:
        _store("fisher", model, out, base,
               lambda: (fisher_score(acts, grads[len(weights):], fans, eff["fisher"]["convention"]), {}))
    if "grasp" in members:
        _store("grasp", model, out, base, lambda: (grasp_score(wlist, wgrads), {}))
