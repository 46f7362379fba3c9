"""Objects named in a recipe by their import path: `package.module.Name` or `package.module:Name.attr`."""

from __future__ import annotations

import importlib

from curvbench.errors import CurvbenchError


def looks_like_import_path(name: str) -> bool:
    return ":" in name or "." in name


def import_object(path: str, what: str):
    """The object at `path`; a CurvbenchError naming `what` (e.g. "method 'x.Y'") when it cannot be found."""
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not module_name or not attr:
        raise CurvbenchError(f"{what}: expected MODULE.NAME or MODULE:NAME")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise CurvbenchError(f"{what}: cannot import {module_name} ({e}); is its package installed?") from None
    except (Exception, SystemExit) as e:  # the module's own code failed, or called sys.exit, as it was imported
        raise CurvbenchError(f"{what}: importing {module_name} failed: {failure(e)}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CurvbenchError(f"{what}: {module_name} has no {attr}")
        obj = getattr(obj, part)
    return obj


def failure(e: BaseException) -> str:
    """An exception from user code in one line: its class and the first line of its message (sys.exit's code)."""
    if isinstance(e, SystemExit):
        return f"it called sys.exit({e.code!r})"
    text = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {text[0][:200]}" if text else e.__class__.__name__


def package_version(module: str) -> str:
    """The installed version of the distribution that provides `module`'s top-level package, or "unknown"."""
    from importlib import metadata

    top = module.split(".")[0]
    try:
        return metadata.version(top)
    except metadata.PackageNotFoundError:
        for dist in metadata.packages_distributions().get(top, []):
            try:
                return metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
    return "unknown"
