"""Train many DAG-MLP cells at once as one vectorized computation.

``train_batched(specs, ...)`` is mathematically the same as calling
:func:`~trilemma.training.train_cell` on every spec with its seed (same initialization,
same mini-batch order, same optimizer), but runs all models together:

* **Stacked weights.** Every layer kind is one tensor over models: the stem ``(M, d, m)``;
  per edge ``(s, t)`` of the cell, ``(n_e, m, m)`` holding only the ``n_e`` models in
  which that edge is linear (stored transposed, ``y = x @ W``); and the readout
  ``(M, k, m)``, which computes the logits transposed, ``(k, B)`` per model (a GEMM with B
  rather than k output columns, and a softmax over an outer dimension). A bias is one more
  weight row that multiplies a constant input column, so it costs no extra operation.
* **Model order.** Models are re-ordered internally (Gray-code order of their linear-edge
  pattern) so that, for each edge, the models where it is linear form few contiguous
  runs. Each run is one ``baddbmm`` on *views*: no gather or scatter of activations.
  Skip edges are an in-place copy or add over each run of models that has them. The first
  contribution to a node is written rather than added, so node buffers are never zeroed.
* **Chunks and workers.** Models are processed in chunks (default <= 8 on the CPU, all on a
  GPU) so that a chunk's activations stay in cache through its forward and backward pass,
  and a chunk runs all steps of an epoch before the next one; on the CPU, worker threads
  (one per core, one intra-op thread each) own the chunks.
* **Manual backward, fused update, compiled program.** The backward pass is written out
  (ReLU masks, ``baddbmm`` for input and weight gradients). A chunk's forward pass, loss
  and backward pass are encoded once as a list of op codes over pre-made views and run by
  one TorchScript function per step (no per-op Python overhead, no GIL). For plain SGD
  (the papers' protocol) the weight update is fused into the gradient GEMM
  (``W.baddbmm_(hᵀ, δ, alpha=−lr)``), so no gradient is ever stored; momentum, weight
  decay and Adam keep per-parameter state and update with ``torch._foreach`` ops,
  following ``torch.optim.SGD``/``Adam`` exactly.
* **Loss.** Each model's loss is the mean over its own mini-batch; the gradient of each
  model is its own (the batched objective is the sum of the models' losses). Accuracy
  uses ``argmax``'s tie rule (first maximal logit), computed as an outer reduction.
* **Divergence.** A model whose epoch loss is non-finite is recorded as ``"diverged"`` in
  that epoch (as :func:`~trilemma.training.train` does), its weights are zeroed and it is
  frozen; the other models are unaffected (no operation mixes models).
* **Devices.** Everything is allocated on ``config.device`` (CPU by default; CUDA only when
  asked, checked by :func:`~trilemma.training.resolve_device`): the programs use
  device-generic tensor operations only, the mini-batch order is drawn on the CPU (as
  :func:`~trilemma.training.train` does) and copied over, and timings synchronize the
  device. On a GPU one chunk holds all models and one thread issues the work.
* **Mixed precision.** With ``config.autocast="bfloat16"`` the GEMMs read bfloat16 copies of
  the float32 master weights and produce bfloat16 activations and gradients (as
  ``torch.autocast`` runs ``nn.Linear``), the loss is computed in float32 from the
  logits, and each update is applied to the master weights, whose copies are then
  refreshed. It agrees with :func:`~trilemma.training.train` under autocast to bfloat16
  accuracy (the roundings inside the GEMMs differ), not to 1e-6.
* **What was tried.** ``torch.compile`` of a chunk's step (the op-code interpreter traced
  per program) took ~5 s per program to compile and ran no faster than the TorchScript
  interpreter on the CPU (2.11 vs 2.11 ms per step, m = 64): GEMMs are two thirds of a
  step at m = 64 and ~95 % at m = 256, and a chunk's remaining element-wise work is a
  few passes over cache-resident buffers, so it is not used. The stem as one 2-D GEMM
  over a chunk's models (``(B, d) @ (d, C·m)``) was slower than the batched GEMM at
  m = 256. See ``benchmarks/train_space.py`` for the measured ratios.

* **Ensembles and pruning.** A batch may hold ensembles of cells on shared nodes and
  randomly pruned cells (:class:`~trilemma.spaces.EnsembleSpec`; Chen, Huang & Wang,
  AutoML-Conf 2023, Table 1). The cell's graph becomes a multigraph of *edge slots*
  ``(s, t, member)``: a model with fewer members has zero edges in the others, so single cells,
  two-member ensembles and pruned variants share one layout and one computation. A pruned
  weight matrix carries a fixed 0/1 mask, stacked like the weights (bias rows are 1); after
  every update of a run of models that holds a mask, the weights (fused SGD) or their
  gradients (momentum, weight decay, Adam, autocast) are multiplied by it, so pruned weights
  stay exactly zero and their gradients are masked, as in :class:`~trilemma.models.MaskedLinear`.

BatchNorm is not supported here (use :func:`~trilemma.training.train` per model).
"""

from __future__ import annotations

import functools
import logging
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from trilemma._checks import is_int
from trilemma.errors import InvalidArgumentError, InvalidTypeError
from trilemma.spaces import LINEAR, SKIP, CellSpec, EnsembleSpec
from trilemma.training._config import (
    EpochCallback,
    EpochRecord,
    TrainConfig,
    TrainResult,
    check_autocast,
    lr_at,
    resolve_device,
    synchronize,
)
from trilemma.training._trainer import _check_batches, _check_dataset, _flat

if TYPE_CHECKING:
    from trilemma.data import Dataset
    from trilemma.models import DAGMLP, EnsembleMLP

__all__ = ["train_batched", "DEFAULT_CPU_CHUNK"]

logger = logging.getLogger(__name__)

DEFAULT_CPU_CHUNK = 8
EVAL_ROWS = 512  # rows per evaluation pass (keeps a chunk's activations in cache)
_threshold_backward = torch.ops.aten.threshold_backward.grad_input
_POISON_BUFFERS = False  # set by tests: fill fresh work buffers with NaN


# --------------------------------------------------------------------------- static layout
def _gray_rank(bits: Sequence[int]) -> int:
    """Rank of a reflected-binary Gray code word (consecutive ranks differ in one bit)."""
    value = acc = 0
    for g in bits:
        acc ^= g
        value = 2 * value + acc
    return value


def _runs(flags: Sequence[bool]) -> list[tuple[int, int]]:
    """Maximal runs ``[a, b)`` of True values."""
    out, start = [], None
    for i, f in enumerate(flags):
        if f and start is None:
            start = i
        elif not f and start is not None:
            out.append((start, i))
            start = None
    if start is not None:
        out.append((start, len(flags)))
    return out


def _segments(flags: Sequence[bool], a: int, b: int) -> list[tuple[int, int]]:
    """Split ``[a, b)`` into maximal sub-ranges over which ``flags`` is constant."""
    out, p = [], a
    for i in range(a + 1, b + 1):
        if i == b or flags[i] != flags[p]:
            out.append((p, i))
            p = i
    return out


def _layer_parts(seq: nn.Sequential) -> tuple[nn.Linear, float]:
    """The Linear of a DAGMLP layer and the constant factor in front of it (NTK ``Scale``)."""
    from trilemma.models import Scale

    factor, linear = 1.0, None
    for mod in seq:
        if isinstance(mod, Scale):
            factor = mod.factor
        elif isinstance(mod, nn.Linear):
            linear = mod
    assert linear is not None  # internal invariant of DAGMLP
    return linear, factor


@dataclass
class _LinRun:
    """A run of consecutive (internal-order) models in which edge ``e`` is linear."""

    edge: int
    a: int  # chunk-relative start
    b: int  # chunk-relative end
    k: int  # start in the edge's compact weight tensor


@dataclass
class _Chunk:
    start: int
    stop: int
    seed_slots: list[int]
    shared_slot: int | None
    lin_runs: dict[int, list[_LinRun]] = field(default_factory=dict)
    skips: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # runs [a, b) of models with skip e

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass
class _Weights:
    """Initial weights of one DAG-MLP or ensemble: ``layers[name] = (W (out, in), b (out,) or None, factor)``.

    Names: ``"stem"``, the edge names of :func:`~trilemma.models.edge_name` (``"s_t"`` for the
    first member), ``"readout"``; ``factor`` is the NTK ``Scale`` in front of the layer (1 for
    He init). ``masks[name]`` is the ``(out, in)`` 0/1 pruning mask of a pruned layer.
    """

    spec: EnsembleSpec
    layers: dict[str, tuple[torch.Tensor, torch.Tensor | None, float]]
    masks: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_params(self) -> int:
        return sum(w.numel() + (0 if b is None else b.numel()) for w, b, _ in self.layers.values())


def _weights_of(model: DAGMLP | EnsembleMLP) -> _Weights:
    """The layers (and pruning masks) of a built model."""
    from trilemma.models import MaskedLinear

    layers: dict[str, tuple[torch.Tensor, torch.Tensor | None, float]] = {}
    masks: dict[str, torch.Tensor] = {}
    for name, seq in [("stem", model.stem), *model.edges.items(), ("readout", model.readout)]:
        lin, factor = _layer_parts(seq)  # type: ignore[arg-type]
        layers[name] = (lin.weight.detach(), None if lin.bias is None else lin.bias.detach(), factor)
        if isinstance(lin, MaskedLinear):
            masks[name] = lin.weight_mask.detach()
    return _Weights(EnsembleSpec.parse(model.spec), layers, masks)


def _seeded_weights(spec: EnsembleSpec | CellSpec, d: int, k: int, m: int, *, bias: bool, init: str, seed: int,
                    dtype: torch.dtype) -> _Weights:
    """The initial weights ``build_model(spec, d, k, m, bias=bias, init=init, seed=seed)`` draws.

    Replays the same random stream without building modules (``build_model`` reseeds the
    global generator, which is slow in a loop of hundreds of models): per layer, in
    construction order (stem, each member's linear edges in string order, readout),
    ``nn.Linear``'s default initialization draws (uniform weight, uniform bias) and then the
    DAG-MLP's ``normal_`` weight; the pruning masks come from their own generators
    (:func:`~trilemma.models.ensemble_masks`). :func:`train_batched` checks it against the
    built model on the first model and falls back to building every model if they ever differ.
    """
    from trilemma.models import ensemble_masks, layer_shapes

    spec = EnsembleSpec.parse(spec)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    shapes = [(name, fan_in, fan_out, 1.0 if name == "readout" else 2.0)
              for name, fan_in, fan_out, _ in layer_shapes(spec, d, k, m)]
    masks = ensemble_masks(spec, d, k, m, seed, dtype=dtype) if spec.pruned else {}
    layers: dict[str, tuple[torch.Tensor, torch.Tensor | None, float]] = {}
    for name, fan_in, fan_out, gain in shapes:
        w = torch.empty(fan_out, fan_in, dtype=dtype)
        w.uniform_(-1.0, 1.0, generator=gen)  # nn.Linear.reset_parameters: kaiming_uniform_
        b = None
        if bias:
            torch.empty(fan_out, dtype=dtype).uniform_(-1.0, 1.0, generator=gen)  # ... and the bias
            b = torch.zeros(fan_out, dtype=dtype)
        if init == "he":
            w.normal_(0.0, math.sqrt(gain / fan_in), generator=gen)
            factor = 1.0
        else:
            w.normal_(0.0, 1.0, generator=gen)
            factor = math.sqrt(gain / fan_in)
        if name in masks:
            w.mul_(masks[name])
        layers[name] = (w, b, factor)
    return _Weights(spec, layers, masks)


class _Stack:
    """Stacked parameters of M DAG-MLPs (internal model order).

    A layer's bias is stored as one more input row of its weight: ``W_aug = [Wᵀ; b / 1]``
    multiplies inputs that carry a constant last column ``1/f`` (``f`` the NTK factor in
    front of the layer, 1 for He init), so ``f·(x_aug @ W_aug) = f·x Wᵀ + b``. The bias
    then needs no broadcast in the forward pass and its gradient comes out of the weight
    gradient GEMM, with exactly the gradient of the separate bias. Shapes (``A = 1`` with
    biases, else 0): stem ``Ws (M, d + A, m)``, edge slot ``e = (s, t, member)``
    ``We[e] (n_e, m + A, m)`` for the ``n_e`` models in which it is linear, readout
    ``Wr (M, k, m + A)`` (logits are computed transposed, ``(k, B)`` per model).

    Edge slots: for a batch whose largest ensemble has ``K`` members, every ``(s, t)`` of the
    cell has ``K`` slots, one per member (a single cell is linear/skip/zero in the first and
    zero in the others). Pruning masks are stacked like their weights (``Ms``, ``Me[e]``,
    ``Mr``; ``None`` when no model of the batch prunes that layer; models without a mask
    hold ones) and ``masked_*`` flag the models that have one.

    With a lower-precision ``compute`` dtype (bfloat16 autocast), ``Ws``/``We``/``Wr`` stay
    the float32 master weights that the optimizer updates and ``Ws_c``/``We_c``/``Wr_c``
    are their copies in ``compute`` that the GEMMs read (refreshed after every update);
    otherwise the ``*_c`` names are the masters themselves.
    """

    def __init__(
        self,
        weights: list[_Weights],
        order: list[int],
        device: torch.device,
        dtype: torch.dtype,
        bias: bool,
        compute: torch.dtype | None = None,
    ) -> None:
        from trilemma.models import edge_name

        first = weights[order[0]]
        self.H = first.spec.nodes
        K = max(weights[i].spec.num_members for i in order)
        cell_edges = [(s, t) for t in range(1, self.H + 1) for s in range(t)]
        self.edges = [(s, t, member) for member in range(K) for s, t in cell_edges]  # edge slots
        self.names = [edge_name(s, t, member) for s, t, member in self.edges]
        Wr0 = first.layers["readout"][0]
        self.d, self.m, self.k = first.layers["stem"][0].shape[1], Wr0.shape[1], Wr0.shape[0]
        self.bias = bias
        self.A = int(bias)

        def op(spec: EnsembleSpec, s: int, t: int, member: int) -> int:
            return spec.members[member].cell.ops[t - 1][s] if member < spec.num_members else 0

        self.ops = [[op(weights[i].spec, s, t, mb) for (s, t, mb) in self.edges] for i in order]
        M = len(order)

        def stack(tensors: list[torch.Tensor]) -> torch.Tensor:
            return torch.stack(tensors).to(device=device, dtype=dtype).contiguous()

        def rows(layer: tuple[torch.Tensor, torch.Tensor | None, float]) -> torch.Tensor:
            w, b, _ = layer  # (out, in) -> (in + A, out)
            return torch.cat([w.t(), b[None]]) if b is not None else w.t()

        def mask_rows(mask: torch.Tensor | None, out: int, fan_in: int) -> torch.Tensor:
            m_ = torch.ones(out, fan_in, dtype=dtype) if mask is None else mask.to(dtype)
            return torch.cat([m_.t(), m_.new_ones(1, out)]) if bias else m_.t()

        def stacked_masks(name: str, models: list[int], out: int, fan_in: int,
                          transpose: bool = False) -> tuple[torch.Tensor | None, list[bool]]:
            flags = [name in weights[order[j]].masks for j in models]
            if not any(flags):
                return None, flags
            parts = [mask_rows(weights[order[j]].masks.get(name), out, fan_in) for j in models]
            return stack([p.t() if transpose else p for p in parts]), flags

        stem = [weights[i].layers["stem"] for i in order]
        readout = [weights[i].layers["readout"] for i in order]
        self.f_stem, self.f_out = stem[0][2], readout[0][2]
        self.Ws = stack([rows(layer) for layer in stem])
        self.Wr = stack([rows(layer).t() for layer in readout])
        self.Ms, self.masked_stem = stacked_masks("stem", list(range(M)), self.m, self.d)
        self.Mr, self.masked_readout = stacked_masks("readout", list(range(M)), self.k, self.m, transpose=True)
        self.We: list[torch.Tensor | None] = []
        self.Me: list[torch.Tensor | None] = []
        self.masked_edge: list[list[bool]] = []  # per slot, per holder (compact order)
        self.f_edge = 1.0
        self.pos: list[dict[int, int]] = []  # internal model -> compact index, per edge
        for e, name in enumerate(self.names):
            holders = [j for j in range(M) if self.ops[j][e] == LINEAR]
            self.pos.append({j: r for r, j in enumerate(holders)})
            parts = [weights[order[j]].layers[name] for j in holders]
            if parts:
                self.f_edge = parts[0][2]
            self.We.append(stack([rows(layer) for layer in parts]) if parts else None)
            me, flags = stacked_masks(name, holders, self.m, self.m)
            self.Me.append(me)
            self.masked_edge.append(flags)
        self.ct = dtype if compute is None else compute
        self.mixed = self.ct != dtype

        def copy(w: torch.Tensor) -> torch.Tensor:
            return w.to(self.ct) if self.mixed else w

        self.Ws_c, self.Wr_c = copy(self.Ws), copy(self.Wr)
        self.We_c = [None if w is None else copy(w) for w in self.We]
        self.shadow = {id(w): c for w, c in zip(self.params(), self.params_c())}

    def params(self) -> list[torch.Tensor]:
        return [self.Ws, self.Wr] + [w for w in self.We if w is not None]

    def params_c(self) -> list[torch.Tensor]:
        """The GEMMs' copies of :meth:`params`, in the same order."""
        return [self.Ws_c, self.Wr_c] + [w for w in self.We_c if w is not None]

    def model_slices(self, j: int) -> list[tuple[torch.Tensor, int]]:
        """(stacked tensor, row) of every parameter (and GEMM copy) of internal model ``j``."""
        out = [(self.Ws, j), (self.Wr, j)]
        for e in range(len(self.edges)):
            if j in self.pos[e]:
                out.append((self.We[e], self.pos[e][j]))  # type: ignore[arg-type]
        if self.mixed:
            out += [(self.shadow[id(w)], row) for w, row in out]
        return out

    def slots_into(self, s: int, t: int) -> list[int]:
        """The edge slots from node ``s`` into node ``t`` (one per member), in member order."""
        return [e for e, (a, b, _) in enumerate(self.edges) if (a, b) == (s, t)]

    def export(self, j: int, model: DAGMLP | EnsembleMLP) -> None:
        """Copy internal model ``j``'s weights into ``model`` (a DAGMLP / EnsembleMLP of the same spec)."""
        with torch.no_grad():
            pairs: list[tuple[nn.Module, torch.Tensor]] = [(model.stem, self.Ws[j])]
            for e, name in enumerate(self.names):
                We = self.We[e]
                if j in self.pos[e] and We is not None:
                    pairs.append((model.edges[name], We[self.pos[e][j]]))
            pairs.append((model.readout, self.Wr[j].t()))
            for seq, W in pairs:
                lin, _ = _layer_parts(seq)  # type: ignore[arg-type]
                n_in = W.shape[0] - self.A
                lin.weight.copy_(W[:n_in].t())
                if self.bias:
                    lin.bias.copy_(W[n_in])


# --------------------------------------------------------------------------- per-chunk programs
# A chunk's forward pass, loss and backward pass are a fixed list of tensor operations on
# pre-made views. They are encoded as op codes over a list of tensors and executed by one
# TorchScript function, so a whole training step of a chunk is a single call that runs
# without the GIL (worker threads then compute in parallel) and with less per-op overhead
# than Python. Op codes (arguments are indices into the tensor list unless noted):
_GEMM = 0  # out, a, b, beta (0/1), lr flag: out = beta·out + alpha·(a @ b), alpha = α (·−lr if flag)
_CLAMP = 1  # dst, src: dst = max(src, 0)
_RELU_ADD = 2  # dst, src: src = max(src, 0); dst += src
_ADD = 3  # dst, src
_COPY = 4  # dst, src
_ZERO = 7  # dst
_RELU_GRAD = 8  # out, grad, pre: out = grad·1[pre > 0]
_CE = 9  # logits, dlog, y3, sums, neg_ones, with grad (0/1): Σ log p(y) and dlog = p − onehot(y)
_ACC = 10  # logits, mx, eqf, rank_w, score, y3, correct: number of argmax hits (first-max rule)
_MSE = 11  # logits, dlog, tT, sums: Σ (logits − t)² and dlog = logits − t
_AXPY = 12  # dst, src: dst −= lr·src (a master weight from a lower-precision gradient)
_MUL = 13  # dst, src: dst *= src (a pruning mask on weights or gradients)


def _execute_program(ts: list[torch.Tensor], code: list[list[int]], alphas: list[float], lr: float) -> None:
    for i in range(len(code)):
        c = code[i]
        op = c[0]
        if op == 0:
            alpha = alphas[i] * (-lr if c[5] == 1 else 1.0)
            ts[c[1]].baddbmm_(ts[c[2]], ts[c[3]], beta=float(c[4]), alpha=alpha)
        elif op == 1:
            torch.clamp_min(ts[c[2]], 0.0, out=ts[c[1]])
        elif op == 2:
            ts[c[1]].add_(ts[c[2]].relu_())
        elif op == 3:
            ts[c[1]].add_(ts[c[2]])
        elif op == 4:
            ts[c[1]].copy_(ts[c[2]])
        elif op == 7:
            ts[c[1]].zero_()
        elif op == 8:
            torch.ops.aten.threshold_backward(ts[c[2]], ts[c[3]], 0.0, grad_input=ts[c[1]])
        elif op == 9:
            dlog = ts[c[2]]
            torch._log_softmax(ts[c[1]], 1, False, out=dlog)
            torch.sum(dlog.gather(1, ts[c[3]]), [1, 2], out=ts[c[4]])
            if c[6] == 1:
                dlog.exp_()
                dlog.scatter_add_(1, ts[c[3]], ts[c[5]])
        elif op == 10:
            logits, mx, eqf, score = ts[c[1]], ts[c[2]], ts[c[3]], ts[c[5]]
            # argmax with torch's tie rule as an outer reduction:
            # score = max_j (k − j)·1[logit_j == max] = k − (first argmax)
            torch.amax(logits, [1], True, out=mx)
            torch.eq(logits, mx, out=eqf)
            eqf.mul_(ts[c[4]])
            torch.amax(eqf, [1], True, out=score)
            torch.sum(score == ts[c[6]].neg() + logits.size(1), [1, 2], out=ts[c[7]])
        elif op == 11:
            dlog = ts[c[2]]
            torch.sub(ts[c[1]], ts[c[3]], out=dlog)
            torch.sum(dlog.square(), [1, 2], out=ts[c[4]])
        elif op == 12:
            ts[c[1]].add_(ts[c[2]], alpha=-lr)
        elif op == 13:
            ts[c[1]].mul_(ts[c[2]])


@functools.lru_cache(maxsize=1)
def _program_runner() -> Callable[[list[torch.Tensor], list[list[int]], list[float], float], None]:
    """The interpreter compiled with TorchScript on first use (it then runs without the
    GIL); the plain Python function if this torch cannot script it (same results)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.10 deprecates jit.script
            return torch.jit.script(_execute_program)
    except Exception as exc:  # noqa: BLE001 - any scripting failure falls back to eager Python
        logger.warning("TorchScript unavailable (%s); batched training runs its programs in Python", exc)
        return _execute_program


class _Plan:
    """Buffers, views and the compiled programs of one chunk at one row count.

    ``train=True`` plans keep every edge's pre-activation for the backward pass and own
    gathered input buffers; ``train=False`` plans (evaluation) read a fixed input slice
    shared by all models and reuse one scratch buffer for every edge. Node buffers have
    ``m + A`` columns, the last one constant (see :class:`_Stack`); element-wise work
    uses their first ``m`` columns.

    Programs: :attr:`train_code` = forward, loss (with gradient) and backward with the SGD
    update fused (or gradients written to the optimizer's buffers); :attr:`eval_code` =
    forward and loss. Slots :data:`X`, :data:`XT`, :data:`Y3`, :data:`TT`, :data:`SUMS`,
    :data:`CORRECT` of :attr:`ts` hold the step's inputs and outputs.
    """

    X, XT, Y3, TT, SUMS, CORRECT = range(6)

    def __init__(
        self,
        st: _Stack,
        chunk: _Chunk,
        rows: int,
        pool: dict[tuple[Any, ...], torch.Tensor],
        *,
        train: bool,
        fused: bool,
        grads: dict[int, torch.Tensor] | None,
        classify: bool,
        loss: str,
        x_fixed: torch.Tensor | None = None,
        y_fixed: torch.Tensor | None = None,
        t_fixed: torch.Tensor | None = None,
    ) -> None:
        C, B, m, k, H, A = chunk.size, rows, st.m, st.k, st.H, st.A
        d = st.d + A  # inputs carry the constant column too
        dev, dt, ct = st.Ws.device, st.Ws.dtype, st.ct  # master and compute (GEMM) dtypes
        tag = "train" if train else "eval"

        def buf(name: str, *shape: int, dtype: torch.dtype = ct, const: float | None = None) -> torch.Tensor:
            key = (tag, name, shape, dtype, const)
            if key not in pool:
                t = torch.empty(shape, device=dev, dtype=dtype)  # always written before read
                if _POISON_BUFFERS:  # tests: any read of an unwritten element shows up as NaN
                    t.fill_(float("nan") if dtype.is_floating_point else (True if dtype == torch.bool else -1))
                if const is not None:
                    t[..., m:] = const  # the constant column of a node buffer
                pool[key] = t
            return pool[key]

        self.chunk, self.rows, self.train = chunk, B, train
        empty = torch.empty(0, device=dev, dtype=dt)
        self.ts: list[torch.Tensor] = [empty] * 6  # the dynamic slots X .. CORRECT
        code: list[list[int]] = []
        alphas: list[float] = []

        def reg(t: torch.Tensor) -> int:
            self.ts.append(t)
            return len(self.ts) - 1

        def emit(op: int, *args: int, alpha: float = 0.0) -> None:
            code.append([op, *args])
            alphas.append(alpha)

        # inputs: fixed (evaluation), gathered per model, or shared views set per step
        self.x_buf = self.y_buf = self.t_buf = None
        if x_fixed is not None:
            self.set_inputs(*self.shared_inputs(C, x_fixed, y_fixed, t_fixed))  # type: ignore[arg-type]
        elif chunk.shared_slot is None:
            self.x_buf = buf("xC", C, B, d)
            self.y_buf = buf("yC", C, B, dtype=torch.int64)
            self.t_buf = buf("tC", C, B, k, dtype=dt)
            self.set_inputs(self.x_buf, self.x_buf.transpose(1, 2), self.y_buf.unsqueeze(1),
                            self.t_buf.transpose(1, 2))
        # node t: h_aug[t] (C, B, m + A) feeds GEMMs, h[t] = h_aug[t][..., :m]
        consts = [1.0 / st.f_edge] * H + [1.0 / st.f_out]
        h_aug = [buf(f"h{t}", C, B, m + A, const=consts[t] if A else None) for t in range(H + 1)]
        h = [reg(x[..., :m]) for x in h_aug]
        ha = [reg(x) for x in h_aug]
        haT = [reg(x.transpose(1, 2)) for x in h_aug]
        z0 = reg(buf("z0", C, B, m))  # stem pre-activation
        # logits and their gradient are kept transposed, (C, k, B): the readout GEMM then has
        # B (not k) output columns and the softmax reduces over an outer dimension.
        dlog_t = buf("dlog", C, k, B)
        logits, dlog, dlogT = reg(buf("logits", C, k, B)), reg(dlog_t), reg(dlog_t.transpose(1, 2))
        c0, c1 = chunk.start, chunk.stop
        Ws, Wr = st.Ws[c0:c1], st.Wr[c0:c1]  # masters (updated)
        Ws_c, Wr_c = st.Ws_c[c0:c1], st.Wr_c[c0:c1]  # what the GEMMs read
        f = st.f_edge

        # ---- forward. The first contribution to a row of a node is written (clamp /
        # copy), later ones are added, rows without contribution are zeroed: node buffers
        # are never zeroed as a whole.
        emit(_GEMM, z0, self.X, reg(Ws_c), 0, 0, alpha=st.f_stem)
        emit(_CLAMP, h[0], z0)
        for t in range(1, H + 1):
            written = [False] * C
            ht = self.ts[h[t]]
            for s, e in [(src, e) for src in range(t) for e in st.slots_into(src, t)]:
                out = buf(f"a{e}", C, B, m) if train else buf("scratch", C, B, m)
                for run in chunk.lin_runs.get(e, []):
                    a, b, kk = run.a, run.b, run.k
                    W_c = st.We_c[e][kk : kk + b - a]  # type: ignore[index]
                    emit(_GEMM, reg(out[a:b]), reg(h_aug[s][a:b]), reg(W_c), 0, 0, alpha=f)
                    for p, q in _segments(written, a, b):
                        # out keeps z (clamp: first writer) or relu(z) (adders): both give
                        # the ReLU mask 1[z > 0] of the backward pass
                        emit(_RELU_ADD if written[p] else _CLAMP, reg(ht[p:q]), reg(out[p:q]))
                    written[a:b] = [True] * (b - a)
                for a, b in chunk.skips.get(e, []):
                    hs = self.ts[h[s]]
                    for p, q in _segments(written, a, b):
                        emit(_ADD if written[p] else _COPY, reg(ht[p:q]), reg(hs[p:q]))
                    written[a:b] = [True] * (b - a)
            for p, q in _segments(written, 0, C):
                if not written[p]:
                    emit(_ZERO, reg(ht[p:q]))
        emit(_GEMM, logits, reg(Wr_c), haT[H], 0, 0, alpha=st.f_out)

        # ---- loss, in the master dtype (autocast computes losses in float32 too): with a
        # lower compute dtype the logits are copied up and the logits' gradient back down
        logits_l, dlog_l = logits, dlog
        if st.mixed:
            logits_l, dlog_l = reg(buf("logits_l", C, k, B, dtype=dt)), reg(buf("dlog_l", C, k, B, dtype=dt))
            emit(_COPY, logits_l, logits)
        if classify:
            mx, score = reg(buf("mx", C, 1, B, dtype=dt)), reg(buf("score", C, 1, B, dtype=dt))
            eqf = reg(buf("eqf", C, k, B, dtype=dt))
            rank_w = reg(torch.arange(k, 0, -1, device=dev, dtype=dt).view(1, k, 1))
            emit(_ACC, logits_l, mx, eqf, rank_w, score, self.Y3, self.CORRECT)
        if loss == "cross_entropy":
            neg_ones = buf("neg1", C, 1, B, dtype=dt)
            neg_ones.fill_(-1.0)
            emit(_CE, logits_l, dlog_l, self.Y3, self.SUMS, reg(neg_ones), int(train))
            grad_scale = 1.0 / B  # dlog is the gradient of the loss *sum*; the mean's 1/B
        else:
            emit(_MSE, logits_l, dlog_l, self.TT, self.SUMS)
            grad_scale = 2.0 / (B * k)
        if st.mixed and train:
            emit(_COPY, dlog, dlog_l)
        if not train:
            self.eval_code, self.eval_alphas = code, alphas
            return

        # ---- backward (same first-writer rule for the node gradients dh[s], s < H)
        dh_t = [buf(f"dh{t}", C, B, m) for t in range(H + 1)]
        dh = [reg(x) for x in dh_t]
        lr_flag = 1 if fused else 0

        def masked(target: torch.Tensor, mask: torch.Tensor | None, flags: Sequence[bool]) -> None:
            # target (rows of models) *= mask over the runs of models that have a mask
            if mask is None:
                return
            for p, q in _runs(flags):
                emit(_MUL, reg(target[p:q]), reg(mask[p:q]))

        def update(param: torch.Tensor, param_c: torch.Tensor, a_idx: int, b_idx: int, alpha: float,
                   grad: torch.Tensor | None, mask: torch.Tensor | None = None,
                   flags: Sequence[bool] = ()) -> None:
            # fused SGD: param −= lr·alpha·(a @ b); otherwise grad = alpha·(a @ b). With a
            # lower compute dtype the product is formed in it (as autocast's weight
            # gradient), the master is updated from it and its GEMM copy refreshed. A pruning
            # mask multiplies the updated weights (fused SGD: exactly the masked gradient's
            # update, the pruned weights being 0) or the gradient.
            if not st.mixed:
                if fused:
                    emit(_GEMM, reg(param), a_idx, b_idx, 1, lr_flag, alpha=alpha)
                    masked(param, mask, flags)
                else:
                    emit(_GEMM, reg(grad), a_idx, b_idx, 0, 0, alpha=alpha)  # type: ignore[arg-type]
                    masked(grad, mask, flags)  # type: ignore[arg-type]
                return
            gbuf = buf("grad", *param.shape)
            g = reg(gbuf)
            emit(_GEMM, g, a_idx, b_idx, 0, 0, alpha=alpha)
            masked(gbuf, mask if mask is None else mask.to(st.ct), flags)
            if fused:
                emit(_AXPY, reg(param), g)
                emit(_COPY, reg(param_c), reg(param))
            else:
                emit(_COPY, reg(grad), g)  # type: ignore[arg-type]  # the optimizer refreshes the copies

        g_out = st.f_out * grad_scale
        emit(_GEMM, dh[H], dlogT, reg(Wr_c[..., :m]), 0, 0, alpha=g_out)
        update(Wr, Wr_c, dlog, ha[H], g_out, grads[id(st.Wr)][c0:c1] if grads is not None else None,
               None if st.Mr is None else st.Mr[c0:c1], st.masked_readout[c0:c1])
        dwritten = [[False] * C for _ in range(H + 1)]
        dwritten[H] = [True] * C  # written by the readout
        for t in range(H, 0, -1):
            for p, q in _segments(dwritten[t], 0, C):
                if not dwritten[t][p]:
                    emit(_ZERO, reg(dh_t[t][p:q]))
            for s, e in [(src, e) for src in range(t - 1, -1, -1) for e in st.slots_into(src, t)]:
                dws = dwritten[s]
                for a, b in chunk.skips.get(e, []):
                    for p, q in _segments(dws, a, b):
                        emit(_ADD if dws[p] else _COPY, reg(dh_t[s][p:q]), reg(dh_t[t][p:q]))
                    dws[a:b] = [True] * (b - a)
                if not chunk.lin_runs.get(e):
                    continue
                Z = pool[("train", f"a{e}", (C, B, m), ct, None)]
                for run in chunk.lin_runs[e]:
                    a, b, kk = run.a, run.b, run.k
                    W = st.We[e][kk : kk + b - a]  # type: ignore[index]
                    W_c = st.We_c[e][kk : kk + b - a]  # type: ignore[index]
                    z = reg(Z[a:b])
                    emit(_RELU_GRAD, z, reg(dh_t[t][a:b]), z)  # δ = dh_t ⊙ 1[z > 0], in place of z
                    WT = W_c[:, :m, :].transpose(1, 2)  # the bias row takes no input gradient
                    for p, q in _segments(dws, a, b):
                        emit(_GEMM, reg(dh_t[s][p:q]), reg(Z[p:q]), reg(WT[p - a : q - a]), int(dws[p]), 0,
                             alpha=f)
                    gW = grads[id(st.We[e])][kk : kk + b - a] if grads is not None else None
                    Me = st.Me[e]
                    update(W, W_c, reg(h_aug[s][a:b].transpose(1, 2)), z, f, gW,
                           None if Me is None else Me[kk : kk + b - a], st.masked_edge[e][kk : kk + b - a])
                    dws[a:b] = [True] * (b - a)
        for p, q in _segments(dwritten[0], 0, C):
            if not dwritten[0][p]:
                emit(_ZERO, reg(dh_t[0][p:q]))
        emit(_RELU_GRAD, dh[0], dh[0], z0)
        update(Ws, Ws_c, self.XT, dh[0], st.f_stem, grads[id(st.Ws)][c0:c1] if grads is not None else None,
               None if st.Ms is None else st.Ms[c0:c1], st.masked_stem[c0:c1])
        self.train_code, self.train_alphas = code, alphas

    @staticmethod
    def shared_inputs(C: int, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Views that feed rows ``x (B, d)``, ``y (B,)``, ``t (B, k)`` to all C models of a chunk."""
        B = x.shape[0]
        x_in = x.expand(C, B, x.shape[1])
        return x_in, x_in.transpose(1, 2), y.view(1, 1, B).expand(C, 1, B), t.t().expand(C, t.shape[1], B)

    def set_inputs(self, x: torch.Tensor, xT: torch.Tensor, y3: torch.Tensor, tT: torch.Tensor) -> None:
        """Inputs ``(C, B, d)`` (and transposed), labels ``(C, 1, B)``, targets ``(C, k, B)``."""
        self.ts[0], self.ts[1], self.ts[2], self.ts[3] = x, xT, y3, tT

    def train_step(self, lr: float, sums: torch.Tensor, correct: torch.Tensor | None) -> None:
        """One SGD step of every model of the chunk; writes loss sums (``Σ log p(y)`` for
        cross-entropy, ``Σ`` squared errors for MSE) and correct counts, ``(C,)``."""
        self.ts[4] = sums
        if correct is not None:
            self.ts[5] = correct
        _program_runner()(self.ts, self.train_code, self.train_alphas, lr)

    def eval_step(self, sums: torch.Tensor, correct: torch.Tensor | None) -> None:
        """Forward pass and loss only (as :meth:`train_step`, without gradient)."""
        self.ts[4] = sums
        if correct is not None:
            self.ts[5] = correct
        _program_runner()(self.ts, self.eval_code, self.eval_alphas, 0.0)


def _gemm_shapes(code: list[list[int]], ts: list[torch.Tensor]) -> list[tuple[int, int, int, int]]:
    """``(batch, rows, inner, cols)`` of every GEMM of a program (``out (batch, rows, cols)``)."""
    shapes = []
    for c in code:
        if c[0] == _GEMM:
            out, b = ts[c[1]], ts[c[3]]  # ``a`` may be a per-step input slot; ``b`` never is
            shapes.append((int(out.shape[0]), int(out.shape[1]), int(b.shape[-2]), int(out.shape[2])))
    return shapes


def _gemm_work(counts: Counter[tuple[int, int, int, int]]) -> dict[str, Any]:
    """Plain-JSON summary of GEMM calls: shapes with call counts, and their FLOPs."""
    return {
        "shapes": [[*shape, n] for shape, n in sorted(counts.items())],
        "flop": float(sum(2.0 * b * r * k * c * n for (b, r, k, c), n in counts.items())),
    }


# --------------------------------------------------------------------------- optimizer
class _Optimizer:
    """``torch.optim.SGD`` (momentum, weight decay) / ``Adam`` on stacked tensors, per chunk."""

    def __init__(self, st: _Stack, config: TrainConfig) -> None:
        self.config = config
        self.params = st.params()
        self.fused = config.optimizer == "sgd" and config.momentum == 0 and config.weight_decay == 0
        self.grads = {} if self.fused else {id(p): torch.zeros_like(p) for p in self.params}
        self.state: dict[int, list[torch.Tensor]] = {}
        if config.optimizer == "sgd" and config.momentum:
            self.state = {id(p): [torch.zeros_like(p)] for p in self.params}
        elif config.optimizer == "adam":
            self.state = {id(p): [torch.zeros_like(p), torch.zeros_like(p)] for p in self.params}
        self.chunk_views: dict[int, tuple[list[torch.Tensor], list[torch.Tensor], list[list[torch.Tensor]]]] = {}
        self.copies: dict[int, list[torch.Tensor]] = {}  # per chunk: the GEMM copies to refresh (autocast)
        self.shadow = st.shadow if st.mixed else None

    def register_chunk(self, st: _Stack, chunk: _Chunk) -> None:
        """Pre-make the slices of every parameter/gradient/state tensor that a chunk owns."""
        if self.fused:
            return
        ps, gs, ss, cs = [], [], [], []
        for p in self.params:
            lo, hi = self._rows(st, p, chunk)
            if hi <= lo:
                continue
            ps.append(p[lo:hi])
            gs.append(self.grads[id(p)][lo:hi])
            ss.append([s[lo:hi] for s in self.state.get(id(p), [])])
            if self.shadow is not None:
                cs.append(self.shadow[id(p)][lo:hi])
        self.chunk_views[id(chunk)] = (ps, gs, ss)
        self.copies[id(chunk)] = cs

    @staticmethod
    def _rows(st: _Stack, p: torch.Tensor, chunk: _Chunk) -> tuple[int, int]:
        for e, W in enumerate(st.We):
            if p is W:
                rows = [st.pos[e][j] for j in range(chunk.start, chunk.stop) if j in st.pos[e]]
                return (rows[0], rows[-1] + 1) if rows else (0, 0)
        return chunk.start, chunk.stop

    def step(self, chunk: _Chunk, lr: float, t: int) -> None:
        """Update the chunk's parameters after global step ``t`` (1-based; Adam's bias correction)."""
        if self.fused:
            return
        ps, gs, ss = self.chunk_views[id(chunk)]
        cfg = self.config
        if cfg.weight_decay:
            gs = list(torch._foreach_add(gs, ps, alpha=cfg.weight_decay))
        if cfg.optimizer == "sgd":
            if cfg.momentum:
                bufs = [s[0] for s in ss]
                torch._foreach_mul_(bufs, cfg.momentum)
                torch._foreach_add_(bufs, gs)
                gs = bufs
            torch._foreach_add_(ps, gs, alpha=-lr)
        else:
            self._adam(ps, gs, ss, lr, t)
        if self.copies[id(chunk)]:
            torch._foreach_copy_(self.copies[id(chunk)], ps)

    def _adam(self, ps: list[torch.Tensor], gs: list[torch.Tensor], ss: list[list[torch.Tensor]], lr: float,
              t: int) -> None:
        cfg = self.config
        beta1, beta2 = cfg.betas
        m_, v_ = [s[0] for s in ss], [s[1] for s in ss]
        torch._foreach_lerp_(m_, gs, 1 - beta1)
        torch._foreach_mul_(v_, beta2)
        torch._foreach_addcmul_(v_, gs, gs, value=1 - beta2)
        step_size = lr / (1 - beta1**t)
        bc2_sqrt = math.sqrt(1 - beta2**t)
        denom = torch._foreach_sqrt(v_)
        torch._foreach_div_(denom, bc2_sqrt)
        torch._foreach_add_(denom, cfg.adam_eps)
        torch._foreach_addcdiv_(ps, m_, denom, value=-step_size)

    def freeze(self, st: _Stack, j: int) -> None:
        """Zero every parameter and state row of internal model ``j``."""
        with torch.no_grad():
            for tensor, row in st.model_slices(j):
                tensor[row].zero_()
                for s in self.state.get(id(tensor), []):
                    s[row].zero_()


# --------------------------------------------------------------------------- entry point
def _workers(workers: int | None, device: torch.device, n_chunks: int) -> int:
    if workers is not None:
        return min(workers, n_chunks)
    if device.type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), n_chunks))


def _assign(chunks: list[_Chunk], st: _Stack, n_workers: int) -> dict[int, int]:
    """Chunk -> worker, balancing the chunks' GEMM work (longest first onto the least loaded)."""
    cost = {id(ch): sum(2 + sum(op == LINEAR for op in st.ops[j]) for j in range(ch.start, ch.stop))
            for ch in chunks}
    load = [0] * n_workers
    owner = {}
    for ch in sorted(chunks, key=lambda c: (-cost[id(c)], c.start)):
        w = min(range(n_workers), key=lambda i: (load[i], i))
        owner[id(ch)] = w
        load[w] += cost[id(ch)]
    return owner


def _run_workers(executor: ThreadPoolExecutor | None, fn: Callable[[int], None], n_workers: int) -> None:
    """Run ``fn(w)`` for every worker ``w`` (in parallel when there is an executor); re-raise errors."""
    if executor is None:
        fn(0)
        return

    def one(w: int) -> None:
        torch.set_num_threads(1)  # OpenMP's thread count is per calling thread
        fn(w)

    for future in [executor.submit(one, w) for w in range(n_workers)]:
        future.result()


def _seeds(seeds: int | Sequence[int] | None, M: int, default: int) -> list[int]:
    if seeds is None:
        return [default] * M
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        out = [seeds] * M
    elif isinstance(seeds, Sequence) and not isinstance(seeds, str):
        out = list(seeds)
        if len(out) != M:
            raise InvalidArgumentError(f"seeds must have one entry per spec ({M}), got {len(out)}")
    else:
        raise InvalidTypeError(f"seeds must be an int, a sequence of ints or None, got {type(seeds).__name__}")
    for s in out:
        if not is_int(s) or s < 0:
            raise InvalidArgumentError(f"every seed must be an int >= 0, got {s!r}")
    return out


def _parse_spec(spec: object) -> EnsembleSpec:
    """A cell or ensemble (spec or string) as an :class:`~trilemma.spaces.EnsembleSpec`."""
    if isinstance(spec, (CellSpec, EnsembleSpec, str)):
        return EnsembleSpec.parse(spec)
    raise InvalidTypeError(f"specs must hold CellSpec, EnsembleSpec or their strings, got {type(spec).__name__}")


def _build(spec: EnsembleSpec, in_features: int, num_classes: int, width: int, **kw: Any) -> DAGMLP | EnsembleMLP:
    """The module a spec trains as: a plain cell's DAGMLP, else an EnsembleMLP (same weights)."""
    from trilemma.models import build_ensemble, build_model

    if spec.is_cell:
        return build_model(spec.members[0].cell, in_features, num_classes, width, **kw)
    return build_ensemble(spec, in_features, num_classes, width, **kw)


def train_batched(
    specs: Sequence[CellSpec | EnsembleSpec | str],
    dataset: Dataset,
    config: TrainConfig | None = None,
    *,
    width: int = 256,
    seeds: int | Sequence[int] | None = None,
    init: str = "he",
    bias: bool = True,
    batchnorm: bool = False,
    chunk_size: int | None = None,
    workers: int | None = None,
    callback: EpochCallback | None = None,
    keep_weights: bool = False,
) -> list[TrainResult]:
    """Train M DAG-MLP cells (same H, same width) together; one result per spec, in order.

    Model ``i`` is ``build_model(specs[i], dataset.in_features, dataset.num_outputs, width,
    bias=bias, init=init, seed=seeds[i], dtype=...)`` trained with the data order of seed
    ``seeds[i]``: the result equals ``train_cell(specs[i], ..., seed=seeds[i])`` up to
    floating-point rounding (tested in float64 to 1e-6 relative). Ensembles and pruned cells
    (:class:`~trilemma.spaces.EnsembleSpec`, e.g. ``"1_22_221@0.2+2_02_002@0.5"``) are
    ``build_ensemble(...)`` and train in the same computation as the cells.

    Args:
        specs: Cells or ensembles (specs or strings), all with the same number of nodes H.
            Repeats are allowed (e.g. several seeds of one cell).
        dataset: A classification or regression :class:`~trilemma.data.Dataset`.
        config: The protocol (default :class:`TrainConfig`); ``config.seed`` is the seed of
            every model when ``seeds`` is None.
        width: m, the width of every layer.
        seeds: One seed per spec, one seed for all, or None.
        init: ``"he"`` or ``"ntk"`` (see :func:`~trilemma.models.build_model`).
        bias: Whether layers have (zero-initialized) biases.
        batchnorm: Must be False (not supported in batched mode).
        chunk_size: Models per chunk (default :data:`DEFAULT_CPU_CHUNK` on the CPU, all
            models on a GPU).
        workers: CPU worker threads, each training its own chunks with one intra-op
            thread (default: ``torch.get_num_threads()``; 1 on a GPU). While more than one
            worker runs, torch's intra-op thread count is set to 1 and restored afterwards.
        callback: Called with an :class:`EpochRecord` per model and recorded epoch.
        keep_weights: Store each model's trained ``state_dict`` (CPU) in its result.

    ``config.device`` chooses the device (``"cuda"`` trains on the GPU; never chosen
    silently) and ``config.autocast="bfloat16"`` the mixed-precision mode (module docstring).

    Returns:
        ``TrainResult`` per spec, in the order of ``specs``; ``wall_time`` is the whole
        batched run's time and ``metadata["batched"]`` holds the run's facts (chunks,
        workers, times, and ``gemm_train_epoch`` / ``gemm_evaluation``: the GEMM shapes
        ``[batch, rows, inner, cols, calls]`` issued per epoch / per evaluation, with their
        FLOPs).

    Raises:
        InvalidArgumentError: empty ``specs``, mixed H, ``batchnorm=True``, bad seeds or
            chunk size, a dataset/loss mismatch, an unavailable device, or autocast with
            ``init="ntk"`` and ``bias=True``.
        InvalidTypeError: wrong argument types.
    """
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise InvalidTypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if batchnorm:
        raise InvalidArgumentError(
            "train_batched does not support batchnorm=True (BatchNorm statistics are not implemented in the "
            "batched kernels); train such models one at a time with train_cell(..., batchnorm=True)"
        )
    if isinstance(specs, (str, CellSpec, EnsembleSpec)) or not isinstance(specs, Sequence) or len(specs) == 0:
        raise InvalidArgumentError("specs must be a non-empty sequence of CellSpec / EnsembleSpec or their strings")
    parsed = [_parse_spec(s) for s in specs]
    if len({s.nodes for s in parsed}) != 1:
        raise InvalidArgumentError(
            f"all specs must have the same number of nodes H; got H in {sorted({s.nodes for s in parsed})}"
        )
    dataset = _check_dataset(dataset)
    loss_name = config.resolved_loss(dataset.task)
    M = len(parsed)
    seed_list = _seeds(seeds, M, config.seed)
    if chunk_size is not None and (not is_int(chunk_size) or chunk_size < 1):
        raise InvalidArgumentError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    if workers is not None and (not is_int(workers) or workers < 1):
        raise InvalidArgumentError(f"workers must be a positive int or None, got {workers!r}")
    device = resolve_device(config.device)
    dtype = config.torch_dtype or torch.float32
    compute = check_autocast(config, device)
    if compute is not None and init == "ntk" and bias:
        raise InvalidArgumentError(
            "train_batched does not support autocast with init='ntk' and bias=True (the folded bias's constant "
            "input 1/f is not exact in bfloat16); use init='he', bias=False, or train_cell")
    t_start = time.perf_counter()

    # ---------------------------------------------------------------- data
    data = dataset.to(device=device, dtype=dtype)
    x_tr, x_te = _flat(data.x_train).contiguous(), _flat(data.x_test).contiguous()
    classify = data.y_train.dim() == 1
    k = dataset.num_outputs
    y_tr = data.y_train if classify else torch.zeros(x_tr.shape[0], dtype=torch.int64, device=device)
    y_te = data.y_test if classify else torch.zeros(x_te.shape[0], dtype=torch.int64, device=device)

    def targets(y: torch.Tensor, yl: torch.Tensor) -> torch.Tensor:
        if not classify:
            return y.reshape(y.shape[0], k).contiguous()
        return torch.nn.functional.one_hot(yl, k).to(dtype)

    t_tr, t_te = targets(data.y_train, y_tr), targets(data.y_test, y_te)
    n = x_tr.shape[0]
    n_seen = _check_batches(config, n)
    B = config.batch_size

    # ---------------------------------------------------------------- models and layout
    weights = [
        _seeded_weights(spec, dataset.in_features, k, width, bias=bias, init=init, seed=sd, dtype=dtype)
        for spec, sd in zip(parsed, seed_list)
    ]
    probe = next((i for i, s in enumerate(parsed) if s.pruned), 0)  # check a pruned model's masks too
    check = _weights_of(_build(parsed[probe], dataset.in_features, k, width, bias=bias, init=init,
                               seed=seed_list[probe], dtype=dtype))
    ref = weights[probe]
    if check.layers.keys() != ref.layers.keys() or not all(
        torch.equal(a[0], b[0]) and a[2] == b[2] for a, b in zip(check.layers.values(), ref.layers.values())
    ) or check.masks.keys() != ref.masks.keys() or not all(torch.equal(check.masks[n], ref.masks[n]) for n in ref.masks):
        logger.warning("replayed initialization differs from the built model; building every model instead")
        weights = [
            _weights_of(_build(spec, dataset.in_features, k, width, bias=bias, init=init, seed=sd, dtype=dtype))
            for spec, sd in zip(parsed, seed_list)
        ]
    num_params = [w.num_params for w in weights]
    n_slots = max(len(p.digits) for p in parsed)
    padded = [list(p.digits) + [0] * (n_slots - len(p.digits)) for p in parsed]
    order = sorted(
        range(M),
        key=lambda i: (
            _gray_rank([int(op == LINEAR) for op in padded[i]]),
            _gray_rank([int(op == SKIP) for op in padded[i]]),
            seed_list[i],
            i,
        ),
    )
    st = _Stack(weights, order, device, dtype, bias, compute=compute)
    del weights
    if bias:  # inputs carry the constant column of the stem's folded bias (see _Stack)
        x_tr, x_te = (torch.cat([x, x.new_full((x.shape[0], 1), 1.0 / st.f_stem)], 1) for x in (x_tr, x_te))
    if st.mixed:  # the GEMMs read inputs in the compute dtype (autocast's cast of the stem's input)
        x_tr, x_te = x_tr.to(st.ct), x_te.to(st.ct)
    distinct = sorted(set(seed_list))
    slot_of = {sd: u for u, sd in enumerate(distinct)}
    slots = torch.tensor([slot_of[seed_list[i]] for i in order], device=device)
    if chunk_size is not None:
        C = chunk_size
    elif device.type != "cpu":
        C = M
    else:  # at least one chunk per worker thread
        C = max(1, min(DEFAULT_CPU_CHUNK, -(-M // (workers or torch.get_num_threads()))))
    chunks: list[_Chunk] = []
    for c0 in range(0, M, C):
        c1 = min(M, c0 + C)
        chunk_slots = sorted({int(v) for v in slots[c0:c1].tolist()})
        ch = _Chunk(c0, c1, chunk_slots, chunk_slots[0] if len(chunk_slots) == 1 else None)
        for e in range(len(st.edges)):
            lin = [st.ops[j][e] == LINEAR for j in range(c0, c1)]
            ch.lin_runs[e] = [_LinRun(e, a, b, st.pos[e][c0 + a]) for a, b in _runs(lin)]
            # a skip edge is a copy/add over each run of models that have it (measured faster
            # than one masked multiply-add over the span of the runs)
            skip = [st.ops[j][e] == SKIP for j in range(c0, c1)]
            if any(skip):
                ch.skips[e] = _runs(skip)
        chunks.append(ch)
    opt = _Optimizer(st, config)
    for ch in chunks:
        opt.register_chunk(st, ch)
    # Worker threads (CPU): each owns a set of chunks and its own buffers and runs them with
    # one intra-op thread, so a chunk's working set stays in one core's cache. A chunk's
    # step is one call of the TorchScript program, which runs without the GIL, so the
    # workers compute in parallel.
    n_workers = _workers(workers, device, len(chunks))
    owner = _assign(chunks, st, n_workers)
    pools: list[dict[tuple[Any, ...], torch.Tensor]] = [{} for _ in range(n_workers)]
    batch_rows = sorted({min(B, n_seen - s0) for s0 in range(0, n_seen, B)})
    train_plans = {
        (id(ch), r): _Plan(st, ch, r, pools[owner[id(ch)]], train=True, fused=opt.fused,
                           grads=opt.grads or None, classify=classify, loss=loss_name)
        for ch in chunks
        for r in batch_rows
    }

    def eval_plans(x: torch.Tensor, y: torch.Tensor, tt: torch.Tensor) -> list[list[_Plan]]:
        out: list[list[_Plan]] = [[] for _ in range(n_workers)]
        rows = min(config.eval_batch_size, EVAL_ROWS, max(1, x.shape[0]))
        for r0 in range(0, x.shape[0], rows):
            r1 = min(x.shape[0], r0 + rows)
            for ch in chunks:
                w = owner[id(ch)]
                out[w].append(_Plan(st, ch, r1 - r0, pools[w], train=False, fused=True, grads=None,
                                    classify=classify, loss=loss_name, x_fixed=x[r0:r1], y_fixed=y[r0:r1],
                                    t_fixed=tt[r0:r1]))
        return out

    test_plans = eval_plans(x_te, y_te, t_te) if (config.eval_every and x_te.shape[0]) else []
    full_plans = eval_plans(x_tr, y_tr, t_tr) if config.full_train_eval else []
    train_gemms: Counter[tuple[int, int, int, int]] = Counter()
    for (_, rows), plan in train_plans.items():
        uses = sum(r == rows for r in (min(B, n_seen - s0) for s0 in range(0, n_seen, B)))
        for shape in _gemm_shapes(plan.train_code, plan.ts):
            train_gemms[shape] += uses
    eval_gemms: Counter[tuple[int, int, int, int]] = Counter(
        shape for per_worker in (*test_plans, *full_plans) for plan in per_worker
        for shape in _gemm_shapes(plan.eval_code, plan.ts))
    synchronize(device)
    setup_time = time.perf_counter() - t_start
    logger.info("batched training of %d models (H=%d, width %d): %d chunk(s) of <= %d, %d worker(s), %s, %s",
                M, st.H, width, len(chunks), C, n_workers, device, str(dtype).removeprefix("torch."))

    def evaluate(plans: list[list[_Plan]], count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        sums = torch.zeros(M, dtype=torch.float64, device=device)
        correct = torch.zeros(M, dtype=torch.int64, device=device)

        def work(w: int) -> None:
            with torch.no_grad():
                for plan in plans[w]:
                    ch = plan.chunk
                    s_ = torch.empty(ch.size, dtype=dtype, device=device)
                    c_ = torch.empty(ch.size, dtype=torch.int64, device=device) if classify else None
                    plan.eval_step(s_, c_)
                    sums[ch.start : ch.stop] += s_.double()
                    if c_ is not None:
                        correct[ch.start : ch.stop] += c_

        _run_workers(pool_exec, work, n_workers)
        return sums * loss_sign / count, (correct.double() / count if classify else None)

    def train_epoch(w: int, perms: torch.Tensor, lr: float, first_step: int) -> None:
        # chunk-major: a chunk runs all steps of the epoch before the next chunk starts, so
        # its weights and buffers stay in cache from one step to the next
        batches = perms.split(B, dim=1)[:steps_per_epoch]  # (seeds, rows) per step
        with torch.no_grad():
            for ch in chunks_of[w]:
                shared = ch.shared_slot
                own_slots = slots[ch.start : ch.stop]
                for step, (idx, (plan, sums, correct)) in enumerate(zip(batches, steps_of[id(ch)])):
                    if shared is not None:  # views of the epoch's shuffled data, no copy
                        plan.set_inputs(*shuffled[(shared, ch.size)][step])
                    else:
                        assert plan.x_buf is not None and plan.y_buf is not None and plan.t_buf is not None
                        sel = idx[own_slots].reshape(-1)
                        torch.index_select(x_tr, 0, sel, out=plan.x_buf.view(-1, x_tr.shape[1]))
                        torch.index_select(y_tr, 0, sel, out=plan.y_buf.view(-1))
                        if mse:
                            torch.index_select(t_tr, 0, sel, out=plan.t_buf.view(-1, k))
                    plan.train_step(lr, sums, correct)
                    if not opt.fused:
                        opt.step(ch, lr, first_step + step + 1)

    chunks_of = [[ch for ch in chunks if owner[id(ch)] == w] for w in range(n_workers)]
    steps_per_epoch = len(range(0, n_seen, B))
    # per-step, per-model loss sums and correct counts of an epoch (every entry is written)
    loss_rows = torch.empty(steps_per_epoch, M, dtype=dtype, device=device)
    correct_rows = torch.zeros(steps_per_epoch, M, dtype=torch.int64, device=device)
    step_rows = [min(B, n_seen - s0) for s0 in range(0, n_seen, B)]
    steps_of = {  # per chunk and step: the plan and the views its loss sums/correct counts go to
        id(ch): [
            (train_plans[(id(ch), rows)], loss_rows[step, ch.start : ch.stop],
             correct_rows[step, ch.start : ch.stop] if classify else None)
            for step, rows in enumerate(step_rows)
        ]
        for ch in chunks
    }
    mse = loss_name == "mse"
    # chunks whose models share one seed read the epoch's shuffled data through views
    epoch_data = {
        u: (x_tr.new_empty(x_tr.shape), y_tr.new_empty(y_tr.shape), t_tr.new_empty(t_tr.shape))
        for u in sorted({ch.shared_slot for ch in chunks if ch.shared_slot is not None})
    }
    shuffled = {
        (u, size): [_Plan.shared_inputs(size, xe[s0 : s0 + r], ye[s0 : s0 + r], te[s0 : s0 + r])
                    for s0, r in zip(range(0, n_seen, B), step_rows)]
        for u, (xe, ye, te) in epoch_data.items()
        for size in {ch.size for ch in chunks}
    }
    # loss_rows hold Σ log p(y) for cross-entropy (negated here) and Σ squared errors for MSE
    loss_sign = -1.0 if loss_name == "cross_entropy" else 1.0 / k

    # ---------------------------------------------------------------- training loop
    gens = [torch.Generator(device="cpu").manual_seed(sd) for sd in distinct]
    active = torch.ones(M, dtype=torch.bool)
    hist: dict[str, list[Any]] = {k_: [] for k_ in ("train_loss", "train_acc", "step_correct", "test", "full", "lr")}
    stopped_at = [config.epochs] * M  # number of recorded epochs per internal model
    diverged_epoch: list[int | None] = [None] * M
    prev_threads = torch.get_num_threads()
    pool_exec = ThreadPoolExecutor(n_workers, thread_name_prefix="trilemma-batched") if n_workers > 1 else None
    train_time = time.perf_counter()
    train_cpu = time.process_time()
    eval_time = 0.0
    try:
        for epoch in range(1, config.epochs + 1):
            lr = lr_at(config, epoch - 1)
            perms = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
            first = (epoch - 1) * steps_per_epoch
            for u, (xe, ye, te) in epoch_data.items():  # the data in this epoch's order, per seed
                torch.index_select(x_tr, 0, perms[u], out=xe)
                torch.index_select(y_tr, 0, perms[u], out=ye)
                if mse:
                    torch.index_select(t_tr, 0, perms[u], out=te)
            _run_workers(pool_exec, functools.partial(train_epoch, perms=perms, lr=lr, first_step=first), n_workers)
            # ---------------------------------------------------- end of epoch
            epoch_loss = (loss_rows.double().sum(0) * loss_sign / n_seen).cpu()
            bad = active & ~torch.isfinite(epoch_loss)
            for j in torch.nonzero(bad).flatten().tolist():
                diverged_epoch[j] = epoch
                stopped_at[j] = epoch - 1
                active[j] = False
                opt.freeze(st, j)
                logger.info("model %d (%s) diverged in epoch %d", order[j], parsed[order[j]].name, epoch)
            hist["lr"].append(lr)
            hist["train_loss"].append(epoch_loss)
            hist["train_acc"].append((correct_rows.sum(0).double() / n_seen).cpu() if classify else None)
            if classify:  # per-step counts (steps_to_<pct>), the same as train() records
                hist["step_correct"].append(correct_rows.cpu().clone())
            test = full = None
            if test_plans and config.evaluates(epoch):
                t_eval = time.perf_counter()
                tl, ta = evaluate(test_plans, x_te.shape[0])
                synchronize(device)
                eval_time += time.perf_counter() - t_eval
                test = (tl.cpu(), ta.cpu() if ta is not None else None)
                if full_plans:
                    fl, fa = evaluate(full_plans, n)
                    full = (fl.cpu(), fa.cpu() if fa is not None else None)
            hist["test"].append(test)
            hist["full"].append(full)
            if logger.isEnabledFor(logging.INFO):
                live = epoch_loss[active]
                logger.info("epoch %d/%d: lr %.4g, mean train loss %.5g over %d active model(s), %.1fs",
                            epoch, config.epochs, lr, float(live.mean()) if live.numel() else float("nan"),
                            int(active.sum()), time.perf_counter() - train_time)
            if callback is not None:
                for j in torch.nonzero(active).flatten().tolist():
                    callback(EpochRecord(
                        epoch, order[j], float(epoch_loss[j]),
                        float(hist["train_acc"][-1][j]) if classify else None,
                        float(test[0][j]) if test else None,
                        float(test[1][j]) if (test and test[1] is not None) else None, lr,
                    ))
            if not bool(active.any()):
                break
    finally:
        if n_workers > 1:
            torch.set_num_threads(prev_threads)
        if pool_exec is not None:
            pool_exec.shutdown()
    synchronize(device)
    wall = time.perf_counter() - t_start
    train_wall = time.perf_counter() - train_time
    train_cpu = time.process_time() - train_cpu

    # ---------------------------------------------------------------- results
    results: list[TrainResult | None] = [None] * M
    facts = {
        "models": M,
        "chunks": len(chunks),
        "chunk_size": C,
        "workers": n_workers,
        "fused_sgd": opt.fused,
        "setup_time": setup_time,
        "train_time": train_wall,
        "train_cpu_time": train_cpu,
        "eval_time": eval_time,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        # the GEMMs actually issued: per epoch of training, per evaluation (test + full-train passes)
        "gemm_train_epoch": _gemm_work(train_gemms),
        "gemm_evaluation": _gemm_work(eval_gemms),
        "evaluations": sum(h is not None for h in hist["test"]),
    }
    step_correct = torch.stack(hist["step_correct"]) if hist["step_correct"] else None  # (epochs, steps, M)
    for j, i in enumerate(order):
        E = min(stopped_at[j], len(hist["train_loss"]))
        ev = [e for e in range(1, E + 1) if hist["test"][e - 1] is not None]
        state = None
        if keep_weights:
            model = _build(parsed[i], dataset.in_features, k, width, bias=bias, init=init, seed=seed_list[i],
                           dtype=dtype)
            st.export(j, model)
            state = {key: v.detach().cpu().clone() for key, v in model.state_dict().items()}
        results[i] = TrainResult(
            status="diverged" if diverged_epoch[j] is not None else "completed",
            epochs=E,
            train_loss=[float(hist["train_loss"][e][j]) for e in range(E)],
            train_acc=[float(hist["train_acc"][e][j]) for e in range(E)] if classify else None,
            eval_epochs=ev,
            test_loss=[float(hist["test"][e - 1][0][j]) for e in ev],
            test_acc=[float(hist["test"][e - 1][1][j]) for e in ev] if classify else None,
            lr=hist["lr"][:E],
            config=config.replace(seed=seed_list[i], dtype=str(dtype).removeprefix("torch."),
                                  device=str(device)),
            loss=loss_name,
            num_params=num_params[i],
            wall_time=wall,
            diverged_epoch=diverged_epoch[j],
            train_loss_full=[float(hist["full"][e - 1][0][j]) for e in ev] if config.full_train_eval else None,
            train_acc_full=([float(hist["full"][e - 1][1][j]) for e in ev] if classify else None)
            if config.full_train_eval else None,
            train_step_correct=step_correct[:E, :, j].tolist() if step_correct is not None else None,
            step_rows=list(step_rows),
            seed=seed_list[i],
            spec=parsed[i].name,
            final_state=state,
            metadata={"dataset": dataset.name, "width": width, "init": init, "bias": bias, "batchnorm": False,
                      "batched": facts},
        )
    logger.info("batched training of %d models done in %.2fs (%d diverged)", M, wall,
                sum(r.diverged for r in results if r is not None))
    return results  # type: ignore[return-value]
