"""Studies: one config runs a whole analysis — resumable, parallel, reproducible.

A *study* is a TOML file naming an architecture space (or a subset of it), how models are
built, the datasets, and what to compute for every architecture: closed-form ``theory``,
``measures`` at initialization, ground-truth ``train``-ing, or plug-in task kinds. Running
it fills a SQLite store (``runs/<name>.sqlite``) with one row per (architecture, task,
dataset, seed); a re-run skips what is done, so a killed study resumes where it stopped.
Tasks run serially, in local worker processes, or on a Ray cluster; the driver alone
writes the store.

Example:
    >>> from trilemma.study import run_study, load_results      # doctest: +SKIP
    >>> summary = run_study("examples/nfl_digits.toml")          # doctest: +SKIP
    >>> df = load_results("examples/nfl_digits.toml")            # doctest: +SKIP
    >>> df[["arch", "P", "mean_depth", "ntk_bound", "convergence_epoch"]].head()  # doctest: +SKIP

The results table's columns are documented in :mod:`trilemma.study._results`.
"""

from trilemma.study._config import (
    DataConfig,
    ExecutorConfig,
    MeasuresConfig,
    ModelConfig,
    SampleConfig,
    SpaceConfig,
    StudyConfig,
    TheoryConfig,
    TrainingConfig,
    load_config,
    parse_config,
)
from trilemma.study._executors import Executor, LocalExecutor, RayExecutor, SerialExecutor, make_executor
from trilemma.study._results import (
    EXPORT_FORMATS,
    StudyStatus,
    export_study,
    load_curves,
    load_metadata,
    load_results,
    resolve_store,
    study_status,
    to_nb_suite_zero,
)
from trilemma.study._runner import Progress, StudyPlan, StudySummary, plan_study, run_study
from trilemma.study._spaces import CallableSpace, DagSpace, StudySpace, list_spaces, register_space
from trilemma.study._store import SCHEMA_VERSION, Store, StoredRow
from trilemma.study._tasks import (
    STATUSES,
    Job,
    Outcome,
    TaskContext,
    TaskKey,
    TaskKind,
    TaskOutput,
    execute_job,
    get_task,
    list_tasks,
    register_task,
)

__all__ = [
    # config
    "StudyConfig",
    "SpaceConfig",
    "SampleConfig",
    "ModelConfig",
    "DataConfig",
    "TheoryConfig",
    "MeasuresConfig",
    "TrainingConfig",
    "ExecutorConfig",
    "load_config",
    "parse_config",
    # running
    "run_study",
    "plan_study",
    "StudyPlan",
    "StudySummary",
    "Progress",
    # results
    "load_results",
    "load_curves",
    "load_metadata",
    "study_status",
    "StudyStatus",
    "export_study",
    "to_nb_suite_zero",
    "resolve_store",
    "EXPORT_FORMATS",
    # store
    "Store",
    "StoredRow",
    "SCHEMA_VERSION",
    "STATUSES",
    # plug-ins
    "TaskKind",
    "TaskKey",
    "TaskOutput",
    "TaskContext",
    "Job",
    "Outcome",
    "register_task",
    "get_task",
    "list_tasks",
    "execute_job",
    "StudySpace",
    "DagSpace",
    "CallableSpace",
    "register_space",
    "list_spaces",
    # executors
    "Executor",
    "SerialExecutor",
    "LocalExecutor",
    "RayExecutor",
    "make_executor",
]
