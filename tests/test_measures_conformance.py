"""One conformance suite for every registered measure (added measures are tested for free).

Each measure runs :func:`trilemma.testing.check_measure` on every reference model and every
available device (the CPU always; CUDA when present, skipped with the reason otherwise): the
call leaves the model untouched, returns a finite value (or, on the disconnected NB201 cell,
raises ``MeasureFailedError`` and nothing else), the same seed gives the same number, a NaN
weight never leaks out as a NaN, bad options and missing labels are rejected, and a CUDA
value matches the CPU's.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trilemma.errors import MeasureFailedError, UnknownNameError
from trilemma.measures import MeasureResult, list_measures, register_measure, unregister_measure
from trilemma.testing import ConformanceError, ReferenceModel, check_measure, reference_models

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="no CUDA device on this machine")),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model_name", sorted(reference_models()))
@pytest.mark.parametrize("name", list_measures())
def test_measure_conformance(name: str, model_name: str, device: str) -> None:
    (outcome,) = check_measure(name, models=[model_name], device=device)
    if outcome.status == "skipped":
        pytest.skip(f"{name} does not apply to {model_name}: {outcome.detail}")
    assert outcome.status in ("passed", "failed_as_allowed")
    assert outcome.status == "passed" or not reference_models()[model_name].connected


def test_disconnected_cell_fails_cleanly_for_input_dependent_measures() -> None:
    """The NB201 cell whose output ignores the input: jacob_cov and curvature raise MeasureFailedError."""
    for name in ("jacob_cov", "curvature"):
        (outcome,) = check_measure(name, models=["nb201_disconnected"])
        assert outcome.status == "failed_as_allowed", (name, outcome)


@pytest.fixture
def temp_measure() -> list[str]:
    names: list[str] = []
    yield names
    for n in names:
        unregister_measure(n)


def test_check_measure_catches_a_measure_that_changes_the_model(temp_measure: list[str]) -> None:
    def vandal(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
        """Mean output (and an in-place change of a weight)."""
        with torch.no_grad():
            next(model.parameters()).mul_(2)
        return float(model(x).mean())

    register_measure(vandal, name="tmp_vandal")
    temp_measure.append("tmp_vandal")
    with pytest.raises(ConformanceError, match="tmp_vandal.*changed the model's"):
        check_measure("tmp_vandal", models=["dagmlp"])


def test_check_measure_catches_raw_exceptions_and_hooks(temp_measure: list[str]) -> None:
    def raw(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
        """Raises a bare torch error."""
        raise RuntimeError("element 0 of tensors does not require grad")

    def hooked(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> MeasureResult:
        """Leaves a forward hook behind."""
        next(model.modules()).register_forward_hook(lambda *a: None)
        return MeasureResult(1.0)

    register_measure(raw, name="tmp_raw")
    register_measure(hooked, name="tmp_hooked")
    temp_measure.extend(["tmp_raw", "tmp_hooked"])
    with pytest.raises(ConformanceError, match="RuntimeError instead of a trilemma error"):
        check_measure("tmp_raw", models=["dagmlp"])
    with pytest.raises(ConformanceError, match="hooks"):
        check_measure("tmp_hooked", models=["dagmlp"])


def test_check_measure_catches_nondeterminism_and_failures(temp_measure: list[str]) -> None:
    calls = iter(range(100))

    def drifting(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
        """A different number on every call."""
        return float(next(calls))

    def failing(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
        """Always fails."""
        raise MeasureFailedError("singular")

    register_measure(drifting, name="tmp_drift")
    register_measure(failing, name="tmp_fail")
    temp_measure.extend(["tmp_drift", "tmp_fail"])
    with pytest.raises(ConformanceError, match="deterministic"):
        check_measure("tmp_drift", models=["dagmlp"])
    with pytest.raises(ConformanceError, match="failed: .*singular"):
        check_measure("tmp_fail", models=["dagmlp"])
    (allowed,) = check_measure("tmp_fail", models=["nb201_disconnected"])
    assert allowed.status == "failed_as_allowed"


def test_check_measure_accepts_custom_models_and_rejects_unknown_names() -> None:
    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 2))

    tiny = ReferenceModel("tiny", build, (3,), 2)
    assert [o.status for o in check_measure("naswot", models=[tiny])] == ["passed"]
    with pytest.raises(UnknownNameError, match="reference model"):
        check_measure("naswot", models=["nope"])
