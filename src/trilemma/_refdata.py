"""Where the project's reference data lives (NAS-Bench-201 accuracies, published proxy scores,
the 1,000 unlabeled CIFAR-10 images): one locator, one environment variable.

Search order: ``$TRILEMMA_SHARED_DATA``, then ``../shared/data`` next to a source checkout
(the folder above the project root), then ``../shared/data`` from the working directory.
Users without the folder pass explicit paths to the loaders that read it.
"""

from __future__ import annotations

import os
from pathlib import Path

from trilemma.errors import DatasetNotFoundError

__all__ = ["ENV_SHARED_DATA", "reference_candidates", "reference_dir", "reference_file"]

#: The environment variable naming the reference-data folder.
ENV_SHARED_DATA = "TRILEMMA_SHARED_DATA"


def reference_candidates() -> list[Path]:
    """The folders searched for reference data, in order."""
    out = []
    env = os.environ.get(ENV_SHARED_DATA)
    if env:
        out.append(Path(env).expanduser())
    project_root = Path(__file__).resolve().parents[2]  # <root>/src/trilemma/_refdata.py
    if (project_root / "pyproject.toml").is_file():
        out.append(project_root.parent / "shared" / "data")
    out.append(Path.cwd().parent / "shared" / "data")
    return out


def reference_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The reference-data folder: ``path`` if given, else the first candidate that exists.

    Raises:
        DatasetNotFoundError: no candidate exists; the message lists the places tried.
    """
    if path is not None:
        return Path(path)
    tried = reference_candidates()
    for cand in tried:
        if cand.is_dir():
            return cand
    raise DatasetNotFoundError(
        "the shared reference-data folder was not found; looked in " + ", ".join(str(p) for p in tried)
        + f". Set ${ENV_SHARED_DATA} or pass path=..."
    )


def reference_file(name: str, path: str | os.PathLike[str] | None = None) -> Path:
    """The reference file ``name``: ``path`` (the file, or a folder holding it) or in :func:`reference_dir`.

    Raises:
        DatasetNotFoundError: the file is not there.
    """
    if path is not None:
        p = Path(path).expanduser()
        p = p / name if p.is_dir() else p
    else:
        p = reference_dir() / name
    if not p.is_file():
        raise DatasetNotFoundError(f"{name} not found at {p}; pass path=... (the file or its folder) "
                                   f"or set ${ENV_SHARED_DATA}")
    return p
