"""The NAS-Bench-201 canonical form against a brute-force check of equal outputs.

Two cells are the same function (``nb201_canonical_key`` equal) exactly when some relabelling
of their parameters makes their outputs equal. The brute force knows nothing of the key: it
builds both cells (float64, BatchNorm batch statistics and zero shifts, as at initialization),
gives cell ``a`` random weights and tries every injective assignment of ``a``'s convolution
weights to ``b``'s convolutions of the same kernel size (a convolution of ``b`` left
unassigned keeps its own random weights), comparing the outputs on a random input.
"""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from trilemma.models import NB201Cell
from trilemma.nb201 import NB201Space
from trilemma.spaces import NUM_NB201_CELLS, NB201Spec, nb201_canonical_key, nb201_isomorphism_classes

C, HW = 2, 5


def _cell(spec: NB201Spec, seed: int) -> NB201Cell:
    torch.manual_seed(seed)
    cell = NB201Cell(spec, C, dtype=torch.float64).train()
    with torch.no_grad():
        for m in cell.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)  # generic scales; shifts stay 0 as at initialization
    return cell


def _convs(cell: NB201Cell) -> dict[str, tuple[int, torch.nn.Module]]:
    """Edge key → (kernel size, the ReLU-Conv-BN module) of every convolution edge."""
    return {k: (m[1].kernel_size[0], m) for k, m in cell.edges.items() if isinstance(m, torch.nn.Sequential)}


def _assignments(src: dict[str, int], dst: dict[str, int]) -> list[dict[str, str]]:
    """Every injective partial map dst edge → src edge with equal kernel sizes."""
    per_kernel = []
    for k in sorted(set(dst.values())):
        d = [e for e, ks in dst.items() if ks == k]
        s = [e for e, ks in src.items() if ks == k]
        options = []
        for choice in itertools.product([None, *s], repeat=len(d)):
            used = [c for c in choice if c is not None]
            if len(used) == len(set(used)):
                options.append({de: c for de, c in zip(d, choice) if c is not None})
        per_kernel.append(options)
    return [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*per_kernel)]


@torch.no_grad()
def same_function(a: NB201Spec, b: NB201Spec, seed: int = 0) -> bool:
    """Brute force: is there a relabelling of the weights under which ``a`` and ``b`` agree?"""
    x = torch.randn(3, C, HW, HW, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ca, cb = _cell(a, seed + 1), _cell(b, seed + 2)
    ya = ca(x)
    wa, wb = _convs(ca), _convs(cb)
    own = {e: [p.clone() for p in m.parameters()] for e, (_, m) in wb.items()}
    for assign in _assignments({e: k for e, (k, _) in wa.items()}, {e: k for e, (k, _) in wb.items()}):
        for e, (_, m) in wb.items():
            params = list(wa[assign[e]][1].parameters()) if e in assign else own[e]
            for p, q in zip(m.parameters(), params):
                p.copy_(q)
        if torch.allclose(cb(x), ya, rtol=1e-9, atol=1e-9):
            return True
    return False


def _pairs(n_same: int, n_diff: int, seed: int = 0) -> list[tuple[NB201Spec, NB201Spec, bool]]:
    """Pairs of one class (of classes with several members) and pairs of different classes that
    are hard to tell apart (one edge changed, or the same multiset of ops)."""
    rng = random.Random(seed)
    classes = [m for m in nb201_isomorphism_classes().values() if len(m) > 1]
    out = []
    for _ in range(n_same):
        members = rng.choice(classes)
        i, j = rng.sample(members, 2)
        out.append((NB201Spec.from_index(i), NB201Spec.from_index(j), True))
    while len(out) < n_same + n_diff:
        a = NB201Spec.from_index(rng.randrange(NUM_NB201_CELLS))
        codes = list(a.codes)
        if rng.random() < 0.5:
            codes[rng.randrange(6)] = rng.randrange(5)
        else:
            rng.shuffle(codes)
        b = NB201Spec.from_codes(codes)
        if sum(op in ("nor_conv_1x1", "nor_conv_3x3") for op in a.ops + b.ops) > 8:
            continue  # keep the brute force fast
        out.append((a, b, nb201_canonical_key(a) == nb201_canonical_key(b)))
    return out


def test_canonical_key_agrees_with_brute_force_on_300_pairs() -> None:
    pairs = _pairs(150, 150)
    assert sum(not same for *_, same in pairs) >= 100  # enough pairs of different functions
    for k, (a, b, same) in enumerate(pairs):
        assert same_function(a, b, seed=k) == same, (a.name, b.name, nb201_canonical_key(a), nb201_canonical_key(b))


def test_brute_force_tells_known_cases_apart() -> None:
    # the oracle itself: a node swap is the same function, x + x is not x
    x = NB201Spec.parse("|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|")
    y = NB201Spec.parse("|nor_conv_1x1~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|")
    assert same_function(x, y)
    assert not same_function(NB201Spec.parse("|skip_connect~0|+|none~0|none~1|+|skip_connect~0|skip_connect~1|none~2|"),
                             NB201Spec.parse("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"))
    # a 1x1 and a 3x3 convolution are different functions
    assert not same_function(NB201Spec.parse("|none~0|+|none~0|none~1|+|nor_conv_1x1~0|none~1|none~2|"),
                             NB201Spec.parse("|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|"))


def test_representatives_are_pruned_and_idempotent() -> None:
    space = NB201Space()
    classes = nb201_isomorphism_classes()
    assert len(classes) == 5425  # distinct networks among the 15,625 cells
    assert len(classes["0"]) == sum(not NB201Spec.from_index(i).topology.has_path for i in range(NUM_NB201_CELLS))
    for members in classes.values():
        rep = NB201Spec.from_index(members[0])
        assert rep.pruned() == rep  # only live operations in the measured network
        assert space.representative(rep.name) == rep.name
        other = NB201Spec.from_index(members[-1])
        assert space.representative(other.name) == rep.name


@pytest.mark.parametrize("arch", ["|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|"])
def test_representative_builds_the_same_network_output(arch: str) -> None:
    # the member and its representative: equal outputs once the live weights are shared
    spec = NB201Spec.parse(arch)
    assert same_function(spec, spec.canonical())
