"""The built-in task kinds, one module each, registered here explicitly.

* ``theory`` (:mod:`.theory`): the space's closed-form columns;
* ``measures`` (:mod:`.measures`): measures at initialization;
* ``train`` (:mod:`.train`): ground truth by training (batched where the space can);
* ``lookup`` (:mod:`.lookup`): ground truth read from a benchmark's table;
* ``proxy_suite`` (:mod:`.suite`): the zero-cost proxy suite in one fused pass per distinct function;
* ``probe`` (:mod:`.probe`): a torch-free diagnostic for executors, stores and clusters;
* ``lr_sweep`` (:mod:`.lr_sweep`): each architecture at its own best learning rate (the papers' Fig. 8);
* ``convergence_rate`` (:mod:`.convergence_rate`): full-batch GD against Theorem 4.3's linear rate;
* ``ensemble_search`` (:mod:`.ensemble_search`, study-level): ensembles of the trained space's best
  cells, predicted cheaply, the most promising few trained (the papers' Table 1 remedy, searched).

A plug-in adds a kind with :func:`trilemma.study.register_task` from a module named in the
study's ``plugins``; :func:`trilemma.testing.check_task_kind` checks it.
"""

from trilemma.study._task_api import TaskKind, register_task
from trilemma.study.tasks.convergence_rate import ConvergenceRateOptions, ConvergenceRateTask
from trilemma.study.tasks.ensemble_search import EnsembleSearchOptions, EnsembleSearchTask
from trilemma.study.tasks.lookup import LookupOptions, LookupTask
from trilemma.study.tasks.lr_sweep import LRSweepOptions, LRSweepTask
from trilemma.study.tasks.measures import MeasuresTask, init_seed, measure_batch, measure_columns
from trilemma.study.tasks.probe import ProbeOptions, ProbeTask
from trilemma.study.tasks.suite import SuiteOptions, SuiteTask
from trilemma.study.tasks.theory import TheoryTask
from trilemma.study.tasks.train import TrainTask, train_columns, train_payload

__all__ = [
    "BUILTIN_TASKS",
    "ConvergenceRateOptions",
    "ConvergenceRateTask",
    "EnsembleSearchOptions",
    "EnsembleSearchTask",
    "LRSweepOptions",
    "LRSweepTask",
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
BUILTIN_TASKS: tuple[TaskKind, ...] = (TheoryTask(), MeasuresTask(), TrainTask(), LookupTask(), ProbeTask(), SuiteTask(),
                                        LRSweepTask(), ConvergenceRateTask(), EnsembleSearchTask())

for _kind in BUILTIN_TASKS:
    register_task(_kind)
