"""The built-in task kinds, one module each, registered here explicitly.

* ``theory`` (:mod:`.theory`): the space's closed-form columns;
* ``measures`` (:mod:`.measures`): measures at initialization;
* ``train`` (:mod:`.train`): ground truth by training (batched where the space can);
* ``lookup`` (:mod:`.lookup`): ground truth read from a benchmark's table;
* ``proxy_suite`` (:mod:`.suite`): the zero-cost proxy suite in one fused pass per distinct function;
* ``probe`` (:mod:`.probe`): a torch-free diagnostic for executors, stores and clusters.

A plug-in adds a kind with :func:`trilemma.study.register_task` from a module named in the
study's ``plugins``; :func:`trilemma.testing.check_task_kind` checks it.
"""

from trilemma.study._task_api import TaskKind, register_task
from trilemma.study.tasks.lookup import LookupOptions, LookupTask
from trilemma.study.tasks.measures import MeasuresTask, init_seed, measure_batch, measure_columns
from trilemma.study.tasks.probe import ProbeOptions, ProbeTask
from trilemma.study.tasks.suite import SuiteOptions, SuiteTask
from trilemma.study.tasks.theory import TheoryTask
from trilemma.study.tasks.train import TrainTask, train_columns, train_payload

__all__ = [
    "BUILTIN_TASKS",
    "LookupOptions",
    "LookupTask",
    "MeasuresTask",
    "ProbeOptions",
    "ProbeTask",
    "SuiteOptions",
    "SuiteTask",
    "TheoryTask",
    "TrainTask",
    "init_seed",
    "measure_batch",
    "measure_columns",
    "train_columns",
    "train_payload",
]

#: The built-in kinds, in the order they are registered.
BUILTIN_TASKS: tuple[TaskKind, ...] = (TheoryTask(), MeasuresTask(), TrainTask(), LookupTask(), ProbeTask(), SuiteTask())

for _kind in BUILTIN_TASKS:
    register_task(_kind)
