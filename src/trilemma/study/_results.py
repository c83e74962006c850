"""Reading a study back: the results table, training curves, status and exports.

``load_results(study)`` returns one row per ``(arch, dataset, seed)``; its columns are those of
the :class:`~trilemma._schema.ResultSchema` stored with the study (declared by the space and by
every task kind at planning, where two producers of one name are an error), attached as
``df.attrs["schema"]`` with each column's kind, label, unit and directions. Reading never runs
code named by the store (no plug-in is imported): descriptive columns, the schema and which
task kinds are seed-free are all stored at run time.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trilemma._outputs import check_output_file
from trilemma._schema import Column, ResultSchema
from trilemma.errors import ConfigError, InvalidArgumentError, SchemaError, StoreError, TrilemmaError
from trilemma.study._config import StudyConfig, load_config
from trilemma.study._plugins import is_object_ref
from trilemma.study._spaces import make_space
from trilemma.study._store import Store, StoredRow
from trilemma.study._task_api import RESERVED_KEYS, TaskKey

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "resolve_store",
    "open_study",
    "load_results",
    "load_curves",
    "load_metadata",
    "load_schema",
    "study_status",
    "StudyStatus",
    "load_outputs",
    "export_study",
    "to_nb_suite_zero",
    "EXPORT_FORMATS",
]

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("csv", "parquet", "json")


def resolve_store(study: str | Path | StudyConfig) -> Path:
    """The store path of a study given as a config, a TOML path, a store path or a name.

    Raises:
        StoreError: Nothing matching exists.
    """
    if isinstance(study, StudyConfig):
        return study.store_path()
    p = Path(study)
    if p.suffix.lower() == ".toml":
        return load_config(p).store_path()
    if p.exists():
        return p
    by_name = Path("runs") / f"{p.name}.sqlite"
    if not p.suffix and by_name.exists():
        return by_name
    raise StoreError(
        f"no study store for {str(study)!r}: give a study .toml, a store .sqlite path, or the name of a "
        f"study in runs/ (looked at {str(p)!r}{'' if p.suffix else f' and {str(by_name)!r}'})"
    )


def open_study(study: str | Path | StudyConfig) -> tuple[Store, StudyConfig | None]:
    """Open a study's store read-only, with the config of its latest run (if readable)."""
    store = Store(resolve_store(study), readonly=True)
    text = store.meta().get("config")
    config = None
    if text:
        try:
            config = StudyConfig.from_json(text)
        except Exception as err:  # noqa: BLE001 - a store written by another version
            logger.warning("cannot read the config stored in %s: %s", store.path, err)
    return store, config


def _seed_free(task: str, rows: list[StoredRow]) -> bool:
    try:
        from trilemma.study._task_api import get_task

        return not get_task(task).uses_seed
    except KeyError:
        return all(r.seed == 0 for r in rows)


def _space_columns(store: Store, config: StudyConfig | None, archs: list[str]) -> dict[str, dict[str, Any]]:
    """Each architecture's descriptive columns, from the store alone.

    The run records them (``archs`` table); reading never imports the space's code, so a
    store from someone else cannot make ``export`` or ``report`` run anything. A store
    written before they were recorded (schema version 1) gets them recomputed only for a
    built-in space, whose code is trilemma's own.
    """
    stored = store.arch_columns()
    if stored is not None:
        return {a: stored[a] for a in archs if a in stored}
    if config is None or is_object_ref(config.space.name) or config.plugins:
        if config is not None:
            logger.warning("store %s has no recorded architecture columns and names a plug-in space; "
                           "run the study once with this trilemma version to record them", store.path)
        return {}
    try:
        space = make_space(config.space, config.base_dir)
        return {a: space.describe(a) for a in archs}
    except TrilemmaError as err:
        logger.warning("architecture columns unavailable (space %r): %s", config.space.name, err)
        return {}


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def load_schema(study: str | Path | StudyConfig) -> ResultSchema | None:
    """The result schema stored with a study (``None`` for a store written before schemas)."""
    store, _ = open_study(study)
    with store:
        return _stored_schema(store)


def _stored_schema(store: Store) -> ResultSchema | None:
    text = store.meta().get("result_schema")
    if not text:
        return None
    try:
        return ResultSchema.from_json(text)
    except SchemaError as err:
        logger.warning("the result schema stored in %s is unreadable (%s); columns carry no metadata", store.path, err)
        return None


def _task_kinds(store: Store) -> dict[str, dict[str, bool]]:
    text = store.meta().get("task_kinds")
    try:
        return dict(json.loads(text)) if text else {}
    except ValueError:
        return {}


def load_results(study: str | Path | StudyConfig, *, include_stale: bool = False) -> pd.DataFrame:
    """The study's results as one table, its columns described by ``df.attrs["schema"]``.

    One row per ``(arch, dataset, seed)``; dataset-free tasks (``theory``, ``lookup``) are
    broadcast to every dataset and seed; an architecture without data-bound tasks (a study
    without any, or one whose measures cover a sample of the space) has one row per seed of
    its tasks, with an empty ``dataset``. Columns: ``arch``, ``dataset``, ``seed``, then the columns of
    the study's :class:`~trilemma._schema.ResultSchema` in its order (the space's descriptive
    columns, ``width`` and ``params``, each task kind's results, ``<kind>_status`` and
    ``<kind>_seconds``), then payload values a kind did not declare, then ``status``
    (``failed`` if any task of the row failed, else ``pending``/``running`` if any is not
    done, else ``diverged`` if training diverged, else ``complete``). Values that could not be
    computed are missing, never silently zero.

    Reading runs no code named by the store: descriptive columns and the schema come from
    the store.

    Args:
        study: A config, a TOML path, a store path, or a study name in ``runs/``.
        include_stale: Also rows of an older config (not in the latest run's plan).

    Raises:
        StoreError: No store, or a store of another schema version.
    """
    import pandas as pd

    store, config = open_study(study)
    with store:
        rows = store.rows(include_stale=include_stale)
        order = store.arch_columns()
        space_cols = _space_columns(store, config, list(dict.fromkeys(r.arch for r in rows)))
        schema = _stored_schema(store) or ResultSchema()
        kinds = _task_kinds(store)
    by_task: dict[str, list[StoredRow]] = {}
    for r in rows:
        by_task.setdefault(r.task, []).append(r)
    lookup = {r.key: r for r in rows}
    # the row index: (arch, dataset, seed) of data-bound tasks, else of all tasks; an architecture
    # that only dataset-free tasks cover (a measured sample beside the closed form of a whole
    # space) keeps its own row, never dropped
    bound = sorted({(r.arch, r.dataset, r.seed) for r in rows if r.dataset})
    bound_archs = {a for a, _, _ in bound}
    index = bound + sorted({(r.arch, r.dataset, r.seed) for r in rows if r.arch not in bound_archs})
    arch_order: dict[str, float] = {a: i for i, a in enumerate(order or {})}
    index.sort(key=lambda t: (t[1], t[2], arch_order.get(t[0], math.inf), t[0]))
    seed_free = {t: (not kinds[t]["uses_seed"]) if t in kinds else _seed_free(t, rs) for t, rs in by_task.items()}
    task_order = sorted(by_task, key=lambda t: ({"theory": 0, "measures": 1, "train": 2}.get(t, 3), t))

    keep_seed = bool(bound) or not all(seed_free.values())
    records = []
    undeclared: dict[str, Column] = {}
    clashes: dict[str, set[str]] = {}
    for arch, dataset, seed in index:
        rec: dict[str, Any] = {"arch": arch, "dataset": dataset or None, "seed": seed if keep_seed else None}
        rec.update(space_cols.get(arch, {}))
        produced: dict[str, str] = {}
        statuses: dict[str, str] = {}
        for task in task_order:
            candidates = [TaskKey(arch, task, dataset, seed), TaskKey(arch, task, "", seed)]
            if seed_free[task]:
                candidates += [TaskKey(arch, task, dataset, 0), TaskKey(arch, task, "", 0)]
            row = next((lookup[k] for k in candidates if k in lookup), None)
            if row is None:
                continue
            statuses[task] = row.status
            rec[f"{task}_status"] = row.status
            rec[f"{task}_seconds"] = row.seconds
            payload = row.result()
            for k, v in (payload.get("info") or {}).items():
                if k in ("width", "params") and _scalar(v):
                    rec.setdefault(k, v)
            for k, v in payload.items():
                if k in RESERVED_KEYS or not _scalar(v):
                    continue
                owner = produced.get(k)
                if owner is not None and owner != task:  # never renamed: the first producer keeps it
                    clashes.setdefault(k, set()).update({owner, task})
                    continue
                produced[k] = task
                rec[k] = v
                if k not in schema and k not in undeclared:
                    undeclared[k] = Column(k, "init" if task == "measures" else "info", _dtype(v),
                                           source=task, description="a payload value its task kind did not declare")
        rec["status"] = _combined(statuses)
        records.append(rec)
    for k, owners in clashes.items():
        logger.warning("column %r is produced by several task kinds (%s); the table keeps %s's value",
                       k, ", ".join(sorted(owners)), next(iter(sorted(owners))))
    full = schema.merged(undeclared.values())
    if not records:
        df = pd.DataFrame(columns=["arch", "dataset", "seed", "status"])
        df.attrs["schema"] = full
        return df
    present: dict[str, None] = dict.fromkeys(k for rec in records for k in rec)
    columns = ["arch", "dataset", "seed", *[c.name for c in full if c.name in present],
               *[k for k in present if k not in full and k not in ("arch", "dataset", "seed", "status")], "status"]
    df = pd.DataFrame.from_records(records, columns=columns)
    df.attrs["schema"] = full
    return df


def _dtype(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float) or value is None:
        return "float"
    return "str"


def _combined(statuses: Mapping[str, str]) -> str:
    values = set(statuses.values())
    if not values:
        return "pending"
    if "failed" in values:
        return "failed"
    for s in ("running", "pending"):
        if s in values:
            return s
    if "diverged" in values:
        return "diverged"
    return "complete"


def load_curves(study: str | Path | StudyConfig, task: str | None = None) -> pd.DataFrame:
    """Per-epoch curves of every task that stored some (``train``: losses and accuracies).

    Returns:
        Long table with columns ``arch``, ``dataset``, ``seed``, ``task``, ``epoch``
        (1-based) and one column per curve (e.g. ``train_loss``, ``test_loss``,
        ``train_acc``, ``test_acc``).
    """
    import pandas as pd

    store, _ = open_study(study)
    with store:
        rows = store.rows(status=("complete", "diverged"), task=task)
    frames = []
    for r in rows:
        curves = r.result().get("curves") or {}
        if not curves:
            continue
        n = max(len(v) for v in curves.values())
        data: dict[str, Any] = {"arch": r.arch, "dataset": r.dataset or None, "seed": r.seed, "task": r.task,
                                "epoch": range(1, n + 1)}
        for k, v in curves.items():
            data[k] = list(v) + [None] * (n - len(v))
        frames.append(pd.DataFrame(data))
    if not frames:
        return pd.DataFrame(columns=["arch", "dataset", "seed", "task", "epoch"])
    return pd.concat(frames, ignore_index=True)


@dataclass
class StudyStatus:
    """Counts and failures of a study.

    Attributes:
        name: Study name (from the store).
        store: Store path.
        counts: ``{status: rows}``.
        by_task: ``{task: {status: rows}}``.
        failures: ``(task key, first error line)`` of every failed row.
        meta: The store's meta entries (without the config text).
        live: A run holds the store's lock right now. When it does not, ``running`` rows
            were left by a run that died: they are :attr:`interrupted` and the next run
            resumes them.
        stale: Rows of an older config, not counted above (``include_stale=True`` counts them).
    """

    name: str
    store: Path
    counts: dict[str, int]
    by_task: dict[str, dict[str, int]]
    failures: list[tuple[TaskKey, str]] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    live: bool = False
    stale: int = 0

    @property
    def interrupted(self) -> int:
        """Rows left ``running`` by a run that is no longer alive (resumable)."""
        return 0 if self.live else self.counts.get("running", 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> bool:
        """Every task is final (complete or diverged)."""
        return self.total > 0 and self.counts["complete"] + self.counts["diverged"] == self.total


def study_status(study: str | Path | StudyConfig, *, include_stale: bool = False) -> StudyStatus:
    """Counts by status (overall and per task kind) and the failures with their first error line.

    Args:
        study: A config, a TOML path, a store path or a study name.
        include_stale: Also count rows of an older config (hidden by default).
    """
    from trilemma.study._runner import first_error_line

    store, _ = open_study(study)
    with store:
        meta = store.meta()
        failures = [(r.key, first_error_line(r.error))
                    for r in store.rows(status="failed", include_stale=include_stale)]
        return StudyStatus(
            name=meta.get("study", "?"), store=store.path, counts=store.counts(include_stale=include_stale),
            by_task=store.counts_by_task(include_stale=include_stale), failures=failures,
            meta={k: v for k, v in meta.items() if k != "config"}, live=store.is_locked(),
            stale=0 if include_stale else store.stale_count(),
        )


def load_outputs(study: str | Path | StudyConfig, kind: str | None = None) -> list[dict[str, Any]]:
    """The outputs of the study's study-level task kinds (e.g. ``ensemble_search``).

    Args:
        study: A config, a TOML path, a store path, or a study name in ``runs/``.
        kind: Only this kind's outputs.

    Returns:
        One dict per (kind, dataset, seed), sorted: ``kind``, ``dataset``, ``seed``, ``status``
        (``complete`` / ``failed``), ``payload`` (the kind's JSON output; absent when failed),
        ``error`` (the traceback when failed), ``started_at``, ``finished_at``, ``seconds``, ``hash``.

    Raises:
        StoreError: No store, or an unreadable one.
    """
    store, _ = open_study(study)
    with store:
        meta = store.meta()
    out = []
    for key, text in sorted(meta.items()):
        if not key.startswith("output:"):
            continue
        name = key[len("output:"):].split(":", 1)[0]
        if kind is not None and name != kind:
            continue
        try:
            record = json.loads(text)
        except ValueError:
            logger.warning("unreadable output %s in %s", key, store.path)
            continue
        out.append({"kind": name, **record})
    return out


def load_metadata(study: str | Path | StudyConfig) -> dict[str, Any]:
    """What was run, for reports: config, versions, data, seeds, counts and times.

    Returns:
        ``study``, ``description``, ``store``, ``space``, ``archs`` (number), ``datasets``,
        ``seeds``, ``tasks`` (kinds), ``model`` (settings), ``trilemma_versions`` (versions
        that computed the stored results), ``created_at``, ``last_run_started``,
        ``last_run_finished``, ``compute_seconds`` (sum of task seconds), ``wall_seconds``
        (first task start to last task end), ``counts`` and ``config`` (the config as a dict).
    """
    import platform

    store, config = open_study(study)
    with store:
        meta = store.meta()
        rows = store.rows()
        counts = store.counts()
    started = [r.started_at for r in rows if r.started_at]
    finished = [r.finished_at for r in rows if r.finished_at]
    wall = None
    if started and finished:
        from datetime import datetime

        wall = (datetime.fromisoformat(max(finished)) - datetime.fromisoformat(min(started))).total_seconds()
    out: dict[str, Any] = {
        "study": meta.get("study"),
        "description": config.description if config else "",
        "store": str(store.path),
        "space": config.space.name if config else None,
        "archs": len({r.arch for r in rows}),
        "datasets": sorted({r.dataset for r in rows if r.dataset}),
        "seeds": sorted({r.seed for r in rows}),
        "tasks": sorted({r.task for r in rows}),
        "model": config.model.model_dump(mode="json") if config else None,
        "trilemma_versions": sorted({r.version for r in rows if r.version}),
        "python": platform.python_version(),
        "created_at": meta.get("created_at"),
        "last_run_started": meta.get("last_run_started"),
        "last_run_finished": meta.get("last_run_finished"),
        "compute_seconds": sum(r.seconds or 0.0 for r in rows),
        "wall_seconds": wall,
        "counts": counts,
        "config": json.loads(meta["config"]) if meta.get("config") else None,
    }
    return out


# --------------------------------------------------------------------------- export


def _mean(values: list[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
            and v is not None and math.isfinite(float(v))]
    return sum(nums) / len(nums) if nums else None


def to_nb_suite_zero(study: str | Path | StudyConfig) -> dict[str, dict[str, dict[str, Any]]]:
    """The results in NAS-Bench-Suite-Zero's layout: ``{dataset: {arch: {...}}}``.

    Each architecture's entry holds every indicator (theory and measure values, and
    numeric results of plug-in indicator tasks) as ``{"score": value, "time": seconds}``,
    the accuracy fields ``val_accuracy`` / ``test_accuracy`` / ``train_accuracy`` (final
    accuracies in percent, as NAS-Bench-201 reports them; the study's test split serves as
    validation split), the other trained metrics and topology columns as plain numbers, and
    ``id`` (the architecture's index in its space when known). With several seeds, values
    are averaged over seeds (``"seeds"`` gives their number). Dataset-free studies use the
    dataset key ``"none"``.
    """
    store, config = open_study(study)
    with store:
        rows = store.rows(status=("complete", "diverged"))
        archs = list(dict.fromkeys(r.arch for r in rows))
        space_cols = _space_columns(store, config, archs)
    datasets = sorted({r.dataset for r in rows if r.dataset}) or [""]
    seed_free = {t: _seed_free(t, [r for r in rows if r.task == t]) for t in {r.task for r in rows}}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for dataset in datasets:
        entries: dict[str, dict[str, Any]] = {}
        for arch in archs:
            mine = [r for r in rows if r.arch == arch and r.dataset in (dataset, "")]
            if not mine:
                continue
            entry: dict[str, Any] = {}
            cols = space_cols.get(arch, {})
            if "index" in cols:
                entry["id"] = cols["index"]
            for k, v in cols.items():
                if k != "index" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    entry[k] = v
            scores: dict[str, list[Any]] = {}
            times: dict[str, list[Any]] = {}
            plain: dict[str, list[Any]] = {}
            seeds: set[int] = set()
            for r in mine:
                payload = r.result()
                if not seed_free.get(r.task, True):
                    seeds.add(r.seed)
                indicator = r.task != "train"
                for k, v in payload.items():
                    if k in RESERVED_KEYS or k.endswith("_time") or isinstance(v, (str, bool)) or not _scalar(v):
                        continue
                    if indicator and not k.endswith("_std") and not k.endswith("_error"):
                        scores.setdefault(k, []).append(v)
                        t = payload.get(f"{k}_time", r.seconds)
                        times.setdefault(k, []).append(t)
                    else:
                        plain.setdefault(k, []).append(v)
                for k, v in (payload.get("info") or {}).items():
                    if k in ("width", "params"):
                        plain.setdefault(k, []).append(v)
            for k, vs in scores.items():
                entry[k] = {"score": _mean(vs), "time": _mean(times[k])}
            for k, vs in plain.items():
                entry[k] = _mean(vs)
            for src, dst in (("final_test_acc", "val_accuracy"), ("final_test_acc", "test_accuracy"),
                             ("final_train_acc", "train_accuracy")):
                if entry.get(src) is not None:
                    entry[dst] = 100.0 * entry[src]
            if seeds:
                entry["seeds"] = len(seeds)
            entries[arch] = entry
        out[dataset or "none"] = entries
    return out


def export_study(
    study: str | Path | StudyConfig, format: str = "csv", out: str | Path | None = None, *,
    include_stale: bool = False,
) -> Path:
    """Write the study's results to a file.

    Args:
        study: A config, a TOML path, a store path or a study name.
        format: ``"csv"`` or ``"parquet"`` (the :func:`load_results` table) or ``"json"``
            (NAS-Bench-Suite-Zero layout, :func:`to_nb_suite_zero`).
        out: Output path (default: next to the store, ``<store stem>.<format>``). Outputs
            are overwritten; a study store or a file of another kind never is.
        include_stale: Also rows of an older config (csv / parquet).

    Returns:
        The path written.

    Raises:
        InvalidArgumentError: Unknown format.
        StoreError: No store.
        ConfigError: Parquet requested without pyarrow installed.
        OutputPathError: ``out`` is a study store (or one of its files), a folder, or an
            existing file that is not an earlier export of this format.
    """
    if format not in EXPORT_FORMATS:
        raise InvalidArgumentError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    store_path = resolve_store(study)
    if out is not None:
        path = Path(out)
    else:  # next to the store; never the store itself (a store may be named x.csv)
        path = store_path.with_suffix(f".{format}")
        if path.resolve() == store_path.resolve():
            path = store_path.with_name(f"{store_path.name}.{format}")
    check_output_file(path, format, header="arch" if format == "csv" else None, what="export --out")
    if format == "json":
        data = to_nb_suite_zero(store_path)
        path.write_text(json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
        return path
    df = load_results(store_path, include_stale=include_stale)
    if format == "csv":
        df.to_csv(path, index=False, lineterminator="\n")
    else:
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            raise ConfigError("parquet export needs pyarrow: pip install 'trilemma[parquet]'")
        schema = df.attrs.get("schema")
        df.attrs = {"trilemma_result_schema": schema.to_json()} if isinstance(schema, ResultSchema) else {}
        df.to_parquet(path, index=False)  # the schema travels in the file's metadata
    return path
