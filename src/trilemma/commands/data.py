"""``trilemma datasets``: list the registered datasets."""

from __future__ import annotations

import argparse

__all__ = ["add_commands"]


def _availability(name: str, root: str | None) -> str:
    from pathlib import Path

    from trilemma.data._dataset import dataset_info, default_root
    from trilemma.data._files import _CIFAR, _IDX_NAMES, _find_idx, _idx_candidates, unlabeled_candidates

    source = dataset_info(name)
    if source.kind in ("bundled", "synthetic"):
        return source.kind
    base = Path(root).expanduser() if root else default_root()
    if name in _CIFAR:
        layout = _CIFAR[name]
        ok = any((c / layout.test).is_file() for c in (base / name / layout.folder, base / layout.folder))
    elif name == "cifar10_unlabeled":
        ok = any(c.is_file() for c in unlabeled_candidates(base, None))
    elif name in ("mnist", "fashion_mnist"):
        tv = "MNIST" if name == "mnist" else "FashionMNIST"
        ok = any(all(_find_idx(c, b) for b in _IDX_NAMES) for c in _idx_candidates(base, name, tv))
    else:
        return source.kind
    return f"{source.kind}: {'found' if ok else 'missing'}"


def _cmd_datasets(args: argparse.Namespace) -> int:
    from trilemma.data._dataset import dataset_info, list_datasets

    names = list_datasets(args.pattern)
    if not names:
        print(f"no dataset matches {args.pattern!r}")
        return 1
    width = max(len(n) for n in names)
    for name in names:
        info = dataset_info(name)
        status = _availability(name, args.root)
        print(f"{name:<{width}}  {info.task:<14}  {status:<17}  {info.description}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``datasets`` command to the main CLI's sub-parsers."""
    p = subparsers.add_parser("datasets", help="list the registered datasets", description=__doc__)
    p.add_argument("pattern", nargs="?", default=None, help="shell pattern to filter names, e.g. 'mnist*'")
    p.add_argument("--root", default=None, help="data root to check on-disk datasets in (default $TRILEMMA_DATA "
                   "or ~/.cache/trilemma/data)")
    p.set_defaults(func=_cmd_datasets)
