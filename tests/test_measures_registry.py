"""The measure registry and its checked call path."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from trilemma.errors import (
    DuplicateNameError,
    InvalidArgumentError,
    InvalidTypeError,
    MeasureFailedError,
    UnknownNameError,
)
from trilemma.measures import (
    Measure,
    MeasureResult,
    get_measure,
    list_measures,
    measure_all,
    preserved_state,
    register_measure,
    unregister_measure,
)
from trilemma.models import build_model


@pytest.fixture()
def temp_names() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for n in names:
        if n in list_measures():
            unregister_measure(n)


def test_register_as_decorator_and_direct(temp_names: list[str]) -> None:
    @register_measure(name="tmp_out_mean", axis="test", higher_is_better=True)
    def out_mean(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, scale: float = 1.0) -> float:
        """Mean output times scale."""
        return float(model(x).mean()) * scale

    temp_names.append("tmp_out_mean")
    m = get_measure("tmp_out_mean")
    assert isinstance(m, Measure)
    assert (m.name, m.axis, m.higher_is_better) == ("tmp_out_mean", "test", True)
    assert m.description == "Mean output times scale."
    assert m.options == ["scale"]
    res = m(nn.Identity(), torch.ones(2, 3), scale=2.0)
    assert isinstance(res, MeasureResult) and res.value == 2.0 and res.seconds >= 0 and res.name == "tmp_out_mean"
    register_measure(lambda model, x, y=None: (1.0, {"k": 1}), name="tmp_pair", needs_labels=True)
    temp_names.append("tmp_pair")
    out = get_measure("tmp_pair")(nn.Identity(), torch.ones(2, 1), torch.zeros(2))
    assert out.extras == {"k": 1}
    assert "tmp_pair" in list_measures(needs_labels=True)
    assert "tmp_pair" not in list_measures(needs_labels=False)
    assert list_measures("tmp_*", axis="test") == ["tmp_out_mean"]


def test_duplicate_and_unknown_names(temp_names: list[str]) -> None:
    with pytest.raises(DuplicateNameError, match="ntk_lambda_min"):
        register_measure(lambda model, x, y=None: 0.0, name="ntk_lambda_min")
    with pytest.raises(UnknownNameError, match="did you mean 'ntk_lambda_min'") as err:
        get_measure("ntk_lamda_min")
    assert "curvature" in str(err.value)  # lists the valid names


def test_bad_registrations() -> None:
    with pytest.raises(InvalidArgumentError, match="input_kind"):
        register_measure(lambda model, x, y=None: 0.0, name="tmp_bad", input_kind="graph")
    with pytest.raises(InvalidArgumentError, match="requires"):
        register_measure(lambda model, x, y=None: 0.0, name="tmp_bad", requires=("gelu",))
    with pytest.raises(InvalidTypeError):
        register_measure(3, name="tmp_bad")  # type: ignore[arg-type]
    assert "tmp_bad" not in list_measures()


def test_call_path_validates_inputs_and_options(temp_names: list[str]) -> None:
    net = build_model("2_02_002", 4, 2, width=4, seed=0)
    m = get_measure("ntk_trace")
    with pytest.raises(InvalidArgumentError, match=r"unknown option\(s\) \['fraktion'\].*fraction"):
        m(net, torch.randn(3, 4), fraktion=0.5)
    with pytest.raises(InvalidTypeError, match="nn.Module"):
        m("net", torch.randn(3, 4))  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="torch.Tensor"):
        m(net, [[1.0]])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="needs labels"):
        get_measure("snip")(net, torch.randn(3, 4))
    with pytest.raises(InvalidArgumentError, match="one row per input"):
        get_measure("snip")(net, torch.randn(3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(InvalidArgumentError, match="nn.ReLU"):
        get_measure("naswot")(nn.Sequential(nn.Linear(4, 3), nn.Tanh()), torch.randn(3, 4))

    @register_measure(name="tmp_needs_state", required_options=("init_state",),
                      example_options=lambda model, x, y: {"init_state": model.state_dict()})
    def needs_state(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, init_state: object = None
    ) -> float:
        """Needs an option."""
        return 1.0

    temp_names.append("tmp_needs_state")
    with pytest.raises(InvalidArgumentError, match="init_state"):
        needs_state(net, torch.randn(3, 4))
    assert needs_state(net, torch.randn(3, 4), init_state=net.state_dict()).value == 1.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), torch.tensor(float("nan"))])
def test_non_finite_values_raise_naming_measure_and_model(temp_names: list[str], bad: object) -> None:
    register_measure(lambda model, x, y=None: bad, name="tmp_nan")
    temp_names.append("tmp_nan")
    net = build_model("2_02_002", 4, 2, width=4, seed=0)
    with pytest.raises(MeasureFailedError, match=r"tmp_nan.*DAGMLP\(spec=2_02_002"):
        get_measure("tmp_nan")(net, torch.randn(2, 4))


def test_linalg_failures_become_measure_failures(temp_names: list[str]) -> None:
    def chol(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
        return float(torch.linalg.cholesky(-torch.eye(2)).sum())

    register_measure(chol, name="tmp_chol")
    temp_names.append("tmp_chol")
    with pytest.raises(MeasureFailedError, match="tmp_chol"):
        get_measure("tmp_chol")(nn.Identity(), torch.ones(2, 2))


def test_state_is_restored_even_when_the_measure_raises(temp_names: list[str]) -> None:
    def vandal(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
        model.eval()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.add_(5.0)
        first = next(model.parameters())
        first.requires_grad_(False)
        first.grad.add_(1.0)  # an in-place .grad change, like a stray backward()
        raise MeasureFailedError("boom")

    register_measure(vandal, name="tmp_vandal")
    temp_names.append("tmp_vandal")
    net = build_model("2_02_002", 4, 2, width=4, seed=0, batchnorm=True)
    grad = torch.zeros_like(next(net.parameters()))
    next(net.parameters()).grad = grad
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(MeasureFailedError, match="boom"):
        get_measure("tmp_vandal")(net, torch.randn(3, 4))
    assert net.training and all(p.requires_grad for p in net.parameters())
    assert next(net.parameters()).grad is grad and not grad.any()
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    with preserved_state(net, parameters=True):
        with torch.no_grad():
            next(net.parameters()).mul_(0)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


def test_seed_controls_the_random_generators(temp_names: list[str]) -> None:
    register_measure(lambda model, x, y=None: float(torch.rand(())), name="tmp_rand")
    temp_names.append("tmp_rand")
    m = get_measure("tmp_rand")
    a, b = m(nn.Identity(), torch.ones(1, 1), seed=3).value, m(nn.Identity(), torch.ones(1, 1), seed=3).value
    assert a == b != m(nn.Identity(), torch.ones(1, 1), seed=4).value
    state = torch.random.get_rng_state()
    m(nn.Identity(), torch.ones(1, 1), seed=5)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is untouched


def test_measure_all_selects_and_reports() -> None:
    net = build_model("2_02_002", 6, 3, width=8, seed=0)
    x, y = torch.randn(6, 6), torch.arange(6) % 3
    names = ["num_params", "ntk_lambda_min", "snip"]
    res = measure_all(net, x, y, names=names, options={"ntk_lambda_min": {"mode": "trace"}})
    assert list(res) == names and all(math.isfinite(r.value) for r in res.values())
    assert res["num_params"].value == sum(p.numel() for p in net.parameters())
    with pytest.raises(InvalidArgumentError, match="needs labels"):
        measure_all(net, x, None, names=["snip"])
    with pytest.raises(InvalidArgumentError, match="not run"):
        measure_all(net, x, y, names=["num_params"], options={"snip": {}})
    with pytest.raises(InvalidArgumentError, match="on_error"):
        measure_all(net, x, y, names=["num_params"], on_error="ignore")


def test_measure_all_default_skips_measures_needing_labels_or_options() -> None:
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    res = measure_all(net, torch.randn(6, 4), names=None, on_error="skip")
    assert "snip" not in res and "naswot" not in res  # needs labels / needs ReLU
    assert "num_params" in res and "ntk_lambda_min" in res


def test_cli_lists_measures(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from trilemma.commands.measures import add_commands

    parser = argparse.ArgumentParser(prog="trilemma")
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["measures", "ntk*"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "ntk_lambda_min" in out and "convergence" in out and "curvature" not in out
    args = parser.parse_args(["measures", "--axis", "generalization"])
    assert args.func(args) == 0
    assert "ntk_gen_bound" in capsys.readouterr().out
    args = parser.parse_args(["measures", "zzz*"])
    assert args.func(args) == 1


def _registering_modules(package_dir: Path) -> set[str]:
    """Modules of a package directory that register measures (call ``register_measure``)."""
    return {
        f.stem for f in package_dir.glob("*.py")
        if f.stem not in ("__init__", "_base") and "register_measure(" in f.read_text(encoding="utf-8")
    }


def test_every_module_that_registers_measures_is_imported_explicitly() -> None:
    """A new ``measures/_mine.py`` with ``@register_measure`` must be added to FAMILY_MODULES."""
    import trilemma.measures as pkg
    from trilemma.measures import FAMILY_MODULES

    package_dir = Path(pkg.__file__).parent
    missing = _registering_modules(package_dir) - set(FAMILY_MODULES)
    assert not missing, f"add {sorted(missing)} to the family imports of trilemma/measures/__init__.py"
    assert all((package_dir / f"{m}.py").is_file() for m in FAMILY_MODULES)
    registered_by = {get_measure(n).fn.__module__.rsplit(".", 1)[1] for n in list_measures()}
    assert registered_by <= set(FAMILY_MODULES)


def test_the_module_check_sees_an_unlisted_module(tmp_path: Path) -> None:
    (tmp_path / "_mine.py").write_text("@register_measure(name='mine')\ndef mine(model, x, y=None):\n    return 1.0\n")
    (tmp_path / "_helpers.py").write_text("def helper():\n    return 1\n")
    assert _registering_modules(tmp_path) == {"_mine"}
