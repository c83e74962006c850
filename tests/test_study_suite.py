"""The ``proxy_suite`` task kind: fused values equal the registered measures, each function once."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from trilemma.errors import ConfigError  # noqa: E402
from trilemma.study import Store, get_task, load_results, plan_study, run_study  # noqa: E402
from trilemma.study.tasks import measure_batch  # noqa: E402
from trilemma.testing import check_task_kind  # noqa: E402

# two members of one class (the second adds a dead 3x3 conv on 1→2), and another cell
SAME_A = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|avg_pool_3x3~1|none~2|"
SAME_B = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|avg_pool_3x3~1|none~2|"
OTHER = "|nor_conv_1x1~0|+|skip_connect~0|nor_conv_3x3~1|+|none~0|none~1|avg_pool_3x3~2|"
NAMES = ["naswot", "snip", "jacob_cov", "ntk_condition", "num_params"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _study(tmp_path: Path, name: str, **suite: object) -> dict:
    return {
        "name": name,
        "store": str(tmp_path / f"{name}.sqlite"),
        "seeds": [2],
        "space": {"name": "nb201", "archs": [SAME_A, SAME_B, OTHER], "options": {"N": 1}},
        "model": {"width": 4},
        "data": {"names": ["digits"], "options": {"normalize": "l2", "max_train": 128, "max_test": 32,
                                                   "flatten": False}},
        "tasks": {"proxy_suite": {"names": NAMES, "batch_size": 12, "on_error": "record", **suite}},
        "executor": {"kind": "serial", "threads_per_worker": 1},
    }


def test_suite_task_conforms(tmp_path: Path) -> None:
    assert "run_batch" in check_task_kind(get_task("proxy_suite"), _study(tmp_path, "conf"))


def test_suite_task_measures_each_function_once_and_matches_the_measures(tmp_path: Path) -> None:
    from trilemma.data import load_dataset
    from trilemma.measures import get_measure
    from trilemma.models import build_nb201
    from trilemma.spaces import NB201Spec

    cfg = _study(tmp_path, "once")
    events = []
    summary = run_study(cfg, progress=events.append)
    assert summary.complete == 3 and summary.failed == 0
    (kind,) = events[-1].kinds  # one job per distinct function: 3 cells, 2 networks
    assert (kind.name, kind.queued, kind.finished, kind.jobs, kind.jobs_done) == ("proxy_suite", 3, 3, 2, 2)
    assert events[-1].eta == 0.0
    with Store(cfg["store"], readonly=True) as st:
        rows = {r.arch: r for r in st.rows(task="proxy_suite")}
    rep = NB201Spec.parse(SAME_A).canonical().name  # the node-swapped cell: smallest index of the class
    assert rep != SAME_A and rep == NB201Spec.parse(SAME_B).canonical().name
    got = {a: r.result() for a, r in rows.items()}
    assert got[SAME_A]["measured_as"] == got[SAME_B]["measured_as"] == rep and got[OTHER]["measured_as"] == OTHER
    for name in NAMES:  # the class shares one measurement
        assert got[SAME_A][name] == got[SAME_B][name]
    assert got[SAME_A]["naswot"] != got[OTHER]["naswot"]
    # two jobs (two functions): the class members' seconds are halves of one computation
    assert len({rows[SAME_A].started_at, rows[OTHER].started_at}) == 2
    assert rows[SAME_A].started_at == rows[SAME_B].started_at
    # values: the registered measures called one by one on the representative's network
    ds = load_dataset("digits", normalize="l2", max_train=128, max_test=32, flatten=False)
    x, y = measure_batch(ds, 12, 2)
    for arch, net in ((SAME_A, rep), (OTHER, OTHER)):
        model = build_nb201(net, C=4, N=1, num_classes=10, in_channels=1, seed=2)
        for name in NAMES:
            m = get_measure(name)
            ref = m(model, x, y if m.needs_labels else None, seed=2).value
            assert got[arch][name] == pytest.approx(ref, rel=1e-5), name
    # each member keeps its own parameter count; num_params is the measured (pruned) network's
    assert got[SAME_B]["info"]["params"] > got[SAME_A]["info"]["params"]
    df = load_results(cfg["store"]).set_index("arch")
    assert df.loc[SAME_B, "num_params"] == df.loc[SAME_A, "params"]  # SAME_A has no dead edge
    schema = df.attrs["schema"]
    assert schema.get("ntk_condition").directions == {"convergence": False}
    assert schema.get("num_params").kind == "cost"


def test_suite_task_unique_off_measures_every_cell(tmp_path: Path) -> None:
    cfg = _study(tmp_path, "every", unique=False, names=["naswot", "num_params"])
    assert run_study(cfg).complete == 3
    with Store(cfg["store"], readonly=True) as st:
        got = {r.arch: r.result() for r in st.rows(task="proxy_suite")}
    assert got[SAME_B]["measured_as"] == SAME_B
    assert got[SAME_B]["num_params"] > got[SAME_A]["num_params"]  # the dead conv is built and counted


def test_suite_task_random_labels_and_config_errors(tmp_path: Path) -> None:
    cfg = _study(tmp_path, "lab", labels="random", names=["snip"])
    assert run_study(cfg).complete == 3
    with pytest.raises(ConfigError, match="need labels"):
        plan_study(_study(tmp_path, "nolab", labels="none", names=["snip"]), check_resources=False)
    with pytest.raises(ConfigError, match="not in the proxy suite"):
        plan_study(_study(tmp_path, "bad", names=["curvature"]), check_resources=False)
    with pytest.raises(ConfigError, match="unknown option of measure 'naswot'"):
        plan_study(_study(tmp_path, "opt", options={"naswot": {"dtype": "float64"}}), check_resources=False)


def test_suite_task_records_failures(tmp_path: Path) -> None:
    # a cell without an input→output path: input-dependent measures fail, with their reason
    cut = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    cfg = _study(tmp_path, "cut", names=["jacob_cov", "num_params"])
    cfg["space"]["archs"] = [cut, OTHER]
    run_study(cfg)
    with Store(cfg["store"], readonly=True) as st:
        got = {r.arch: r.result() for r in st.rows(task="proxy_suite")}
    assert got[cut]["jacob_cov"] is None and "MeasureFailedError" in got[cut]["jacob_cov_error"]
    assert got[cut]["measured_as"] == "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    assert got[OTHER]["jacob_cov"] is not None


def test_nb201_example_studies_plan() -> None:
    from collections import Counter

    from trilemma._refdata import reference_dir
    from trilemma.errors import DatasetNotFoundError

    try:
        reference_dir()  # the example's accuracy lookup and images are the shared reference data
    except DatasetNotFoundError as exc:
        pytest.skip(f"shared reference data not available: {exc}")
    examples = Path(__file__).resolve().parents[1] / "examples"
    main = plan_study(examples / "nb201_cifar10.toml", check_resources=False)
    assert Counter(k.task for k, _ in main.tasks) == {"theory": 15625, "lookup": 15625, "proxy_suite": 500}
    search = plan_study(examples / "nb201_search.toml", check_resources=False)
    assert Counter(k.task for k, _ in search.tasks) == {"proxy_suite": 15625}
    # the sample picks cells, it is not a setting of the results: dropping it keeps what is measured
    kind, options = main.kinds["proxy_suite"]
    from trilemma.study._task_api import task_hash

    whole = options.model_copy(update={"sample": None})
    assert task_hash(kind, main.config, options, "cifar10_unlabeled") == task_hash(kind, main.config, whole,
                                                                                 "cifar10_unlabeled")
