"""NAS-Bench-201 macro network: builds, runs, and its size equals the closed forms."""

from __future__ import annotations

import pytest
import torch

from trilemma.errors import InvalidArgumentError, InvalidSpecError
from trilemma.models import build_nb201, count_flops
from trilemma.nb201 import MacroConfig, nb201_flops, nb201_live_params, nb201_params
from trilemma.spaces import NB201Spec, sample_nb201

ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
SMALL = MacroConfig(C=8, N=1)


def _numel(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Published sizes of the standard C=16, N=5 CIFAR-10 network (NAS-Bench-201 reports "MB" = 1e6
# parameters and MFLOPs):
# * the smallest network of the benchmark, 0.073306 MB / 7.78305 MFLOPs (every cell without a
#   convolution, e.g. all-`none`), and the largest, 1.531546 MB / 220.11969 MFLOPs (all
#   `nor_conv_3x3`): the cifar10-valid min/max of the NAS-Bench-201-v1_1 file as tabulated in public
#   NB201 evaluators (an EvoXBench-based `OurNASBench201Evaluator.min_max_values` and an HPOBench
#   NAS-Bench-201 statistics script, found with the project's code search);
# * 1.531546 MB for the all-`nor_conv_3x3` cell is also the `params` entry of
#   NAS-Bench-Suite-Zero (automl/NASLib zc_nasbench201.json; our shared-data subset);
# * the best cell (5 × conv3x3 + 1 skip) is not in those tables; its count is checked against the
#   built network only, and equals 0.073306 + 5 × 0.243040 MB (each conv3x3 edge adds
#   5 cells × Σ_stages (9c² + 2c) = 243,040 parameters).
PUBLISHED = [
    (ALL_NONE, 73_306, 7_783_050),
    (ALL_CONV3, 1_531_546, 220_119_690),
]


@pytest.mark.parametrize(("arch", "params", "flops"), PUBLISHED)
def test_standard_network_matches_published_sizes(arch, params, flops):
    net = build_nb201(arch, C=16, N=5, seed=0)
    assert _numel(net) == params == nb201_params(arch)
    assert nb201_flops(arch) == flops
    assert count_flops(net, (3, 32, 32)) == flops


def test_best_cell_standard_size():
    net = build_nb201(BEST, C=16, N=5, seed=0)
    assert _numel(net) == nb201_params(BEST) == 73_306 + 5 * 243_040
    assert count_flops(net, (3, 32, 32)) == nb201_flops(BEST)


def test_small_network_forward_backward_and_formulas():
    cells = [NB201Spec.parse(a) for a in (ALL_NONE, ALL_CONV3, BEST)] + sample_nb201(9, seed=11)
    x = torch.randn(4, 3, 32, 32)
    for spec in cells:
        net = build_nb201(spec, C=8, N=1, num_classes=10, seed=0)
        assert _numel(net) == nb201_params(spec, SMALL)
        assert count_flops(net, (3, 32, 32)) == nb201_flops(spec, SMALL)
        out = net(x)
        assert out.shape == (4, 10) and torch.isfinite(out).all()
        out.square().mean().backward()
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert net.classifier.bias.grad.abs().sum() > 0
        if spec.topology.num_paths > 0:  # the input reaches the output: stem and features are trained
            assert net.stem[0].weight.grad.abs().sum() > 0
            assert net.classifier.weight.grad.abs().sum() > 0
        else:  # a disconnected cell zeroes the features: only biases downstream of it learn
            assert net.classifier.weight.grad.abs().sum() == 0


def test_live_params_equal_params_of_the_pruned_network():
    for spec in sample_nb201(12, seed=5):
        pruned = build_nb201(spec.pruned(), C=8, N=1, seed=0)
        assert nb201_live_params(spec, SMALL) == _numel(pruned)


def test_dead_edges_do_not_change_the_output():
    # the pruned cell's network, with its weights copied into the full network, gives the same output
    spec = NB201Spec.parse("|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|")
    assert spec.pruned() != spec  # 0→1 conv3 is dead (node 1 reaches the output only via none)
    full = build_nb201(spec, C=4, N=1, seed=1).eval()
    small = build_nb201(spec.pruned(), C=4, N=1, seed=2).eval()
    missing, unexpected = full.load_state_dict(small.state_dict(), strict=False)
    assert not unexpected and missing and all(".edges.0_1." in k for k in missing)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(full(x), small(x))


def test_seed_reproducible_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_nb201(BEST, C=4, N=1, seed=7)
    after = torch.rand(1)
    b = build_nb201(BEST, C=4, N=1, seed=7)
    assert torch.equal(before, after)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    c = build_nb201(BEST, C=4, N=1, seed=8)
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_structure_follows_the_paper():
    net = build_nb201(BEST, C=8, N=2, seed=0)
    kinds = [type(m).__name__ for m in net.cells]
    assert kinds == ["NB201Cell"] * 2 + ["ResidualReduction"] + ["NB201Cell"] * 2 + ["ResidualReduction"] + ["NB201Cell"] * 2
    cell = net.cells[0]
    relu, conv, bn = cell.edges["0_1"]
    assert isinstance(relu, torch.nn.ReLU) and conv.kernel_size == (3, 3) and conv.bias is None
    assert isinstance(bn, torch.nn.BatchNorm2d) and bn.affine
    assert isinstance(cell.edges["0_3"], torch.nn.Identity)
    red = net.cells[2]
    assert red.conv_a[1].stride == (2, 2) and red.shortcut[0].kernel_size == 2
    assert net.features(torch.randn(1, 3, 32, 32)).shape == (1, 32)


def test_bad_arguments():
    with pytest.raises(InvalidSpecError):
        build_nb201("|none~0|")
    with pytest.raises(InvalidArgumentError, match="C must be a positive int"):
        build_nb201(BEST, C=0)
    net = build_nb201(BEST, C=4, N=1)
    with pytest.raises(InvalidArgumentError, match="divisible by 4"):
        net(torch.randn(1, 3, 30, 30))
    with pytest.raises(InvalidArgumentError, match="divisible by 4"):
        MacroConfig(resolution=30)
