"""One conformance suite for every registered measure (added measures are tested for free).

For each measure in ``list_measures()`` and each reference model: the call leaves the model
untouched (weights, BatchNorm buffers incl. ``num_batches_tracked``, ``requires_grad``,
``.grad``, train/eval flags), returns a finite value, and the same seed gives the same
number. Measures that need labels get labels; measures whose requirements the model does
not meet are skipped with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from trilemma.measures import get_measure, list_measures
from trilemma.models import build_model

NUM_CLASSES = 3


def _mlp() -> nn.Module:
    return build_model("2_12_121", in_features=10, num_classes=NUM_CLASSES, width=12, seed=0)


def _mlp_bn() -> nn.Module:
    return build_model("2_02_002", in_features=10, num_classes=NUM_CLASSES, width=12, batchnorm=True,
                       init="ntk", seed=1)


def _cnn() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 12, 3, stride=2, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, NUM_CLASSES),
    )


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "dagmlp": (_mlp, (10,)),
    "dagmlp_bn": (_mlp_bn, (10,)),
    "cnn_bn": (_cnn, (2, 6, 6)),
}


def _prepare(model: nn.Module) -> nn.Module:
    """Put the model in a state whose every part a careless measure could change."""
    model.train()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(1 + torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(7)
    params = list(model.parameters())
    params[0].requires_grad_(False)
    params[-1].grad = torch.full_like(params[-1], 0.5)
    return model


def _snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "grad_ids": [id(p.grad) for p in model.parameters()],
        "tracking": [getattr(m, "track_running_stats", None) for m in model.modules()],
    }


def _assert_unchanged(before: dict[str, object], model: nn.Module, name: str) -> None:
    after = _snapshot(model)
    for key, value in before["state"].items():  # type: ignore[union-attr]
        assert torch.equal(value, after["state"][key]), f"{name} changed {key}"  # type: ignore[index]
    for key in ("training", "requires_grad", "grad_ids", "tracking"):
        assert before[key] == after[key], f"{name} changed {key}"
    for g0, g1 in zip(before["grads"], after["grads"]):  # type: ignore[arg-type]
        assert (g0 is None and g1 is None) or torch.equal(g0, g1), f"{name} changed a .grad"


def _batch(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(8, *shape, generator=g)
    y = torch.arange(8) % NUM_CLASSES
    return x, y


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("name", list_measures())
def test_measure_conformance(name: str, model_name: str) -> None:
    measure = get_measure(name)
    factory, shape = MODELS[model_name]
    model = _prepare(factory())
    reason = measure.applicable(model)
    if reason is not None:
        pytest.skip(f"{name} does not apply to {model_name}: {reason}")
    x, y = _batch(shape)
    labels = y if measure.needs_labels else None
    options = measure.example_options(model, x, labels) if measure.example_options else {}
    missing = [o for o in measure.required_options if o not in options]
    assert not missing, f"{name} requires options {missing} but its example_options do not provide them"
    before = _snapshot(model)
    first = measure(model, x, labels, seed=0, **options)
    _assert_unchanged(before, model, name)
    second = measure(model, x, labels, seed=0, **options)
    _assert_unchanged(before, model, name)
    assert math.isfinite(first.value)
    assert first.value == second.value, f"{name} is not deterministic under a fixed seed"
    assert first.name == name and first.seconds >= 0
    assert isinstance(first.extras, dict)


@pytest.mark.parametrize("name", list_measures())
def test_measure_metadata(name: str) -> None:
    m = get_measure(name)
    assert m.name == name
    assert isinstance(m.needs_labels, bool)
    assert m.input_kind in ("batch", "circle", "segment")
    assert m.description, f"{name} has no description (first docstring line)"
    assert m.__doc__, f"{name} has no docstring"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list_measures())
def test_measure_on_cuda_matches_cpu(name: str) -> None:
    measure = get_measure(name)
    model = _prepare(_cnn())
    if measure.applicable(model) is not None:
        pytest.skip(measure.applicable(model))
    x, y = _batch((2, 6, 6))
    labels = y if measure.needs_labels else None
    model = model.double()
    options = measure.example_options(model, x.double(), labels) if measure.example_options else {}
    cpu = measure(model, x.double(), labels, **options).value
    gpu_model = model.to("cuda")
    options = measure.example_options(gpu_model, x, labels) if measure.example_options else {}
    before = _snapshot(gpu_model)
    gpu = measure(gpu_model, x.double(), labels, **options).value  # x on the CPU: moved to the model's device
    _assert_unchanged(before, gpu_model, name)
    assert math.isclose(cpu, gpu, rel_tol=1e-5, abs_tol=1e-8), (cpu, gpu)
