"""NAS-Bench-201 cell space: strings, indices, paths, isomorphism (trilemma.spaces._nb201)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trilemma.errors import InvalidArgumentError, InvalidSpecError, InvalidTypeError
from trilemma.spaces import (
    NB201_EDGES,
    NB201_OPS,
    NUM_NB201_CELLS,
    NB201Spec,
    enumerate_nb201,
    nb201_canonical_key,
    nb201_isomorphism_classes,
    sample_nb201,
    unique_nb201_cells,
)

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
ALL_POOL = "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|"


# ---------------------------------------------------------------------------- round trips
def test_every_cell_round_trips_through_string_and_index():
    seen = set()
    for i, spec in enumerate(enumerate_nb201()):
        assert spec.index == i
        assert NB201Spec.parse(spec.name) == spec
        assert NB201Spec.from_index(i) == spec
        assert NB201Spec.from_codes(spec.codes) == spec
        seen.add(spec.name)
    assert len(seen) == NUM_NB201_CELLS == 5**6


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(NB201_OPS), min_size=6, max_size=6))
def test_string_round_trip_property(ops):
    spec = NB201Spec(tuple(ops))
    text = spec.name
    assert NB201Spec.parse(text) == spec
    assert NB201Spec.parse(f"  {text}\n") == spec  # surrounding whitespace is ignored
    # the string lists node i's edges from sources 0..i-1 in order
    assert text.count("+") == 2 and text.startswith("|") and text.endswith("|")


def test_index_is_base5_in_canonical_op_and_edge_order():
    assert NB201Spec.parse(ALL_NONE).index == 0
    assert NB201Spec.parse(ALL_POOL).index == NUM_NB201_CELLS - 1
    # the last edge (2→3) is the least significant digit, op codes follow NB201_OPS
    assert NB201Spec.parse("|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|").index == 1
    assert NB201Spec.parse("|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|").index == 5**5
    spec = NB201Spec.parse(BEST)
    assert spec.op(0, 3) == "skip_connect" and spec.op(1, 2) == "nor_conv_3x3"
    assert [(s, t) for s, t, _ in spec.edges()] == list(NB201_EDGES)


# ---------------------------------------------------------------------------- malformed strings
MALFORMED = [
    # (input, error type, fragments the message must contain)
    (123, InvalidTypeError, ["must be a str", "int"]),
    ("", InvalidSpecError, ["empty", "3 node groups"]),
    ("|none~0|+|none~0|none~1|", InvalidSpecError, ["2 node group(s)", "expected 3"]),
    (ALL_NONE + "+|none~0|", InvalidSpecError, ["4 node group(s)", "expected 3"]),
    ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", InvalidSpecError, ["node 1", "start and end with '|'"]),
    ("|none~0|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", InvalidSpecError, ["node 1", "2 edge(s)", "exactly 1"]),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", InvalidSpecError, ["node 2", "1 edge(s)", "exactly 2"]),
    (
        "|conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|",
        InvalidSpecError,
        ["unknown operation 'conv_3x3'", "did you mean 'nor_conv_3x3'", "allowed operations are none, skip_connect"],
    ),
    ("|None~0|+|none~0|none~1|+|none~0|none~1|none~2|", InvalidSpecError, ["'None'", "did you mean 'none'"]),
    ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", InvalidSpecError, ["node 1", "'none0'", "exactly one '~'"]),
    ("|none~0~0|+|none~0|none~1|+|none~0|none~1|none~2|", InvalidSpecError, ["exactly one '~'"]),
    ("|none~a|+|none~0|none~1|+|none~0|none~1|none~2|", InvalidSpecError, ["source 'a'", "must be a node number"]),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", InvalidSpecError, ["has source 1", "must be 0"]),
    (
        "|none~0|+|none~1|none~0|+|none~0|none~1|none~2|",
        InvalidSpecError,
        ["node 2", "has source 1", "increasing order", "must be 0"],
    ),
    ("|none~0|+|none~0||+|none~0|none~1|none~2|", InvalidSpecError, ["node 2", "''", "exactly one '~'"]),
]


@pytest.mark.parametrize(("text", "error", "fragments"), MALFORMED, ids=[repr(m[0])[:40] for m in MALFORMED])
def test_malformed_strings_are_rejected_with_clear_messages(text, error, fragments):
    with pytest.raises(error) as info:
        NB201Spec.parse(text)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    if isinstance(text, str) and text:
        assert repr(text) in message  # the received string is quoted


def test_direct_construction_and_index_errors():
    with pytest.raises(InvalidSpecError, match="6 edges"):
        NB201Spec(("none",) * 5)
    with pytest.raises(InvalidSpecError, match=r"edge 1→2: unknown operation 'conv'"):
        NB201Spec(("none", "none", "conv", "none", "none", "none"))
    with pytest.raises(InvalidTypeError, match="tuple"):
        NB201Spec(["none"] * 6)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"\[0, 15625\).*got 15625"):
        NB201Spec.from_index(NUM_NB201_CELLS)
    with pytest.raises(InvalidTypeError):
        NB201Spec.from_index("3")  # type: ignore[arg-type]
    with pytest.raises(InvalidSpecError, match="in 0..4"):
        NB201Spec.from_codes((0, 0, 0, 0, 0, 5))
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        NB201Spec.parse(BEST).op(2, 1)


# ---------------------------------------------------------------------------- topology (hand-worked)
def test_topology_hand_worked_cells():
    # 0→1 conv3, 1→2 skip, 2→3 pool, 0→3 conv1; edges 0→2 and 1→3 are none.
    # Paths: 0→1→2→3 (conv3, skip, pool: d=1) and 0→3 (conv1: d=1); 0→1→3 and 0→2→3 are cut.
    a = NB201Spec.parse("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|").topology
    assert (a.num_paths, a.depths, a.sum_depth, a.mean_depth, a.eff_width) == (2, (1, 1), 2, 1.0, 2.0)
    # The best CIFAR-10 cell: 0→1→2→3 three convs, 0→1→3 and 0→2→3 two, 0→3 skip.
    b = NB201Spec.parse(BEST).topology
    assert b.num_paths == 4 and b.depths == (3, 2, 2, 0) and b.sum_depth == 7
    assert b.mean_depth == pytest.approx(7 / 4)
    assert b.eff_width == pytest.approx(3 / (7 / 4))  # three parameterized paths / d̄
    # Only the 0→3 pool survives: one zero-depth path, the conv on 0→2 is dead weight.
    c_spec = NB201Spec.parse("|skip_connect~0|+|nor_conv_3x3~0|none~1|+|avg_pool_3x3~0|none~1|none~2|")
    c = c_spec.topology
    assert (c.num_paths, c.depths, c.mean_depth, c.eff_width) == (1, (0,), 0.0, None)
    assert c_spec.live_edges == (False, False, False, True, False, False)
    assert c_spec.paths() == [((0, 3), ("avg_pool_3x3",))]
    assert NB201Spec.parse(ALL_NONE).topology.num_paths == 0


def test_topology_agrees_with_dag_skeleton_for_every_cell():
    # independent implementations: NB201 path list vs the DAG space's dynamic programme
    for spec in enumerate_nb201():
        mine, dag = spec.topology, spec.dag_skeleton().topology
        assert mine.depth_counts == dag.depth_counts
        assert sorted(mine.depths) == sorted(dag.depths)


# ---------------------------------------------------------------------------- isomorphism
def test_isomorphism_examples():
    # swapping the intermediate nodes when 1→2 is none
    x = NB201Spec.parse("|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|")
    y = NB201Spec.parse("|nor_conv_1x1~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|")
    assert x.is_isomorphic(y) and x.canonical() == y.canonical()
    # dead edges do not matter
    dead = NB201Spec.parse("|skip_connect~0|+|nor_conv_3x3~0|none~1|+|avg_pool_3x3~0|none~1|none~2|")
    assert dead.is_isomorphic(dead.pruned()) and nb201_canonical_key(dead) == "a:ap(x)->a"
    # a skip chain is the identity: 0→1 skip then 1→3 conv == 0→3 conv
    assert NB201Spec.parse("|skip_connect~0|+|none~0|none~1|+|none~0|nor_conv_3x3~1|none~2|").is_isomorphic(
        "|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|"
    )
    # one conv feeding two places (2 convs) vs two convs of the same input (3 convs): not isomorphic
    shared = NB201Spec.parse("|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|none~0|skip_connect~1|skip_connect~2|")
    separate = NB201Spec.parse("|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|nor_conv_3x3~0|none~1|skip_connect~2|")
    assert not shared.is_isomorphic(separate)
    # x + x is not x
    assert not NB201Spec.parse("|skip_connect~0|+|none~0|none~1|+|skip_connect~0|skip_connect~1|none~2|").is_isomorphic(
        "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    )
    assert nb201_canonical_key(ALL_NONE) == "0"


def test_isomorphism_classes_preserve_topology_and_live_ops():
    classes = nb201_isomorphism_classes()
    reps = unique_nb201_cells()
    assert len(reps) == len(classes) == 5425  # documented count for our definition
    assert sum(len(m) for m in classes.values()) == NUM_NB201_CELLS
    for members in classes.values():
        specs = [NB201Spec.from_index(i) for i in members]
        ref = specs[0]
        live_ops = sorted(op for op, lv in zip(ref.ops, ref.live_edges) if lv and op not in ("skip_connect",))
        for s in specs[1:]:
            assert s.topology.depth_counts == ref.topology.depth_counts
            assert sorted(op for op, lv in zip(s.ops, s.live_edges) if lv and op != "skip_connect") == live_ops
            assert s.canonical() == ref  # the representative is the smallest index
    assert [r.index for r in reps] == sorted(min(m) for m in classes.values())


# ---------------------------------------------------------------------------- sampling
def test_sampling_is_seeded_and_validated():
    a = sample_nb201(20, seed=3)
    assert a == sample_nb201(20, seed=3) and a != sample_nb201(20, seed=4)
    assert len({s.index for s in a}) == 20
    u = sample_nb201(50, seed=0, unique=True)
    assert all(s.canonical() == s for s in u)
    assert len(sample_nb201(30, seed=0, replace=True)) == 30
    with pytest.raises(InvalidArgumentError, match="cannot draw 15626 distinct"):
        sample_nb201(NUM_NB201_CELLS + 1)
    with pytest.raises(InvalidArgumentError, match="non-negative"):
        sample_nb201(-1)


def test_enumeration_unique_flag():
    assert sum(1 for _ in enumerate_nb201(unique=True)) == len(unique_nb201_cells())
    first = list(itertools.islice(enumerate_nb201(), 3))
    assert [s.index for s in first] == [0, 1, 2]
