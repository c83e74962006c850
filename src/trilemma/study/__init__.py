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
    >>> df.attrs["schema"].names(kind="trained")                   # doctest: +SKIP

The results table's columns are declared by the space and the task kinds (a
:class:`~trilemma._schema.ResultSchema` stored with the study; ``load_results(...).attrs["schema"]``).
"""

from trilemma.study._config import (
    AnalysisConfig,
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
from trilemma.study._context import TaskContext
from trilemma.study._executors import (
    Executor,
    LocalExecutor,
    RayExecutor,
    SerialExecutor,
    get_executor,
    list_executors,
    make_executor,
    register_executor,
    unregister_executor,
)
from trilemma.study._results import (
    EXPORT_FORMATS,
    StudyStatus,
    export_study,
    load_curves,
    load_metadata,
    load_outputs,
    load_results,
    load_schema,
    resolve_store,
    study_status,
    to_nb_suite_zero,
)
from trilemma.study._runner import (
    KindProgress,
    Progress,
    StudyPlan,
    StudySummary,
    plan_study,
    result_schema,
    run_study,
)
from trilemma.study._spaces import CallableSpace, make_space
from trilemma.study._store import SCHEMA_VERSION, Store, StoredRow
from trilemma.study._task_api import (
    STATUSES,
    Job,
    Outcome,
    TaskKey,
    TaskKind,
    TaskOutput,
    get_task,
    list_tasks,
    register_task,
    unregister_task,
)
from trilemma.study._worker import execute_job

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
    "AnalysisConfig",
    "ExecutorConfig",
    "load_config",
    "parse_config",
    # running
    "run_study",
    "plan_study",
    "result_schema",
    "StudyPlan",
    "StudySummary",
    "KindProgress",
    "Progress",
    # results
    "load_results",
    "load_curves",
    "load_metadata",
    "load_outputs",
    "load_schema",
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
    # task kinds
    "TaskKind",
    "TaskKey",
    "TaskOutput",
    "TaskContext",
    "Job",
    "Outcome",
    "register_task",
    "unregister_task",
    "get_task",
    "list_tasks",
    "execute_job",
    # spaces
    "CallableSpace",
    "make_space",
    # executors
    "Executor",
    "SerialExecutor",
    "LocalExecutor",
    "RayExecutor",
    "make_executor",
    "register_executor",
    "unregister_executor",
    "list_executors",
    "get_executor",
]
