"""Methods and tasks that installed packages register by name through Python entry points.

A package declares, in its pyproject.toml,

    [project.entry-points."curvbench.methods"]
    signsgd = "my_pkg.methods:SPEC"        # a curvbench.methods.base.MethodSpec
    [project.entry-points."curvbench.tasks"]
    blobs = "my_pkg.tasks:SPEC"            # a curvbench.tasks.TaskSpec

Each entry point names the same kind of spec the built-ins use (or a function of no arguments returning one).
A plugin that fails to load is reported in one line by `curvbench methods` / `curvbench tasks`, and the other
methods and tasks stay available."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

METHODS = "curvbench.methods"
TASKS = "curvbench.tasks"


@dataclass(frozen=True)
class Loaded:
    name: str
    spec: Any  # the spec, renamed to the entry point's name and carrying its source and version
    source: str  # "entry point DIST (module:attr)"


@dataclass(frozen=True)
class Broken:
    name: str
    source: str
    error: str

    def line(self) -> str:
        return f"plugin {self.name!r} from {self.source} not loaded: {self.error}"


def load(group: str, spec_type: type, builtin: set[str]) -> tuple[list[Loaded], list[Broken]]:
    """Every entry point of `group` loaded as a `spec_type`; failures collected, never raised."""
    from importlib import metadata

    from curvbench.imports import failure

    loaded: list[Loaded] = []
    broken: list[Broken] = []
    seen: set[str] = set()
    for ep in metadata.entry_points(group=group):
        if ep.name in seen:  # the same distribution found twice on the path
            continue
        seen.add(ep.name)
        dist = ep.dist.name if ep.dist is not None else "unknown distribution"
        version = ep.dist.version if ep.dist is not None else "unknown"
        source = f"entry point {dist} {version} ({ep.value})"
        if ep.name in builtin:
            broken.append(Broken(ep.name, source, "the name is a built-in's; rename the entry point"))
            continue
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, spec_type):
                obj = obj()
            if not isinstance(obj, spec_type):
                raise TypeError(f"expected a {spec_type.__module__}.{spec_type.__name__}, got {type(obj).__name__}")
        except (Exception, SystemExit) as e:  # an ImportError, the plugin's own code failing or calling sys.exit
            broken.append(Broken(ep.name, source, failure(e)))
            continue
        spec = dataclasses.replace(obj, name=ep.name, source=source, version=version)
        loaded.append(Loaded(ep.name, spec, source))
    return loaded, broken


class Registry:
    """The specs known by name: `builtins()` first, then the entry points of `group`, loaded on first use."""

    def __init__(self, group: str, spec_type: type, builtins: Callable[[], dict]):
        self.group, self.spec_type, self.builtins = group, spec_type, builtins
        self._known: dict | None = None
        self._broken: list[Broken] = []

    def all(self) -> dict:
        if self._known is None:
            builtin = self.builtins()
            loaded, self._broken = load(self.group, self.spec_type, set(builtin))
            self._known = builtin | {p.name: p.spec for p in loaded}
        return self._known

    def broken(self) -> list[Broken]:
        """The entry points that failed to load, each with its one-line reason."""
        self.all()
        return list(self._broken)

    def why_missing(self, name: str) -> str | None:
        """The one-line reason when `name` is an entry point that failed to load, else None."""
        return next((b.line() for b in self.broken() if b.name == name), None)

    def reset(self) -> None:
        """Forget what was found: the next use looks for entry points again (after installing a plugin)."""
        self._known = None
