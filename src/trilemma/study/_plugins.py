"""Importing user code named in a study config: ``"pkg.module"``, ``"file.py"``, ``"ref:function"``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from trilemma.errors import ConfigError, PluginError, TrilemmaError

__all__ = ["import_plugin", "import_object", "is_object_ref", "call_plugin"]


def _module_from_file(path: Path) -> ModuleType:
    path = path.resolve()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    stem = re.sub(r"\W", "_", path.stem)
    name = f"trilemma_plugin_{stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import plug-in file {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise PluginError(f"plug-in file {str(path)!r} raised {type(err).__name__} while being imported: {err}") from err
    except BaseException:
        del sys.modules[name]
        raise
    return module


def call_plugin(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call user code, turning its exceptions into :class:`~trilemma.errors.PluginError`.

    Args:
        what: What is called, for the message (e.g. ``"space function 'my.py:space'"``).
        fn: The callable.

    Raises:
        PluginError: ``fn`` raised; the message names ``what`` and repeats the exception's
            own message, and the exception is chained as ``__cause__`` (``trilemma -v``
            prints its traceback).
    """
    try:
        return fn(*args, **kwargs)
    except TrilemmaError:
        raise
    except Exception as err:
        raise PluginError(f"{what} raised {type(err).__name__}: {err}") from err


def import_plugin(ref: str, base_dir: str | Path = ".") -> ModuleType:
    """Import a plug-in module by dotted name or by ``.py`` file path.

    Args:
        ref: ``"package.module"`` or a path ending in ``.py`` (relative to ``base_dir``).
        base_dir: Directory relative file paths refer to (the config file's directory).

    Returns:
        The imported module (imported once per process).

    Raises:
        ConfigError: The module or file does not exist.
        PluginError: Importing it raised.
    """
    if ref.endswith(".py") or "/" in ref or "\\" in ref:
        path = Path(ref)
        if not path.is_absolute():
            path = Path(base_dir) / path
        if not path.is_file():
            raise ConfigError(f"plug-in file {ref!r} not found (looked at {str(path)!r})")
        return _module_from_file(path)
    try:
        return importlib.import_module(ref)
    except ModuleNotFoundError as err:
        if err.name and ref.startswith(err.name):
            raise ConfigError(
                f"plug-in module {ref!r} cannot be imported ({err}); give an importable module name "
                f"or a path to a .py file"
            ) from None
        raise PluginError(f"plug-in module {ref!r} raised {type(err).__name__} while being imported: {err}") from err
    except TrilemmaError:
        raise
    except Exception as err:
        raise PluginError(f"plug-in module {ref!r} raised {type(err).__name__} while being imported: {err}") from err


def is_object_ref(ref: str) -> bool:
    """Whether ``ref`` looks like ``"module:function"`` or ``"file.py:function"``."""
    return ":" in ref and not re.match(r"^[A-Za-z]:[\\/]", ref)


def import_object(ref: str, base_dir: str | Path = ".") -> Any:
    """The object named by ``"module:attr"`` or ``"path/file.py:attr"``.

    Raises:
        ConfigError: Malformed reference, missing module/file or missing attribute.
    """
    module_ref, _, attr = ref.rpartition(":")
    if not module_ref or not attr:
        raise ConfigError(f"{ref!r} is not of the form 'module:function' or 'file.py:function'")
    module = import_plugin(module_ref, base_dir)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{module_ref!r} has no attribute {attr!r} (from {ref!r})") from None
    return obj
