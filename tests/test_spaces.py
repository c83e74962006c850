"""Paper facts and input validation for the DAG-cell space (Chen, Huang & Wang, AutoML-Conf 2023)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trilemma.errors import InvalidArgumentError, InvalidSpecError, InvalidTypeError, TrilemmaError
from trilemma.spaces import (
    CellSpec,
    enumerate_cells,
    enumerate_paths,
    num_cells,
    path_depth_counts,
    sample_cells,
)

# ------------------------------------------------------------------ paper check values


@pytest.mark.parametrize(
    ("text", "P", "depths"),
    [
        ("2_02_002", 1, (3,)),
        ("1_01_222", 3, (1, 1, 1)),
        ("2_21_112", 4, (2, 1, 2, 0)),
        ("2_22_221", 4, (2, 2, 1, 1)),
    ],
)
def test_spec_check_values(text: str, P: int, depths: tuple[int, ...]) -> None:
    topo = CellSpec.parse(text).topology
    assert topo.num_paths == P
    assert topo.depths == depths
    assert topo.sum_depth == sum(depths)
    assert topo.mean_depth == pytest.approx(sum(depths) / P)
    assert topo.eff_width == pytest.approx(sum(d > 0 for d in depths) / (sum(depths) / P))


def test_space_counts_729_67_121_541_23() -> None:
    cells = list(enumerate_cells(3))
    assert len(cells) == 729 == num_cells(3)
    no_path = [c for c in cells if not c.topology.has_path]
    zero_depth_only = [c for c in cells if c.topology.has_path and not c.topology.has_param_path]
    trainable = [c for c in cells if c.topology.trainable]
    assert len(no_path) == 67
    assert len(zero_depth_only) == 121
    assert len(trainable) == 541
    assert len({c.topology.group for c in trainable}) == 23


def test_index_of_chain_and_round_trip() -> None:
    assert CellSpec.parse("2_02_002").index == 2 * 243 + 2 * 27 + 2
    assert CellSpec.parse("0_00_000").index == 0
    assert CellSpec.parse("2_22_222").index == 728
    for i, spec in enumerate(enumerate_cells(3)):
        assert spec.index == i
        assert CellSpec.from_index(i, 3) == spec
        assert CellSpec.parse(spec.name) == spec


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=7).flatmap(
    lambda h: st.tuples(st.just(h), st.integers(min_value=0, max_value=3 ** (h * (h + 1) // 2) - 1))))
def test_index_string_round_trip_any_h(args: tuple[int, int]) -> None:
    h, index = args
    spec = CellSpec.from_index(index, h)
    assert spec.nodes == h
    assert spec.index == index
    assert CellSpec.parse(str(spec), nodes=h) == spec
    # the DP depth histogram equals explicit path enumeration
    paths = enumerate_paths(spec)
    assert path_depth_counts(spec) == dict(sorted(Counter(d for _, d in paths).items()))


def test_any_number_of_nodes() -> None:
    assert CellSpec.parse("2").topology.depths == (1,)
    assert CellSpec.parse("1").topology.depths == (0,)
    assert num_cells(1) == 3 and num_cells(2) == 27 and num_cells(4) == 3 ** 10
    h5 = CellSpec.parse("2_22_222_2222_22222")
    assert h5.nodes == 5 and h5.topology.num_paths == 2 ** 4


def test_sampling_is_seeded_and_distinct() -> None:
    a = sample_cells(50, nodes=3, seed=7)
    b = sample_cells(50, nodes=3, seed=7)
    c = sample_cells(50, nodes=3, seed=8)
    assert a == b and a != c
    assert len(set(a)) == 50
    with pytest.raises(InvalidArgumentError, match="cannot draw 730 distinct cells"):
        sample_cells(730, nodes=3)
    assert len(sample_cells(730, nodes=3, replace=True)) == 730


def test_spec_is_immutable_and_hashable() -> None:
    spec = CellSpec.parse("2_02_002")
    with pytest.raises(AttributeError):
        spec.ops = ()  # type: ignore[misc]
    assert {spec: 1}[CellSpec.parse(" 2_02_002 ")] == 1


# ------------------------------------------------------------------ malformed input table

MALFORMED = [
    ("", InvalidSpecError, "empty cell string"),
    ("   ", InvalidSpecError, "empty cell string"),
    ("2_02", InvalidSpecError, "H=3 needs 3 groups"),
    ("2_02_002_0002", InvalidSpecError, "H=3 needs 3 groups"),
    ("2_002_002", InvalidSpecError, r"group 2 \('002'\) has 3 digit\(s\)"),
    ("22_02_002", InvalidSpecError, r"group 1 \('22'\) has 2 digit\(s\)"),
    ("2_02_02", InvalidSpecError, r"group 3 \('02'\) has 2 digit\(s\)"),
    ("2_03_002", InvalidSpecError, r"contains '3'; allowed digits are 0 \(zero\), 1 \(skip\), 2 \(linear\)"),
    ("2_0a_002", InvalidSpecError, "contains 'a'"),
    ("2_-1_002", InvalidSpecError, "contains '-'"),
    ("2__02_002", InvalidSpecError, "empty group at position 2"),
    ("2_02_002_", InvalidSpecError, "empty group at position 4"),
    ("2-02-002", InvalidSpecError, "contains '-'"),
    (202002, InvalidTypeError, "must be a str like '2_02_002', got int"),
    (None, InvalidTypeError, "got NoneType"),
    (["2", "02", "002"], InvalidTypeError, "got list"),
]


@pytest.mark.parametrize(("text", "exc", "message"), MALFORMED)
def test_malformed_strings_have_clear_messages(text: object, exc: type[Exception], message: str) -> None:
    with pytest.raises(exc, match=message) as info:
        CellSpec.parse(text, nodes=3)  # type: ignore[arg-type]
    assert isinstance(info.value, TrilemmaError)


def test_errors_are_also_builtin_errors() -> None:
    with pytest.raises(ValueError):
        CellSpec.parse("2_9_002")
    with pytest.raises(TypeError):
        CellSpec.parse(3.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: CellSpec.from_index(729, 3), r"index must be in \[0, 729\) for H=3, got 729"),
        (lambda: CellSpec.from_index(-1, 3), "got -1"),
        (lambda: CellSpec.from_index(0, 0), "nodes \\(H\\) must be between 1 and 64, got 0"),
        (lambda: CellSpec(((3,),)), "edge ops must be 0 \\(zero\\), 1 \\(skip\\) or 2 \\(linear\\), got 3"),
        (lambda: CellSpec(((2,), (0,))), "node 2 must list 2 edge op"),
        (lambda: CellSpec.parse("2").op(1, 1), "edge \\(1, 1\\) does not exist"),
    ],
)
def test_bad_arguments(call: object, message: str) -> None:
    with pytest.raises(TrilemmaError, match=message):
        call()  # type: ignore[operator]
