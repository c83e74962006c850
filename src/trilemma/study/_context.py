"""What a task needs to run: the config, the architecture space, cached datasets and model building."""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cached_property
from typing import Any

from trilemma.errors import ConfigError
from trilemma.spaces import ArchSpace, ModelRecipe
from trilemma.study._config import StudyConfig
from trilemma.study._spaces import make_space

__all__ = ["TaskContext", "torch_options"]


def torch_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """TOML-friendly options with ``dtype = "float64"`` turned into ``torch.float64``.

    Raises:
        ConfigError: ``dtype`` names no torch floating dtype.
    """
    out = dict(options)
    value = out.get("dtype")
    if isinstance(value, str):
        import torch

        dtype = getattr(torch, value.removeprefix("torch."), None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ConfigError(f"dtype must name a torch floating dtype such as 'float32' or 'float64', got {value!r}")
        out["dtype"] = dtype
    return out


class TaskContext:
    """What a task needs to run: the config, the space, cached datasets, model building.

    One context exists per worker process and config; it caches datasets and solved widths
    so that many tasks on one dataset load it once.

    Args:
        config: The study config.
        threads: torch threads to use (``None``: leave torch's default).
        space: The architecture space (default: the config's, built on first use).
    """

    def __init__(self, config: StudyConfig, threads: int | None = None, space: ArchSpace | None = None) -> None:
        self.config = config
        self.threads = threads
        self._datasets: dict[str, Any] = {}
        self._widths: dict[tuple[str, str], int] = {}
        if space is not None:
            self.__dict__["space"] = space

    @cached_property
    def space(self) -> ArchSpace:
        """The study's architecture space."""
        return make_space(self.config.space, self.config.base_dir)

    @cached_property
    def recipe(self) -> ModelRecipe:
        """How the config builds models (init, bias, BatchNorm, space options)."""
        return self.config.model.recipe()

    @cached_property
    def device(self) -> Any:
        """The torch device of the config (``"auto"``: CUDA when available)."""
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        name = self.config.device
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.device(name)

    def dataset(self, name: str) -> Any:
        """The dataset ``name`` loaded with the config's options (cached).

        The split is fixed by the data options (``seed`` there, default 0), not by the
        task's seed: every seed trains on the same split.
        """
        if name not in self._datasets:
            from trilemma.data import load_dataset

            data = self.config.data
            options = torch_options(data.options_for(name) if data is not None else {})
            self._datasets[name] = load_dataset(name, **options)
            _ = self.device  # sets torch threads
        return self._datasets[name]

    def input_shape(self, dataset: str) -> tuple[int, ...]:
        """The shape of one input sample of ``dataset``."""
        return tuple(int(d) for d in self.dataset(dataset).x_train.shape[1:])

    def shape(self, dataset: str) -> tuple[int, int]:
        """``(in_features, num_classes)`` of a dataset."""
        ds = self.dataset(dataset)
        return int(math.prod(ds.x_train.shape[1:])), int(ds.num_classes)

    def width(self, arch: str, dataset: str) -> int:
        """Width of ``arch``: the config's fixed width, or solved from the parameter budget."""
        m = self.config.model
        if m.fixed_width is not None:
            return m.fixed_width
        key = (arch, dataset)
        if key not in self._widths:
            in_features, num_classes = self.shape(dataset)
            self._widths[key] = self.space.solve_width(
                arch, target=int(m.param_budget or 0), tolerance=m.budget_tolerance, recipe=self.recipe,
                in_features=in_features, num_classes=num_classes, input_shape=self.input_shape(dataset),
            )
        return self._widths[key]

    def info(self, arch: str, dataset: str) -> dict[str, Any]:
        """How ``arch`` is built on ``dataset``: width and parameter count."""
        width = self.width(arch, dataset)
        in_features, num_classes = self.shape(dataset)
        params = self.space.count_params(arch, recipe=self.recipe, width=width, in_features=in_features,
                                         num_classes=num_classes, input_shape=self.input_shape(dataset))
        return {"width": width, "params": params}

    def build_model(self, arch: str, dataset: str, seed: int | None, device: Any = None, dtype: Any = None) -> Any:
        """The initialized model of ``arch`` for ``dataset`` with init seed ``seed``."""
        in_features, num_classes = self.shape(dataset)
        return self.space.build(
            arch, recipe=self.recipe, in_features=in_features, num_classes=num_classes,
            width=self.width(arch, dataset), seed=seed, device=self.device if device is None else device,
            input_shape=self.input_shape(dataset), dtype=dtype,
        )
