"""The public extension points and their conformance checks (trilemma.testing).

A space, a task kind, an executor and a measure each have one documented contract and one
public check; a plug-in that adds a measure and an executor in a module of its own is listed
by the CLI and used by a study without editing any other file.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from trilemma.cli import main
from trilemma.errors import ConformanceError
from trilemma.models import DagSpace
from trilemma.spaces import get_space
from trilemma.study import get_task, load_results, make_space, parse_config, run_study
from trilemma.testing import check_executor, check_space, check_task_kind

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def test_check_space_on_the_dag_space() -> None:
    done = check_space(DagSpace(3), n=4)
    assert {"budget", "closed_form_theory", "batched_training", "count_params"} <= set(done)


def test_check_space_on_nb201() -> None:
    import trilemma.nb201  # noqa: F401 - registers the space

    space = get_space("nb201", N=1)
    done = check_space(space, in_features=3 * 32 * 32, input_shape=(3, 32, 32), width=4, n=2)
    assert {"budget", "closed_form_theory"} <= set(done)


def test_check_space_on_the_example_plugin_space() -> None:
    cfg = parse_config({"name": "x", "space": {"name": "custom_space.py:mlp_space"}, "tasks": {"probe": {}}},
                       base_dir=EXAMPLES)
    space = make_space(cfg.space, cfg.base_dir)
    assert "budget" in check_space(space, n=3)


def test_check_space_catches_a_broken_count() -> None:
    class Lying(DagSpace):
        def count_params(self, arch, **kwargs):  # type: ignore[no-untyped-def, override]
            return super().count_params(arch, **kwargs) + 1

    with pytest.raises(ConformanceError, match="count_params"):
        check_space(Lying(2), n=1)


@pytest.mark.parametrize("kind", ["probe", "theory", "lookup"])
def test_check_task_kind_on_builtin_kinds(kind: str, tmp_path: Path) -> None:
    cfg: dict = {"name": "k", "store": str(tmp_path / "k.sqlite"), "space": {"nodes": 2},
                 "data": {"names": ["digits"]}, "model": {"width": 8}, "executor": {"kind": "serial"}}
    if kind == "probe":
        cfg["tasks"] = {"probe": {}}
    elif kind == "theory":
        cfg["theory"] = {}
    else:
        table = tmp_path / "truth.csv"
        table.write_text("arch,acc\n" + "".join(f"{a},{i}\n" for i, a in enumerate(DagSpace(2).names())))
        cfg["tasks"] = {"lookup": {"source": str(table), "column": "acc"}}
    assert "run_batch" in check_task_kind(get_task(kind), cfg)


@pytest.mark.parametrize("name", ["serial", "local"])
def test_check_executor_on_builtin_executors(name: str) -> None:
    assert "every job once" in check_executor(name, n_workers=2, archs=5)


PLUGIN = textwrap.dedent('''
    """A plug-in adding one measure and one executor, each in this module only."""
    from trilemma.measures import register_measure
    from trilemma.study import SerialExecutor, register_executor, list_executors


    @register_measure(name="plugin_output_scale", axis="expressivity", higher_is_better=True)
    def output_scale(model, x, y=None):
        """Mean absolute output at initialization (a toy measure from a plug-in)."""
        return model(x).abs().mean().item()


    class InlineExecutor(SerialExecutor):
        """Runs jobs in the driver, like serial (a toy executor from a plug-in)."""

        kind = "plugin_inline"


    if "plugin_inline" not in list_executors():
        register_executor("plugin_inline", InlineExecutor)
''')


def test_a_plugin_measure_and_executor_are_listed_and_used(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from trilemma.measures import list_measures, unregister_measure
    from trilemma.study import unregister_executor

    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(PLUGIN)
    try:
        assert main(["measures", "plugin*", "--plugin", str(plugin)]) == 0
        assert "plugin_output_scale" in capsys.readouterr().out
        assert main(["executors", "--plugin", str(plugin)]) == 0
        assert "plugin_inline" in capsys.readouterr().out
        check_executor("plugin_inline", archs=3)
        cfg = {"name": "plug", "store": str(tmp_path / "p.sqlite"), "plugins": [str(plugin)],
               "space": {"archs": ["2_02_002", "1_22_221"]}, "model": {"width": 8}, "data": {"names": ["digits"]},
               "measures": {"names": ["plugin_output_scale"], "batch_size": 8},
               "executor": {"kind": "plugin_inline"}}
        summary = run_study(cfg)
        assert summary.complete == 2 and summary.executor.startswith("serial executor")
        df = load_results(cfg["store"])
        assert df["plugin_output_scale"].notna().all()
        assert df.attrs["schema"].get("plugin_output_scale").directions == {"expressivity": True}
    finally:
        if "plugin_output_scale" in list_measures():
            unregister_measure("plugin_output_scale")
        from trilemma.study import list_executors

        if "plugin_inline" in list_executors():
            unregister_executor("plugin_inline")
