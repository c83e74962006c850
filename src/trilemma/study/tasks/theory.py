"""The ``theory`` task kind: the space's closed-form columns of each architecture.

For the DAG space: Theorems 4.1, 4.4 and 4.6 of Chen, Huang & Wang (AutoML-Conf 2023)
(:func:`trilemma.theory.theory_row`); for NAS-Bench-201: the NeurIPS 2022 indicators. Needs
a space with the ``closed_form_theory`` capability. Dataset- and seed-free: the input and
output sizes come from the study's first dataset; architectures are bundled 64 to a job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from trilemma._schema import Column
from trilemma.errors import TrilemmaError
from trilemma.study._config import StudyConfig, TheoryConfig
from trilemma.study._context import TaskContext
from trilemma.study._task_api import TaskKind

__all__ = ["TheoryTask"]

logger = logging.getLogger(__name__)

#: Theory options the study sets itself (from [model] and [data]).
_SET_BY_STUDY = ("spec", "width", "in_features", "num_classes", "bias")


class TheoryTask(TaskKind):
    """Closed-form columns of each architecture (dataset- and seed-free)."""

    name = "theory"
    uses_data = False
    uses_seed = False
    chunk_size = 64
    priority = -2  # seconds for a whole space: first, so a report can be drawn while the rest runs
    requires = frozenset({"closed_form_theory"})

    def options(self, config: StudyConfig) -> TheoryConfig:
        if config.theory is None:
            raise TrilemmaError("the study has no [theory] section")
        return config.theory

    def validate(self, config: StudyConfig, archs: Sequence[str]) -> list[str]:
        from trilemma.study._spaces import make_space

        try:
            space = make_space(config.space, config.base_dir)
        except TrilemmaError:
            return []  # reported by the planner
        allowed = space.theory_options()
        lines = []
        for key in (config.theory.options if config.theory else {}):
            if key in _SET_BY_STUDY:
                lines.append(f"theory.options.{key}: set by the study ([model] and [data]), not here")
            elif key not in allowed:
                lines.append(f"theory.options.{key}: unknown option; allowed: {', '.join(allowed) or 'none'}")
        return lines

    def columns(self, ctx: TaskContext, options: TheoryConfig) -> tuple[Column, ...]:
        return ctx.space.theory_columns()

    def hash_inputs(self, config: StudyConfig, options: Any, dataset: str) -> Any:
        out = super().hash_inputs(config, options, dataset)
        out["shape_from"] = list(config.datasets[:1])
        return out

    def run(self, ctx: TaskContext, arch: str, dataset: str, seed: int, options: TheoryConfig) -> dict[str, Any]:
        m = ctx.config.model
        kwargs: dict[str, Any] = {"bias": m.bias}
        first = ctx.config.datasets[0] if ctx.config.datasets else None
        if first is not None:
            kwargs["in_features"], kwargs["num_classes"] = ctx.shape(first)
            info = ctx.info(arch, first)
            width = info["width"]
        else:
            if m.fixed_width is None:
                raise TrilemmaError("model.param_budget needs a [data] section to know the input size")
            width = m.fixed_width
            info = {"width": width}
        t0 = time.perf_counter()
        payload = dict(ctx.space.theory(arch, width=width, **kwargs, **options.options))
        logger.debug("theory of %s in %.2g s", arch, time.perf_counter() - t0)
        payload["info"] = info
        return payload
