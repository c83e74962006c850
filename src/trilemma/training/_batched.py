"""Train many DAG-MLP cells at once as one vectorized computation.

``train_batched(specs, ...)`` is mathematically the same as calling
:func:`~trilemma.training.train_cell` on every spec with its seed (same initialization,
same mini-batch order, same optimizer), but runs all models together:

* **Stacked weights.** Every layer kind is one tensor over models: the stem ``(M, d, m)``
  and, per edge ``(s, t)`` of the cell, ``(n_e, m, m)`` holding only the ``n_e`` models in
  which that edge is linear (stored transposed, ``y = x @ W``), and the readout
  ``(M, k, m)``, which computes the logits transposed, ``(k, B)`` per model (a GEMM with B
  rather than k output columns, and a softmax over an outer dimension).
* **Model order.** Models are re-ordered internally (Gray-code order of their linear-edge
  pattern) so that, for each edge, the models where it is linear form few contiguous
  runs. Each run is one ``baddbmm`` on *views*: no gather or scatter of activations.
  Skip edges are an in-place masked add over the run of models that has them. The first
  contribution to a node is written rather than added, so node buffers are never zeroed.
* **Chunks and workers.** Models are processed in chunks (default <= 16 on the CPU, all on a
  GPU) so that a chunk's activations stay in cache through its forward and backward pass;
  on the CPU, worker threads (one per core, one intra-op thread each) own the chunks.
* **Manual backward, fused update.** The backward pass is written out (ReLU masks,
  ``baddbmm`` for input and weight gradients). For plain SGD (the papers' protocol) the
  weight update is fused into the gradient GEMM (``W.baddbmm_(hᵀ, δ, alpha=−lr)``), so no
  gradient is ever stored; momentum, weight decay and Adam keep per-parameter state and
  update with ``torch._foreach`` ops, following ``torch.optim.SGD``/``Adam`` exactly.
* **Loss.** Each model's loss is the mean over its own mini-batch; the gradient of each
  model is its own (the batched objective is the sum of the models' losses).
* **Divergence.** A model whose epoch loss is non-finite is recorded as ``"diverged"`` in
  that epoch (as :func:`~trilemma.training.train` does), its weights are zeroed and it is
  frozen; the other models are unaffected (no operation mixes models).

BatchNorm is not supported here (use :func:`~trilemma.training.train` per model).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from trilemma.errors import InvalidArgumentError, InvalidTypeError
from trilemma.spaces import LINEAR, SKIP, CellSpec
from trilemma.training._config import EpochCallback, EpochRecord, TrainConfig, TrainResult, lr_at
from trilemma.training._trainer import _check_batches, _check_dataset, _flat

if TYPE_CHECKING:
    from trilemma.data import Dataset
    from trilemma.models import DAGMLP

__all__ = ["train_batched", "DEFAULT_CPU_CHUNK"]

logger = logging.getLogger(__name__)

DEFAULT_CPU_CHUNK = 16
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
    skips: dict[int, tuple[int, int, torch.Tensor | None]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass
class _Weights:
    """Initial weights of one DAG-MLP: ``layers[name] = (W (out, in), b (out,) or None, factor)``.

    Names: ``"stem"``, ``"s_t"`` for linear edges, ``"readout"``; ``factor`` is the NTK
    ``Scale`` in front of the layer (1 for He init).
    """

    spec: CellSpec
    layers: dict[str, tuple[torch.Tensor, torch.Tensor | None, float]]

    @property
    def num_params(self) -> int:
        return sum(w.numel() + (0 if b is None else b.numel()) for w, b, _ in self.layers.values())


def _weights_of(model: DAGMLP) -> _Weights:
    """The layers of a built model."""
    layers = {}
    for name, seq in [("stem", model.stem), *model.edges.items(), ("readout", model.readout)]:
        lin, factor = _layer_parts(seq)  # type: ignore[arg-type]
        layers[name] = (lin.weight.detach(), None if lin.bias is None else lin.bias.detach(), factor)
    return _Weights(model.spec, layers)


def _seeded_weights(spec: CellSpec, d: int, k: int, m: int, *, bias: bool, init: str, seed: int,
                    dtype: torch.dtype) -> _Weights:
    """The initial weights ``build_model(spec, d, k, m, bias=bias, init=init, seed=seed)`` draws.

    Replays the same random stream without building modules (``build_model`` reseeds the
    global generator, which is slow in a loop of hundreds of models): per layer, in
    construction order (stem, linear edges in string order, readout), ``nn.Linear``'s
    default initialization draws (uniform weight, uniform bias) and then the DAG-MLP's
    ``normal_`` weight. :func:`train_batched` checks it against ``build_model`` on the first
    model and falls back to building every model if they ever differ.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    shapes = [("stem", d, m, 2.0)]
    shapes += [(f"{s}_{t}", m, m, 2.0) for s, t, op in spec.edges() if op == LINEAR]
    shapes.append(("readout", m, k, 1.0))
    layers = {}
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
        layers[name] = (w, b, factor)
    return _Weights(spec, layers)


class _Stack:
    """Stacked parameters of M DAG-MLPs (internal model order)."""

    def __init__(
        self,
        weights: list[_Weights],
        order: list[int],
        device: torch.device,
        dtype: torch.dtype,
        bias: bool,
    ) -> None:
        first = weights[order[0]]
        self.H = first.spec.nodes
        self.edges = [(s, t) for s, t, _ in first.spec.edges()]
        Wr0 = first.layers["readout"][0]
        self.d, self.m, self.k = first.layers["stem"][0].shape[1], Wr0.shape[1], Wr0.shape[0]
        self.bias = bias
        self.ops = [[weights[i].spec.ops[t - 1][s] for (s, t) in self.edges] for i in order]
        M = len(order)

        def stack(tensors: list[torch.Tensor]) -> torch.Tensor:
            return torch.stack(tensors).to(device=device, dtype=dtype).contiguous()

        stem = [weights[i].layers["stem"] for i in order]
        readout = [weights[i].layers["readout"] for i in order]
        self.f_stem, self.f_out = stem[0][2], readout[0][2]
        self.Ws = stack([w.t() for w, _, _ in stem])
        self.bs = stack([b[None] for _, b, _ in stem]) if bias else None  # type: ignore[index]
        # the readout keeps nn.Linear's (k, m) layout: logits are computed transposed, (k, B)
        self.Wr = stack([w for w, _, _ in readout])
        self.br = stack([b[:, None] for _, b, _ in readout]) if bias else None  # type: ignore[index]
        self.We: list[torch.Tensor | None] = []
        self.be: list[torch.Tensor | None] = []
        self.f_edge: list[float] = []
        self.pos: list[dict[int, int]] = []  # internal model -> compact index, per edge
        for e, (s, t) in enumerate(self.edges):
            holders = [j for j in range(M) if self.ops[j][e] == LINEAR]
            self.pos.append({j: r for r, j in enumerate(holders)})
            parts = [weights[order[j]].layers[f"{s}_{t}"] for j in holders]
            self.f_edge.append(parts[0][2] if parts else 1.0)
            self.We.append(stack([w.t() for w, _, _ in parts]) if parts else None)
            self.be.append(stack([b[None] for _, b, _ in parts]) if (parts and bias) else None)  # type: ignore[index]

    def params(self) -> list[torch.Tensor]:
        out = [self.Ws, self.Wr]
        out += [w for w in self.We if w is not None]
        if self.bias:
            out += [self.bs, self.br] + [b for b in self.be if b is not None]  # type: ignore[list-item]
        return out  # type: ignore[return-value]

    def model_slices(self, j: int) -> list[tuple[torch.Tensor, int]]:
        """(stacked tensor, row) of every parameter of internal model ``j``."""
        out = [(self.Ws, j), (self.Wr, j)]
        if self.bias:
            out += [(self.bs, j), (self.br, j)]  # type: ignore[list-item]
        for e in range(len(self.edges)):
            if j in self.pos[e]:
                out.append((self.We[e], self.pos[e][j]))  # type: ignore[arg-type]
                if self.bias:
                    out.append((self.be[e], self.pos[e][j]))  # type: ignore[arg-type]
        return out

    def export(self, j: int, model: DAGMLP) -> None:
        """Copy internal model ``j``'s weights into ``model`` (a DAGMLP of the same spec)."""
        with torch.no_grad():
            pairs = [(model.stem, self.Ws, self.bs, j)]
            for e, (s, t) in enumerate(self.edges):
                if j in self.pos[e]:
                    pairs.append((model.edges[f"{s}_{t}"], self.We[e], self.be[e], self.pos[e][j]))  # type: ignore[arg-type]
            for seq, W, b, row in pairs:
                lin, _ = _layer_parts(seq)
                lin.weight.copy_(W[row].t())
                if b is not None:
                    lin.bias.copy_(b[row, 0])
            lin, _ = _layer_parts(model.readout)
            lin.weight.copy_(self.Wr[j])
            if self.br is not None:
                lin.bias.copy_(self.br[j, :, 0])


# --------------------------------------------------------------------------- per-chunk plans
class _Plan:
    """Buffers and pre-made tensor views for one chunk at one row count.

    ``train=True`` plans keep every edge's activation for the backward pass and own
    gathered input buffers; ``train=False`` plans (evaluation) read a fixed input slice
    shared by all models and reuse one scratch buffer for every edge.
    """

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
        x_fixed: torch.Tensor | None = None,
        y_fixed: torch.Tensor | None = None,
        t_fixed: torch.Tensor | None = None,
    ) -> None:
        C, B, m, d, k, H = chunk.size, rows, st.m, st.d, st.k, st.H
        dev, dt = st.Ws.device, st.Ws.dtype
        tag = "train" if train else "eval"

        def buf(name: str, *shape: int, dtype: torch.dtype = dt) -> torch.Tensor:
            key = (tag, name, shape, dtype)
            if key not in pool:
                pool[key] = torch.empty(shape, device=dev, dtype=dtype)  # always written before read
                if _POISON_BUFFERS:  # tests: any read of an unwritten element shows up as NaN
                    pool[key].fill_(float("nan") if dtype.is_floating_point else (True if dtype == torch.bool else -1))
            return pool[key]

        self.chunk, self.rows, self.train = chunk, B, train
        self.classify = classify
        c0, c1 = chunk.start, chunk.stop
        self.shared = x_fixed is not None or chunk.shared_slot is not None
        # inputs
        if x_fixed is not None:
            self.x_buf = None
            self.x_in = x_fixed.expand(C, B, d)
            self.y_in = y_fixed.view(1, B).expand(C, B) if y_fixed is not None else None
            self.t_in = t_fixed.view(1, B, k).expand(C, B, k) if t_fixed is not None else None
        elif self.shared:
            self.x_buf = buf("x1", B, d)
            self.y_buf = buf("y1", B, dtype=torch.int64)
            self.t_buf = buf("t1", B, k)
            self.x_in = self.x_buf.expand(C, B, d)
            self.y_in = self.y_buf.view(1, B).expand(C, B)
            self.t_in = self.t_buf.view(1, B, k).expand(C, B, k)
        else:
            self.x_buf = buf("xC", C, B, d)
            self.y_buf = buf("yC", C, B, dtype=torch.int64)
            self.t_buf = buf("tC", C, B, k)
            self.x_in, self.y_in, self.t_in = self.x_buf, self.y_buf, self.t_buf
        self.h = [buf(f"h{t}", C, B, m) for t in range(H + 1)]
        # logits and their gradient are kept transposed, (C, k, B): the readout GEMM then has
        # B (not k) output columns and the softmax reduces over an outer dimension.
        self.logits = buf("logits", C, k, B)
        self.dlog = buf("dlog", C, k, B)
        self.mx = buf("mx", C, 1, B)
        self.ssum = buf("ssum", C, 1, B)
        self.score = buf("score", C, 1, B)
        self.eqf = buf("eqf", C, k, B)
        self.rank_w = torch.arange(k, 0, -1, device=dev, dtype=dt).view(1, k, 1)
        self.y3 = self.y_in.unsqueeze(1) if self.y_in is not None else None
        self.tT = self.t_in.transpose(1, 2) if self.t_in is not None else None
        self.neg_ones = buf("neg1", C, 1, B)
        self.neg_ones.fill_(-1.0)
        # stem / readout
        self.Ws, self.Wr = st.Ws[c0:c1], st.Wr[c0:c1]
        self.bs = st.bs[c0:c1] if st.bs is not None else None
        self.br = st.br[c0:c1] if st.br is not None else None
        self.f_stem, self.f_out = st.f_stem, st.f_out
        # Forward program: tuples with every tensor view bound. The first contribution to a
        # row of a node is written (copy / beta=0), later ones are added, rows that get no
        # contribution are zeroed: no separate zeroing pass over the node buffers.
        self.fwd: list[tuple[Any, ...]] = []
        scratch = buf("scratch", C, B, m) if not train else None
        for t in range(1, H + 1):
            written = [False] * C
            ht = self.h[t]
            for s in range(t):
                e = st.edges.index((s, t))
                out = buf(f"a{e}", C, B, m) if train else scratch
                for run in chunk.lin_runs.get(e, []):
                    a, b, kk = run.a, run.b, run.k
                    W = st.We[e][kk : kk + b - a]  # type: ignore[index]
                    bias = st.be[e][kk : kk + b - a] if st.be[e] is not None else None  # type: ignore[index]
                    sums = [(ht[p:q], out[p:q], written[p]) for p, q in _segments(written, a, b)]
                    self.fwd.append(("lin", out[a:b], self.h[s][a:b], W, bias, st.f_edge[e], sums))
                    written[a:b] = [True] * (b - a)
                if e in chunk.skips:
                    a, b, mask = chunk.skips[e]
                    for p, q in _segments(written, a, b):
                        mk = None if mask is None else mask[p - a : q - a]
                        self.fwd.append(("skip", ht[p:q], self.h[s][p:q], mk, written[p]))
                    written[a:b] = [True] * (b - a)
            for p, q in _segments(written, 0, C):
                if not written[p]:
                    self.fwd.append(("zero", ht[p:q]))
        if not train:
            return
        # backward program (same first-writer rule for the node gradients dh[s], s < H)
        self.dh = [buf(f"dh{t}", C, B, m) for t in range(H + 1)]
        self.ones = buf("ones", C, 1, B)
        self.ones.fill_(1.0)
        self.fused = fused
        self.gWs = grads[id(st.Ws)][c0:c1] if grads is not None else None
        self.gWr = grads[id(st.Wr)][c0:c1] if grads is not None else None
        self.gbs = grads[id(st.bs)][c0:c1] if (grads is not None and st.bs is not None) else None
        self.gbr = grads[id(st.br)][c0:c1] if (grads is not None and st.br is not None) else None
        self.bwd: list[tuple[Any, ...]] = []
        dwritten = [[False] * C for _ in range(H + 1)]
        dwritten[H] = [True] * C  # written by the readout
        for t in range(H, 0, -1):
            for p, q in _segments(dwritten[t], 0, C):
                if not dwritten[t][p]:
                    self.bwd.append(("zero", self.dh[t][p:q]))
            for s in range(t - 1, -1, -1):
                e = st.edges.index((s, t))
                dws = dwritten[s]
                if e in chunk.skips:
                    a, b, mask = chunk.skips[e]
                    for p, q in _segments(dws, a, b):
                        mk = None if mask is None else mask[p - a : q - a]
                        self.bwd.append(("skip", self.dh[s][p:q], self.dh[t][p:q], mk, dws[p]))
                    dws[a:b] = [True] * (b - a)
                A = pool[("train", f"a{e}", (C, B, m), dt)] if chunk.lin_runs.get(e) else None
                for run in chunk.lin_runs.get(e, []):
                    a, b, kk = run.a, run.b, run.k
                    W = st.We[e][kk : kk + b - a]  # type: ignore[index]
                    bias = st.be[e][kk : kk + b - a] if st.be[e] is not None else None  # type: ignore[index]
                    gW = grads[id(st.We[e])][kk : kk + b - a] if grads is not None else None
                    gb = grads[id(st.be[e])][kk : kk + b - a] if (grads is not None and bias is not None) else None
                    WT = W.transpose(1, 2)
                    dgrads = [(self.dh[s][p:q], A[p:q], WT[p - a : q - a], 1.0 if dws[p] else 0.0)  # type: ignore[index]
                              for p, q in _segments(dws, a, b)]
                    self.bwd.append((
                        "lin", A[a:b], self.dh[t][a:b], dgrads, W,  # type: ignore[index]
                        self.h[s][a:b].transpose(1, 2), self.ones[a:b], bias, st.f_edge[e], gW, gb,
                    ))
                    dws[a:b] = [True] * (b - a)
        for p, q in _segments(dwritten[0], 0, C):
            if not dwritten[0][p]:
                self.bwd.append(("zero", self.dh[0][p:q]))
        self.ones_col = buf("ones_col", C, B, 1)
        self.ones_col.fill_(1.0)
        self.x_in_T = self.x_in.transpose(1, 2)
        self.dlog_T = self.dlog.transpose(1, 2)

    # ------------------------------------------------------------------ passes
    def forward(self) -> torch.Tensor:
        h0 = self.h[0]
        if self.bs is None:
            h0.baddbmm_(self.x_in, self.Ws, beta=0.0, alpha=self.f_stem)
        else:
            torch.baddbmm(self.bs, self.x_in, self.Ws, alpha=self.f_stem, out=h0)
        h0.relu_()
        for op in self.fwd:
            kind = op[0]
            if kind == "lin":
                _, out, hs, W, bias, f, sums = op
                if bias is None:
                    out.baddbmm_(hs, W, beta=0.0, alpha=f)
                else:
                    torch.baddbmm(bias, hs, W, alpha=f, out=out)
                # `out` keeps z (first writers) or relu(z) (adders): either gives the ReLU
                # mask 1[z > 0] that the backward pass needs
                for ht, z, add in sums:
                    if add:
                        ht.add_(z.relu_())
                    else:
                        torch.clamp_min(z, 0.0, out=ht)
            elif kind == "skip":
                _, ht, hs, mask, add = op
                if add:
                    if mask is None:
                        ht.add_(hs)
                    else:
                        ht.addcmul_(hs, mask)
                elif mask is None:
                    ht.copy_(hs)
                else:
                    torch.mul(hs, mask, out=ht)
            else:
                op[1].zero_()
        logits, hT = self.logits, self.h[-1].transpose(1, 2)
        if self.br is None:
            logits.baddbmm_(self.Wr, hT, beta=0.0, alpha=self.f_out)
        else:
            torch.baddbmm(self.br, self.Wr, hT, alpha=self.f_out, out=logits)
        return logits

    def loss(self, loss: str, want_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-model sums of per-sample losses ``(C,)`` and correct counts (classification).

        With ``want_grad`` leaves ``dlog`` = d(mean loss)/d(logits) for every model.
        """
        logits, dlog, k = self.logits, self.dlog, self.logits.shape[1]
        torch.amax(logits, 1, keepdim=True, out=self.mx)
        correct = None
        if self.classify:
            # argmax with torch's tie rule (first maximal index), as an outer reduction:
            # score = max_j (k - j)·1[logit_j == max] = k - first argmax
            torch.eq(logits, self.mx, out=self.eqf)
            self.eqf.mul_(self.rank_w)
            torch.amax(self.eqf, 1, keepdim=True, out=self.score)
            correct = (self.score == k - self.y3).sum((1, 2))
        if loss == "cross_entropy":
            torch.sub(logits, self.mx, out=dlog)
            picked = dlog.gather(1, self.y3)  # type: ignore[arg-type]
            dlog.exp_()
            torch.sum(dlog, 1, keepdim=True, out=self.ssum)
            sums = (torch.log(self.ssum) - picked).sum((1, 2))
            if want_grad:
                dlog.div_(self.ssum)
                dlog.scatter_add_(1, self.y3, self.neg_ones)  # type: ignore[arg-type]
                dlog.mul_(1.0 / self.rows)
        else:
            torch.sub(logits, self.tT, out=dlog)
            sums = dlog.square().sum((1, 2)).div_(k)
            if want_grad:
                dlog.mul_(2.0 / (self.rows * k))
        return sums, correct

    def backward(self, lr: float) -> None:
        """Backward pass; SGD update fused (``fused``) or gradients written to ``grads``."""
        fused, dlog = self.fused, self.dlog
        H = len(self.h) - 1
        self.dh[H].baddbmm_(self.dlog_T, self.Wr, beta=0.0, alpha=self.f_out)
        if fused:
            self.Wr.baddbmm_(dlog, self.h[H], alpha=-lr * self.f_out)
            if self.br is not None:
                self.br.baddbmm_(dlog, self.ones_col, alpha=-lr)
        else:
            self.gWr.baddbmm_(dlog, self.h[H], beta=0.0, alpha=self.f_out)  # type: ignore[union-attr]
            if self.gbr is not None:
                self.gbr.baddbmm_(dlog, self.ones_col, beta=0.0)
        for op in self.bwd:
            kind = op[0]
            if kind == "lin":
                _, A, dht, dgrads, W, hsT, ones, bias, f, gW, gb = op
                dz = _threshold_backward(dht, A, 0, grad_input=A)  # δ = dh_t ⊙ 1[z > 0], in place of z
                for dhs, dz_part, WT, beta in dgrads:
                    dhs.baddbmm_(dz_part, WT, beta=beta, alpha=f)
                if fused:
                    W.baddbmm_(hsT, dz, alpha=-lr * f)
                    if bias is not None:
                        bias.baddbmm_(ones, dz, alpha=-lr)
                else:
                    gW.baddbmm_(hsT, dz, beta=0.0, alpha=f)
                    if gb is not None:
                        gb.baddbmm_(ones, dz, beta=0.0)
            elif kind == "skip":
                _, dhs, dht, mask, add = op
                if add:
                    if mask is None:
                        dhs.add_(dht)
                    else:
                        dhs.addcmul_(dht, mask)
                elif mask is None:
                    dhs.copy_(dht)
                else:
                    torch.mul(dht, mask, out=dhs)
            else:
                op[1].zero_()
        dz0 = _threshold_backward(self.dh[0], self.h[0], 0, grad_input=self.dh[0])
        if fused:
            self.Ws.baddbmm_(self.x_in_T, dz0, alpha=-lr * self.f_stem)
            if self.bs is not None:
                self.bs.baddbmm_(self.ones, dz0, alpha=-lr)
        else:
            self.gWs.baddbmm_(self.x_in_T, dz0, beta=0.0, alpha=self.f_stem)  # type: ignore[union-attr]
            if self.gbs is not None:
                self.gbs.baddbmm_(self.ones, dz0, beta=0.0)


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
        self.chunk_views: dict[int, tuple[list[torch.Tensor], ...]] = {}

    def register_chunk(self, st: _Stack, chunk: _Chunk) -> None:
        """Pre-make the slices of every parameter/gradient/state tensor that a chunk owns."""
        if self.fused:
            return
        ps, gs, ss = [], [], []
        for p in self.params:
            lo, hi = self._rows(st, p, chunk)
            if hi <= lo:
                continue
            ps.append(p[lo:hi])
            gs.append(self.grads[id(p)][lo:hi])
            ss.append([s[lo:hi] for s in self.state.get(id(p), [])])
        self.chunk_views[id(chunk)] = (ps, gs, ss)

    @staticmethod
    def _rows(st: _Stack, p: torch.Tensor, chunk: _Chunk) -> tuple[int, int]:
        for e, W in enumerate(st.We):
            if p is W or p is st.be[e]:
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
            gs = torch._foreach_add(gs, ps, alpha=cfg.weight_decay)
        if cfg.optimizer == "sgd":
            if cfg.momentum:
                bufs = [s[0] for s in ss]
                torch._foreach_mul_(bufs, cfg.momentum)
                torch._foreach_add_(bufs, gs)
                gs = bufs
            torch._foreach_add_(ps, gs, alpha=-lr)
            return
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
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise InvalidArgumentError(f"every seed must be an int >= 0, got {s!r}")
    return out


def train_batched(
    specs: Sequence[CellSpec | str],
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
    floating-point rounding (tested in float64 to 1e-6 relative).

    Args:
        specs: Cells (specs or strings), all with the same number of nodes H. Repeats are
            allowed (e.g. several seeds of one cell).
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

    Returns:
        ``TrainResult`` per spec, in the order of ``specs``; ``wall_time`` is the whole
        batched run's time and ``metadata["batched"]`` holds the run's facts.

    Raises:
        InvalidArgumentError: empty ``specs``, mixed H, ``batchnorm=True``, bad seeds or
            chunk size, or a dataset/loss mismatch.
        InvalidTypeError: wrong argument types.
    """
    from trilemma.models import build_model

    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise InvalidTypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if batchnorm:
        raise InvalidArgumentError(
            "train_batched does not support batchnorm=True (BatchNorm statistics are not implemented in the "
            "batched kernels); train such models one at a time with train_cell(..., batchnorm=True)"
        )
    if isinstance(specs, (str, CellSpec)) or not isinstance(specs, Sequence) or len(specs) == 0:
        raise InvalidArgumentError("specs must be a non-empty sequence of CellSpec or cell strings")
    parsed = [CellSpec.parse(s) for s in specs]
    if len({s.nodes for s in parsed}) != 1:
        raise InvalidArgumentError(
            f"all specs must have the same number of nodes H; got H in {sorted({s.nodes for s in parsed})}"
        )
    dataset = _check_dataset(dataset)
    loss_name = config.resolved_loss(dataset.task)
    M = len(parsed)
    seed_list = _seeds(seeds, M, config.seed)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise InvalidArgumentError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InvalidArgumentError(f"workers must be a positive int or None, got {workers!r}")
    device = torch.device(config.device) if config.device is not None else torch.device("cpu")
    dtype = config.torch_dtype or torch.float32
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
    check = _weights_of(build_model(parsed[0], dataset.in_features, k, width, bias=bias, init=init,  # type: ignore[arg-type]
                                    seed=seed_list[0], dtype=dtype))
    if check.layers.keys() != weights[0].layers.keys() or not all(
        torch.equal(a[0], b[0]) and a[2] == b[2] for a, b in zip(check.layers.values(), weights[0].layers.values())
    ):
        logger.warning("replayed initialization differs from build_model; building every model instead")
        weights = [
            _weights_of(build_model(spec, dataset.in_features, k, width, bias=bias, init=init, seed=sd,  # type: ignore[arg-type]
                                    dtype=dtype))
            for spec, sd in zip(parsed, seed_list)
        ]
    num_params = [w.num_params for w in weights]
    order = sorted(
        range(M),
        key=lambda i: (
            _gray_rank([int(op == LINEAR) for op in parsed[i].digits]),
            _gray_rank([int(op == SKIP) for op in parsed[i].digits]),
            seed_list[i],
            i,
        ),
    )
    st = _Stack(weights, order, device, dtype, bias)
    del weights
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
            skip = [st.ops[j][e] == SKIP for j in range(c0, c1)]
            if any(skip):
                a = skip.index(True)
                b = len(skip) - skip[::-1].index(True)
                mask = None
                if not all(skip[a:b]):
                    mask = torch.tensor(skip[a:b], dtype=dtype, device=device).view(-1, 1, 1)
                ch.skips[e] = (a, b, mask)
        chunks.append(ch)
    opt = _Optimizer(st, config)
    for ch in chunks:
        opt.register_chunk(st, ch)
    # Worker threads (CPU): each owns a set of chunks and its own buffers and runs them with
    # one intra-op thread, so a chunk's working set stays in one core's cache. torch ops
    # release the GIL, so the workers compute in parallel.
    n_workers = _workers(workers, device, len(chunks))
    owner = _assign(chunks, st, n_workers)
    pools: list[dict[tuple[Any, ...], torch.Tensor]] = [{} for _ in range(n_workers)]
    batch_rows = sorted({min(B, n_seen - s0) for s0 in range(0, n_seen, B)})
    train_plans = {
        (id(ch), r): _Plan(st, ch, r, pools[owner[id(ch)]], train=True, fused=opt.fused, grads=opt.grads or None,
              classify=classify)
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
                                    classify=classify, x_fixed=x[r0:r1], y_fixed=y[r0:r1], t_fixed=tt[r0:r1]))
        return out

    test_plans = eval_plans(x_te, y_te, t_te) if (config.eval_every and x_te.shape[0]) else []
    full_plans = eval_plans(x_tr, y_tr, t_tr) if config.full_train_eval else []
    setup_time = time.perf_counter() - t_start
    logger.info("batched training of %d models (H=%d, width %d): %d chunk(s) of <= %d, %d worker(s), %s, %s",
                M, st.H, width, len(chunks), C, n_workers, device, str(dtype).removeprefix("torch."))

    def evaluate(plans: list[list[_Plan]], count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        sums = torch.zeros(M, dtype=torch.float64, device=device)
        correct = torch.zeros(M, dtype=torch.int64, device=device)

        def work(w: int) -> None:
            with torch.no_grad():
                for plan in plans[w]:
                    plan.forward()
                    s_, c_ = plan.loss(loss_name, want_grad=False)
                    ch = plan.chunk
                    sums[ch.start : ch.stop] += s_.double()
                    if c_ is not None:
                        correct[ch.start : ch.stop] += c_

        _run_workers(pool_exec, work, n_workers)
        return sums / count, (correct.double() / count if classify else None)

    def train_epoch(w: int, perms: torch.Tensor, lr: float, first_step: int, loss_acc: torch.Tensor,
                    correct_acc: torch.Tensor) -> None:
        # chunk-major: a chunk runs all steps of the epoch before the next chunk starts, so
        # its weights and buffers stay in cache from one step to the next
        with torch.no_grad():
            for ch in chunks_of[w]:
                rows_sel = slots[ch.start : ch.stop]
                for step, s0 in enumerate(range(0, n_seen, B)):
                    rows = min(B, n_seen - s0)
                    idx = perms[:, s0 : s0 + rows]
                    plan = train_plans[(id(ch), rows)]
                    if ch.shared_slot is not None:
                        sel = idx[ch.shared_slot]
                        torch.index_select(x_tr, 0, sel, out=plan.x_buf)
                        torch.index_select(y_tr, 0, sel, out=plan.y_buf)
                        if loss_name == "mse":
                            torch.index_select(t_tr, 0, sel, out=plan.t_buf)
                    else:
                        sel = idx[rows_sel].reshape(-1)
                        torch.index_select(x_tr, 0, sel, out=plan.x_buf.view(-1, x_tr.shape[1]))
                        torch.index_select(y_tr, 0, sel, out=plan.y_buf.view(-1))
                        if loss_name == "mse":
                            torch.index_select(t_tr, 0, sel, out=plan.t_buf.view(-1, k))
                    plan.forward()
                    sums, correct = plan.loss(loss_name, want_grad=True)
                    loss_acc[ch.start : ch.stop] += sums
                    if classify:
                        correct_acc[ch.start : ch.stop] += correct
                    plan.backward(lr)
                    opt.step(ch, lr, first_step + step + 1)

    chunks_of = [[ch for ch in chunks if owner[id(ch)] == w] for w in range(n_workers)]
    steps_per_epoch = len(range(0, n_seen, B))

    # ---------------------------------------------------------------- training loop
    gens = [torch.Generator(device="cpu").manual_seed(sd) for sd in distinct]
    active = torch.ones(M, dtype=torch.bool)
    hist: dict[str, list[Any]] = {k_: [] for k_ in ("train_loss", "train_acc", "test", "full", "lr")}
    stopped_at = [config.epochs] * M  # number of recorded epochs per internal model
    diverged_epoch: list[int | None] = [None] * M
    prev_threads = torch.get_num_threads()
    pool_exec = ThreadPoolExecutor(n_workers, thread_name_prefix="trilemma-batched") if n_workers > 1 else None
    train_time = time.perf_counter()
    train_cpu = time.process_time()
    try:
        for epoch in range(1, config.epochs + 1):
            lr = lr_at(config, epoch - 1)
            perms = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
            loss_acc = torch.zeros(M, dtype=dtype, device=device)
            correct_acc = torch.zeros(M, dtype=torch.int64, device=device)
            first = (epoch - 1) * steps_per_epoch
            _run_workers(pool_exec, lambda w: train_epoch(w, perms, lr, first, loss_acc, correct_acc), n_workers)
            # ---------------------------------------------------- end of epoch
            epoch_loss = (loss_acc.double() / n_seen).cpu()
            bad = active & ~torch.isfinite(epoch_loss)
            for j in torch.nonzero(bad).flatten().tolist():
                diverged_epoch[j] = epoch
                stopped_at[j] = epoch - 1
                active[j] = False
                opt.freeze(st, j)
                logger.info("model %d (%s) diverged in epoch %d", order[j], parsed[order[j]].name, epoch)
            hist["lr"].append(lr)
            hist["train_loss"].append(epoch_loss)
            hist["train_acc"].append((correct_acc.double() / n_seen).cpu() if classify else None)
            test = full = None
            if test_plans and config.evaluates(epoch):
                tl, ta = evaluate(test_plans, x_te.shape[0])
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
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
    }
    for j, i in enumerate(order):
        E = min(stopped_at[j], len(hist["train_loss"]))
        ev = [e for e in range(1, E + 1) if hist["test"][e - 1] is not None]
        state = None
        if keep_weights:
            model = build_model(parsed[i], dataset.in_features, k, width, bias=bias, init=init,  # type: ignore[arg-type]
                                seed=seed_list[i], dtype=dtype)
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
            seed=seed_list[i],
            spec=parsed[i].name,
            final_state=state,
            metadata={"dataset": dataset.name, "width": width, "init": init, "bias": bias, "batchnorm": False,
                      "batched": facts},
        )
    logger.info("batched training of %d models done in %.2fs (%d diverged)", M, wall,
                sum(r.diverged for r in results if r is not None))
    return results  # type: ignore[return-value]
