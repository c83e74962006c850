"""The ``ensemble_search`` study-level kind: a cheap search for a better remedy than the paper's pair.

Chen, Huang & Wang (AutoML-Conf 2023, Table 1) hand-pick one ensemble — a wide-shallow and a
deep-narrow cell, pruned at 20 % and 50 % — and show that it beats the best single cell's rank
sum. This kind searches that design space on the study's own results, training only a few
candidates:

1. **Members**: the ``top_k`` single cells on each axis of the trained space (the reference
   rows, ranked by each axis's ground truth), plus ``include``.
2. **Candidates**: every ensemble of ``sizes`` distinct members (pairs; triples with
   ``sizes = [2, 3]``) with every combination of pruning ``ratios``, kept when its effective
   parameter count is within the ``budget`` (default: no more than the best single cell's).
3. **Prediction**: one random forest per axis (scikit-learn, seeded) maps cheap features to
   the rank among the single cells; it is fitted on every trained row of the study (single
   cells and the study's own ensembles). Features, all available without training the
   candidate: the closed-form columns of the candidate (the paper's bounds over the union's
   paths, the pruning-aware exact kernels, effective parameters), its topology and pruning,
   the smallest and largest closed-form value over its members, and — when the study has a
   ``[measures]`` section and ``measures = true`` — its measures at initialization, computed
   exactly as the ``measures`` task computes them. Measuring every candidate at init would cost
   more than the rest of the search, so every candidate is first predicted from the closed-form
   features alone and only the ``prefilter`` best are measured and predicted again with every
   feature (``stage`` 2 in the output). A 5-fold cross-validation over the study's ensembles
   says how well the predictor transfers to ensembles.
4. **Training**: the ``train`` candidates with the best predicted rank sum (ties: fewer
   parameters) that the study has not trained already are trained with the study's
   ``[training]`` protocol and seed, as one batched computation, and ranked among the single
   cells on the same ground truths.

The output (``trilemma.study.load_outputs``) lists the members, the candidates with their
predicted ranks, the trained ones with predicted and trained ranks, and the best ensemble
found, next to the best single cell (row I).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trilemma._schema import AXES
from trilemma._stats import kendall_tau, placed_rank
from trilemma.errors import ConfigError, InvalidArgumentError
from trilemma.study._config import StudyConfig
from trilemma.study._context import TaskContext
from trilemma.study._task_api import TaskKind, get_task

__all__ = ["EnsembleSearchOptions", "EnsembleSearchTask", "live_key"]

logger = logging.getLogger(__name__)

#: Closed-form columns whose smallest and largest value over the members are features.
_MEMBER_FEATURES = ("jacobian_path_sum", "nngp_bound", "ntk_bound", "exact_nngp_lambda_min", "exact_ntk_lambda_min")
_OWN_FEATURES = ("jacobian_path_sum", "nngp_bound", "ntk_bound", "gen_indicator", "exact_nngp_lambda_min",
                 "exact_ntk_lambda_min", "effective_params")


class EnsembleSearchOptions(BaseModel):
    """Options of ``[tasks.ensemble_search]`` (module docstring).

    Attributes:
        top_k: Single cells taken per axis as members.
        include: Further member cells.
        sizes: Ensemble sizes (2: pairs, 3: triples).
        ratios: Pruning ratios tried for every member.
        budget: ``"best_single"`` (the effective parameters of the best single cell) or a number.
        train: Candidates trained.
        measures: Use the study's measures at initialization as features.
        prefilter: With measures, only this many candidates — the best of a prediction from the
            closed-form features alone — are measured at initialization and re-predicted.
        trees: Trees per random forest.
        seed: Seed of the forests and the cross-validation split.
        max_candidates: Refuse a search with more candidates within budget than this.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    top_k: int = Field(3, ge=1, le=50)
    include: tuple[str, ...] = ()
    sizes: tuple[int, ...] = (2,)
    ratios: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6)
    budget: str | int = "best_single"
    train: int = Field(4, ge=0, le=256)
    measures: bool = True
    prefilter: int = Field(24, ge=1, le=100_000)
    trees: int = Field(200, ge=10, le=5000)
    seed: int = 0
    max_candidates: int = Field(20_000, ge=1)

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(s < 2 or s > 4 for s in v):
            raise ValueError(f"must list ensemble sizes between 2 and 4, got {list(v)}")
        return tuple(sorted(set(v)))

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(not 0 <= r < 1 for r in v):
            raise ValueError(f"must list pruning ratios in [0, 1), got {list(v)}")
        return tuple(sorted(set(v)))

    @field_validator("budget")
    @classmethod
    def _budget(cls, v: str | int) -> str | int:
        if v == "best_single" or (isinstance(v, int) and not isinstance(v, bool) and v > 0):
            return v
        raise ValueError(f"must be 'best_single' or a positive number of parameters, got {v!r}")


def _objectives(config: StudyConfig, schema: Any) -> dict[str, tuple[str, bool]]:
    """``{axis: (ground-truth column, higher is better)}`` from the schema and ``[analysis] axes``."""
    out = {}
    for axis in AXES:
        col = config.analysis.axes.get(axis) or schema.ground_truth(axis)
        if col is None:
            raise ConfigError(f"tasks.ensemble_search: the study has no ground truth for {axis} (add [training])")
        out[axis] = (col, schema.get(col).higher_is_better(axis))
    return out


def _float(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) else math.nan


def live_key(spec: Any) -> tuple[Any, ...]:
    """What an ensemble computes, up to edges the output never depends on: each member's ops with
    the edges into or out of a dead node zeroed (a node is live when the union multigraph joins it
    to the input and to the output), with the member's ratio, in member order (it fixes how the
    weights are drawn), then the stem and readout ratios. Ensembles with one key differ only in
    dead edges (e.g. ``0_20_002`` and ``0_20_012``: node 1 has no input) and build the same
    network from one seed, so the search keeps one of them.
    """
    edges = [(s, t) for s, t, op, _ in spec.edges() if op]
    h = spec.nodes
    fwd, bwd = {0}, {h}
    for s, t in sorted(edges):
        if s in fwd:
            fwd.add(t)
    for s, t in sorted(edges, key=lambda e: -e[0]):
        if t in bwd:
            bwd.add(s)
    live = fwd & bwd
    members = tuple((tuple(op if s in live and t in live else 0 for s, t, op in m.cell.edges()), m.ratio)
                    for m in spec.members)
    return (members, spec.stem_ratio, spec.readout_ratio)


class EnsembleSearchTask(TaskKind):
    """Search ensembles of the trained space's best cells, predict cheaply, train the best few."""

    name = "ensemble_search"
    study_level = True
    options_model = EnsembleSearchOptions
    requires = frozenset({"closed_form_theory"})

    def validate(self, config: StudyConfig, archs: Sequence[str]) -> list[str]:
        lines = super().validate(config, archs)
        if config.training is None:
            lines.append("tasks.ensemble_search: needs a [training] section (the ground truth it ranks by and the "
                         "protocol it trains candidates with)")
        return lines

    # ------------------------------------------------------------------ features
    @staticmethod
    def _measure_names(ctx: TaskContext, options: EnsembleSearchOptions) -> tuple[str, ...]:
        mopts = ctx.config.measures
        if options.measures and mopts is not None and mopts.enabled:
            return tuple(mopts.names)
        return ()

    @staticmethod
    def _feature_names(measure_names: Sequence[str]) -> list[str]:
        return [*_OWN_FEATURES, "P", "mean_depth", "members", "max_ratio", "mean_ratio",
                *[f"{f}_{agg}" for f in _MEMBER_FEATURES for agg in ("min", "max")], *measure_names]

    @staticmethod
    def _theory(ctx: TaskContext, arch: str, dataset: str, cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The space's closed-form row of ``arch`` with the study's theory options (cached)."""
        if arch not in cache:
            in_features, num_classes = ctx.shape(dataset)
            theory_opts = dict(ctx.config.theory.options) if ctx.config.theory is not None else {}
            cache[arch] = ctx.space.theory(arch, width=ctx.width(arch, dataset), in_features=in_features,
                                           num_classes=num_classes, bias=ctx.config.model.bias, **theory_opts)
        return cache[arch]

    def _features(self, ctx: TaskContext, archs: Sequence[str], dataset: str, seed: int,
                  measure_names: Sequence[str], known: dict[str, dict[str, Any]],
                  cache: dict[str, dict[str, Any]]) -> list[list[float]]:
        """One feature vector per arch: closed form, topology, members, then ``measure_names``
        (read from ``known`` when the study measured the arch, else measured here)."""
        space = ctx.space

        def theory(arch: str) -> dict[str, Any]:
            return self._theory(ctx, arch, dataset, cache)

        mopts = ctx.config.measures
        measures_kind = get_task("measures") if measure_names else None
        rows = []
        for arch in archs:
            spec = space.spec(arch)
            own, topo = theory(arch), spec.topology
            vec = [_float(own.get(f)) for f in _OWN_FEATURES]
            vec += [float(topo.num_paths), _float(topo.mean_depth), float(spec.num_members), max(spec.ratios),
                    sum(spec.ratios) / spec.num_members]
            member_vals = [theory(c.name) for c in spec.cells]
            for f in _MEMBER_FEATURES:
                vals = [_float(m.get(f)) for m in member_vals]
                vec += [min(vals), max(vals)]
            if measure_names:
                got = known.get(arch, {})
                if not all(isinstance(got.get(n), (int, float)) for n in measure_names):
                    if measures_kind is None or mopts is None:
                        raise InvalidArgumentError("ensemble_search: measures asked for without a [measures] section")
                    out = measures_kind.run(ctx, arch, dataset, seed, mopts)
                    got = out if isinstance(out, dict) else out.payload
                vec += [_float(got.get(n)) for n in measure_names]
            rows.append(vec)
        return rows

    # ------------------------------------------------------------------ the search
    def run_study(self, ctx: TaskContext, results: Any, dataset: str, seed: int,
                  options: EnsembleSearchOptions) -> dict[str, Any]:
        import numpy as np

        t0 = time.perf_counter()
        schema = results.attrs.get("schema")
        if schema is None or schema.reference() is None:
            raise ConfigError("tasks.ensemble_search: the space declares no reference (single-cell) column; use "
                              "space.name = 'ensemble'")
        objs = _objectives(ctx.config, schema)
        ref_col = schema.reference()
        df = results[results["arch"].notna()].reset_index(drop=True)
        values = {a: np.array([_float(v) for v in df[c]]) for a, (c, _) in objs.items()}
        trained = np.all([np.isfinite(v) for v in values.values()], axis=0)
        ref = np.array([v is True or v == 1 for v in df[ref_col]]) & trained
        if ref.sum() < 3:
            cols = ", ".join(c for c, _ in objs.values())
            raise InvalidArgumentError(f"ensemble_search needs at least 3 single cells with a value of every ground "
                                       f"truth ({cols}); found {int(ref.sum())} (train longer?)")
        ranks = {a: placed_rank(values[a], values[a][ref], hib) for a, (_, hib) in objs.items()}
        rank_sum: Any = np.sum([ranks[a] for a in AXES], axis=0)
        archs = df["arch"].astype(str).tolist()
        ref_idx = [int(i) for i in np.flatnonzero(ref)]
        row_i = int(min(ref_idx, key=lambda i: (rank_sum[i], archs[i])))
        cache: dict[str, dict[str, Any]] = {}

        def effective(arch: str) -> int:
            return int(self._theory(ctx, arch, dataset, cache).get("effective_params")
                       or ctx.info(arch, dataset)["params"])

        budget = effective(archs[row_i]) if options.budget == "best_single" else int(options.budget)
        # members: the top_k single cells of every axis, then the included ones
        members: list[str] = []
        for a in AXES:
            order = sorted(ref_idx, key=lambda i, a=a: (ranks[a][i], rank_sum[i], archs[i]))  # type: ignore[misc]
            members += [archs[i] for i in order[: options.top_k]]
        members += [ctx.space.canonical(c) for c in options.include]
        members = list(dict.fromkeys(members))
        index = {a: i for i, a in enumerate(archs)}
        members.sort(key=lambda a: index.get(a, len(archs)))
        candidates: list[str] = []
        n_all = 0
        for size in options.sizes:
            for combo in itertools.combinations(members, size):
                for ratios in itertools.product(options.ratios, repeat=size):
                    n_all += 1
                    try:
                        name = ctx.space.canonical("+".join(f"{c}@{r:g}" if r else c for c, r in zip(combo, ratios)))
                    except ValueError:
                        continue  # e.g. a ratio on a member without linear edges
                    if effective(name) <= budget:
                        candidates.append(name)
        candidates = list(dict.fromkeys(candidates))
        seen: dict[tuple[Any, ...], str] = {}
        for name in candidates:  # one of each set that differs only in dead edges
            seen.setdefault(live_key(ctx.space.spec(name)), name)
        n_duplicates = len(candidates) - len(seen)
        candidates = list(seen.values())
        if len(candidates) > options.max_candidates:
            raise InvalidArgumentError(f"ensemble_search: {len(candidates)} candidates within budget exceed "
                                       f"max_candidates = {options.max_candidates}; lower top_k, sizes or ratios")
        logger.info("ensemble search: %d members, %d of %d candidates within %d parameters", len(members),
                    len(candidates), n_all, budget)
        # features of the trained rows and the candidates: closed form for every candidate, then
        # the measures at init for the `prefilter` best of a closed-form-only prediction
        known = {archs[i]: df.iloc[i].to_dict() for i in range(len(df))}
        fit_idx = np.flatnonzero(trained)
        fit_archs = [archs[i] for i in fit_idx]
        measure_names = self._measure_names(ctx, options)
        feat_names = self._feature_names(measure_names)
        n_cf = len(feat_names) - len(measure_names)
        Xf = np.array(self._features(ctx, fit_archs, dataset, seed, measure_names, known, cache), dtype=float)
        med = np.nanmedian(Xf, axis=0)
        med = np.where(np.isfinite(med), med, 0.0)
        Xf = np.where(np.isfinite(Xf), Xf, med)
        Y = {a: ranks[a][fit_idx] for a in AXES}
        cv = self._cross_validate(Xf, Y, ~ref[fit_idx], options)
        params = {c: effective(c) for c in candidates}
        Xc = np.array(self._features(ctx, candidates, dataset, seed, (), known, cache), dtype=float).reshape(
            len(candidates), n_cf)
        Xc = np.where(np.isfinite(Xc), Xc, med[:n_cf])
        pred = {a: self._forest(options).fit(Xf[:, :n_cf], Y[a]).predict(Xc) if len(Xc) else np.zeros(0)
                for a in AXES}
        stage = np.ones(len(candidates), dtype=int)
        if measure_names and len(candidates):
            first: Any = np.sum([pred[a] for a in AXES], axis=0)
            keep = sorted(range(len(candidates)), key=lambda j: (first[j], params[candidates[j]], candidates[j]))
            keep = keep[: options.prefilter]
            Xm = np.array(self._features(ctx, [candidates[j] for j in keep], dataset, seed, measure_names, known, cache),
                          dtype=float).reshape(len(keep), len(feat_names))
            Xm = np.where(np.isfinite(Xm), Xm, med)
            for a in AXES:
                pred[a][keep] = self._forest(options).fit(Xf, Y[a]).predict(Xm)
            stage[keep] = 2
        pred_sum: Any = np.sum([pred[a] for a in AXES], axis=0) if len(candidates) else np.zeros(0)
        order = sorted(range(len(candidates)), key=lambda j: (-stage[j], pred_sum[j], params[candidates[j]],
                                                               candidates[j]))
        front = self._pareto(np.column_stack([pred[a] for a in AXES]) if len(candidates) else np.zeros((0, 3)))
        top = [{"arch": candidates[j], "params": params[candidates[j]],
                **{f"pred_rank_{a}": float(pred[a][j]) for a in AXES}, "pred_rank_sum": float(pred_sum[j]),
                "stage": int(stage[j]), "pareto": bool(front[j]), "in_study": candidates[j] in index} for j in order]
        # train the most promising few the study has not trained
        chosen = [str(t["arch"]) for t in top if not t["in_study"]][: options.train]
        trained_rows = self._train(ctx, chosen, dataset, seed, objs, values, ref) if chosen else []
        by_arch = {t["arch"]: t for t in top}
        for row in trained_rows:
            row.update({k: v for k, v in by_arch[row["arch"]].items() if k.startswith("pred_")})
            row["params"] = params[row["arch"]]
        for t in top:  # candidates the study trained already: their trained ranks
            if t["in_study"]:
                i = index[t["arch"]]
                t.update({f"rank_{a}": _float(ranks[a][i]) for a in AXES}, rank_sum=_float(rank_sum[i]))
        evaluated = [r for r in trained_rows if math.isfinite(r["rank_sum"])]
        best = min(evaluated, key=lambda r: (r["rank_sum"], r["params"])) if evaluated else None

        def cell_row(i: int) -> dict[str, Any]:
            return {"arch": archs[i], "params": effective(archs[i]), **{f"rank_{a}": float(ranks[a][i]) for a in AXES},
                    "rank_sum": float(rank_sum[i])}

        study_best = None
        ens = [i for i in np.flatnonzero(trained & ~ref)]
        if ens:
            study_best = cell_row(int(min(ens, key=lambda i: (rank_sum[i], archs[i]))))
        return {
            "objectives": {a: c for a, (c, _) in objs.items()},
            "n_reference": int(ref.sum()),
            "row_I": cell_row(row_i),
            "budget": budget,
            "budget_rule": options.budget if isinstance(options.budget, str) else "fixed",
            "members": members,
            "n_combinations": n_all,
            "n_candidates": len(candidates),
            "n_dead_edge_duplicates": n_duplicates,
            "features": feat_names,
            "n_measured": int((stage == 2).sum()),
            "cv": cv,
            "top": top[:25],
            "trained": trained_rows,
            "tau_trained": kendall_tau([r["pred_rank_sum"] for r in evaluated], [r["rank_sum"] for r in evaluated])
            if len(evaluated) >= 3 else None,
            "best": best,
            "best_study_ensemble": study_best,
            "seconds": time.perf_counter() - t0,
        }

    @staticmethod
    def _forest(options: EnsembleSearchOptions) -> Any:
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(n_estimators=options.trees, min_samples_leaf=2, random_state=options.seed,
                                     n_jobs=1)

    def _cross_validate(self, X: Any, Y: dict[str, Any], ensembles: Any, options: EnsembleSearchOptions) -> dict[str, Any]:
        """5-fold CV predictions for the study's ensembles (the rest always in the fit)."""
        import numpy as np

        idx = np.flatnonzero(ensembles)
        if len(idx) < 5:
            return {"n": int(len(idx)), "tau_rank_sum": None, "tau": {}}
        rng = np.random.default_rng(options.seed)
        folds = np.array_split(rng.permutation(idx), 5)
        pred = {a: np.full(len(X), np.nan) for a in AXES}
        for fold in folds:
            keep = np.setdiff1d(np.arange(len(X)), fold)
            for a in AXES:
                pred[a][fold] = self._forest(options).fit(X[keep], Y[a][keep]).predict(X[fold])
        true_sum = np.sum([Y[a][idx] for a in AXES], axis=0)
        pred_sum = np.sum([pred[a][idx] for a in AXES], axis=0)
        return {"n": int(len(idx)), "tau_rank_sum": _float(kendall_tau(pred_sum, true_sum)),
                "tau": {a: _float(kendall_tau(pred[a][idx], Y[a][idx])) for a in AXES},
                "mean_abs_error_rank_sum": float(np.mean(np.abs(pred_sum - true_sum)))}

    @staticmethod
    def _pareto(P: Any) -> Any:
        """Rows of ``P`` (lower is better on every column) that no other row dominates."""
        import numpy as np

        n = len(P)
        out = np.ones(n, dtype=bool)
        for i in range(n):
            dominated = np.all(P <= P[i], axis=1) & np.any(P < P[i], axis=1)
            out[i] = not dominated.any()
        return out

    def _train(self, ctx: TaskContext, archs: list[str], dataset: str, seed: int, objs: dict[str, tuple[str, bool]],
               values: dict[str, Any], ref: Any) -> list[dict[str, Any]]:
        """Train ``archs`` with the study's protocol and rank them among the single cells."""
        from trilemma.study.tasks.train import TrainTask, train_payload
        from trilemma.training import train_batched

        cfg = ctx.config
        m = cfg.model
        options = cfg.training
        assert options is not None  # validated
        t0 = time.perf_counter()
        specs = [ctx.space.spec(a) for a in archs]
        results = train_batched(specs, ctx.dataset(dataset), TrainTask.train_config(cfg, seed),
                                width=ctx.width(archs[0], dataset), seeds=seed, init=m.init, bias=m.bias,
                                batchnorm=m.batchnorm)
        logger.info("ensemble search: trained %d candidates in %.1f s", len(archs), time.perf_counter() - t0)
        out = []
        for arch, result in zip(archs, results):
            payload = train_payload(result, options)
            row: dict[str, Any] = {"arch": arch, "status": result.status}
            for a, (col, hib) in objs.items():
                v = _float(payload.get(col))
                row[col] = v
                row[f"rank_{a}"] = float(placed_rank([v], values[a][ref], hib)[0])
            row["rank_sum"] = sum(row[f"rank_{a}"] for a in AXES)
            out.append(row)
        return out
