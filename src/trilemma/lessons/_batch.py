"""Lesson ``batch-size``: small-batch vs large-batch training (Keskar et al. 2017).

Keskar, Mudigere, Nocedal, Smelyanskiy & Tang (2017), "On large-batch training for deep
learning: generalization gap and sharp minima", train the same network with the same
optimizer (Adam) for the same number of epochs with a small batch and with a large one
(a sizeable fraction of the data) and observe that the large-batch solution lies in a
*sharper* minimum — larger curvature of the training loss — and generalizes worse. This
lesson repeats that protocol on a real offline dataset with the project trainer and measures

* sharpness: the top eigenvalue of the Hessian of the full training loss, by power iteration
  with Hessian-vector products (the registered ``sharpness`` measure), and
* the generalization gap: training accuracy − test accuracy (and the losses).

Caveat stated with the numbers: at a fixed epoch budget the large batch also takes far fewer
steps; trained to the same loss the gap largely closes (Hoffer, Hubara & Soudry 2017), and
sharpness alone is not a reparameterization-invariant predictor (Dinh et al. 2017).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from trilemma.data import load_dataset
from trilemma.errors import InvalidArgumentError
from trilemma.lessons._base import Check, LessonOutput, register_lesson
from trilemma.measures import get_measure
from trilemma.models import build_model
from trilemma.training import TrainConfig, train

__all__: list[str] = []


@register_lesson(
    "batch-size",
    title="Small vs large batch: sharp minima and the generalization gap",
    claim=(
        "With the same optimizer and epoch budget, large-batch training ends in a sharper minimum (larger top "
        "Hessian eigenvalue of the training loss) and with a larger generalization gap than small-batch training."
    ),
    references=(
        "Keskar, Mudigere, Nocedal, Smelyanskiy & Tang (2017), On large-batch training for deep learning: "
        "generalization gap and sharp minima, ICLR.",
        "Hoffer, Hubara & Soudry (2017), Train longer, generalize better, NeurIPS.",
        "Dinh, Pascanu, Bengio & Bengio (2017), Sharp minima can generalize for deep nets, ICML.",
    ),
    defaults={
        "dataset": "digits",
        "max_train": 0,
        "batch_sizes": (32, 256, 1437),
        "width": 128,
        "epochs": 60,
        "lr": 0.001,
        "seeds": 2,
        "power_iters": 100,
        "seed": 0,
    },
    quick={"max_train": 300, "batch_sizes": (16, 300), "epochs": 15, "seeds": 1, "power_iters": 40},
)
def _compute(p: dict[str, Any]) -> LessonOutput:
    sizes = p["batch_sizes"]
    if len(sizes) < 2 or min(sizes) < 1 or list(sizes) != sorted(set(sizes)):
        raise InvalidArgumentError(f"batch_sizes must be at least two strictly increasing positive ints, got {sizes!r}")
    if p["seeds"] < 1 or p["max_train"] < 0:
        raise InvalidArgumentError("seeds must be ≥ 1 and max_train ≥ 0 (0: the whole training set)")
    ds = load_dataset(p["dataset"], normalize="standardize", seed=p["seed"], max_train=p["max_train"] or None)
    if sizes[-1] > ds.num_train:
        raise InvalidArgumentError(f"the largest batch size {sizes[-1]} exceeds the {ds.num_train} training samples")
    sharp = get_measure("sharpness")
    rows = []
    for batch in sizes:
        for s in range(p["seeds"]):
            seed = p["seed"] + s
            model = build_model("2", ds.in_features, ds.num_classes, width=p["width"], seed=seed)
            cfg = TrainConfig(epochs=p["epochs"], batch_size=batch, lr=p["lr"], optimizer="adam",
                              full_train_eval=True, eval_every=p["epochs"], seed=seed)
            res = train(model, ds, cfg)
            if res.diverged:
                raise InvalidArgumentError(f"training diverged with batch {batch}; lower lr={p['lr']}")
            assert res.train_acc_full and res.train_loss_full and res.test_acc  # full_train_eval, eval at the end
            top = sharp(model, ds.x_train, ds.y_train, max_iter=p["power_iters"], tol=1e-4, seed=seed)
            rows.append({
                "batch_size": batch, "seed": seed, "steps": res.epochs * -(-ds.num_train // batch),
                "train_loss": res.train_loss_full[-1], "test_loss": res.test_loss[-1],
                "train_acc": res.train_acc_full[-1], "test_acc": res.test_acc[-1],
                "gap_acc": res.train_acc_full[-1] - res.test_acc[-1],
                "gap_loss": res.test_loss[-1] - res.train_loss_full[-1],
                "sharpness": top.value, "power_converged": bool(top.extras.get("converged", True)),
            })
    runs = pd.DataFrame(rows)
    table = runs.groupby("batch_size", as_index=False).agg(
        steps=("steps", "first"), train_loss=("train_loss", "mean"), test_loss=("test_loss", "mean"),
        train_acc=("train_acc", "mean"), test_acc=("test_acc", "mean"), gap_acc=("gap_acc", "mean"),
        gap_loss=("gap_loss", "mean"), sharpness=("sharpness", "mean"), sharpness_min=("sharpness", "min"),
        sharpness_max=("sharpness", "max"),
    )
    small, large = table.iloc[0], table.iloc[-1]
    checks = [
        Check(
            "the large-batch minimum is sharper (top Hessian eigenvalue at least twice the small-batch one)",
            bool(large.sharpness >= 2 * small.sharpness),
            f"λ_max = {small.sharpness:.4g} at batch {int(small.batch_size)} vs {large.sharpness:.4g} at batch "
            f"{int(large.batch_size)}",
        ),
        Check(
            "the large batch generalizes worse: lower test accuracy and a larger train−test accuracy gap",
            bool(large.test_acc < small.test_acc and large.gap_acc > small.gap_acc),
            f"test accuracy {small.test_acc:.3f} vs {large.test_acc:.3f}; gap {small.gap_acc:.3f} vs "
            f"{large.gap_acc:.3f} (batch {int(small.batch_size)} vs {int(large.batch_size)})",
        ),
    ]
    notes = [
        f"`{p['dataset']}` with {ds.num_train} training / {ds.num_test} test samples (standardized); "
        f"build_model('2', width={p['width']}); Adam lr={p['lr']} for {p['epochs']} epochs at every batch size "
        f"(Keskar et al.'s protocol); {p['seeds']} seed(s).",
        "Sharpness: top eigenvalue of the Hessian of the full-training-set cross-entropy, power iteration with "
        f"Hessian-vector products (≤ {p['power_iters']} products, the `sharpness` measure).",
        f"The large batch takes {int(large.steps)} steps against {int(small.steps)} and ends at training loss "
        f"{large.train_loss:.3g} vs {small.train_loss:.3g}: at a fixed epoch budget fewer updates are part of the "
        "effect (Hoffer et al. 2017); the curvature of cross-entropy also shrinks as its loss goes to zero.",
    ]

    def draw(fig: Any) -> None:
        ax1, ax2 = fig.subplots(1, 2)
        fig.set_size_inches(10, 4)
        ax1.loglog(runs.batch_size, runs.sharpness, "o", alpha=0.5)
        ax1.loglog(table.batch_size, table.sharpness, "s-", label="mean")
        ax1.set_xlabel("batch size")
        ax1.set_ylabel("top Hessian eigenvalue (sharpness)")
        ax1.grid(alpha=0.3, which="both")
        ax2.semilogx(table.batch_size, table.train_acc, "o-", label="train accuracy")
        ax2.semilogx(table.batch_size, table.test_acc, "s-", label="test accuracy")
        ax2.set_xlabel("batch size")
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3)

    return LessonOutput(
        table=table, checks=checks, figures={"sharpness": draw}, notes=notes,
        numbers={"sharpness_small": float(small.sharpness), "sharpness_large": float(large.sharpness),
                 "test_acc_small": float(small.test_acc), "test_acc_large": float(large.test_acc)},
    )
