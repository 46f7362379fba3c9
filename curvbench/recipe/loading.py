"""Recipes: YAML files naming a task, training settings and methods; loaded, checked and resolved here."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from curvbench.errors import CurvbenchError, RecipeError, describe
from curvbench.imports import looks_like_import_path
from curvbench.recipe import space
from curvbench.schema import Boolean, Choice, DeviceName, Invalid, ListOf, Number, Section, Text

SCHEDULES = ("constant", "cosine", "cosine-step")
ENTRY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
EVAL_SPLITS = ("val", "test")


# ---------------------------------------------------------------------------------------------- YAML
class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (a silently overwritten key is a typo nobody sees)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {describe(key)} (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: Path) -> Any:
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise CurvbenchError(f"{path}: recipe file not found") from None
    except OSError as e:
        raise CurvbenchError(f"{path}: cannot read recipe file ({e.__class__.__name__})") from None
    if stat.S_ISDIR(mode):
        raise CurvbenchError(f"{path}: is a folder; expected a recipe file (YAML)")
    if not stat.S_ISREG(mode):  # a FIFO, a socket or a device would block or never end
        raise CurvbenchError(f"{path}: not a regular file; expected a recipe file (YAML)")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CurvbenchError(f"{path}: recipe file not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise CurvbenchError(f"{path}: cannot read recipe file ({e.__class__.__name__})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except RecursionError:
        raise CurvbenchError(f"{path}: the YAML is nested too deeply to read") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(str(e.problem or e.context or "malformed YAML").split())
        raise CurvbenchError(f"{path}: {where}YAML syntax error: {problem}") from None
    except yaml.YAMLError as e:
        raise CurvbenchError(f"{path}: YAML syntax error: {' '.join(str(e).split())}") from None


def shipped_recipes() -> Path | None:
    """The folder of the recipes installed with curvbench (the package `curvbench.recipes`)."""
    import importlib.resources

    try:
        folder = importlib.resources.files("curvbench.recipes")
    except ModuleNotFoundError:  # pragma: no cover - a broken install
        return None
    return Path(str(folder)) if Path(str(folder)).is_dir() else None


def find_recipe(ref: str) -> Path:
    """`mnist` -> the first of $CURVBENCH_RECIPES/mnist.yaml, ./recipes/mnist.yaml and the recipe installed with
    curvbench; a path (a .yaml name or one with a folder in it) is taken as it is."""
    p = Path(ref)
    if p.suffix in (".yaml", ".yml") or os.sep in ref:
        return p
    dirs = [Path("recipes")]
    if os.environ.get("CURVBENCH_RECIPES"):
        dirs.insert(0, Path(os.environ["CURVBENCH_RECIPES"]))
    shipped = shipped_recipes()
    if shipped is not None:
        dirs.append(shipped)
    for d in dirs:
        for suffix in (".yaml", ".yml"):
            if (d / (ref + suffix)).is_file():
                return d / (ref + suffix)
    known = sorted({q.stem for d in dirs if d.is_dir() for q in d.glob("*.y*ml")})
    hint = f"; known recipes: {', '.join(known)}" if known else ""
    raise CurvbenchError(f"recipe {ref!r} not found in {', '.join(str(d) for d in dirs)}{hint}")


# ---------------------------------------------------------------------------------------------- model
@dataclass
class TaskConfig:
    dataset: str  # the task's name (a registered task, or what names a loader's runs)
    model: str | None
    metric: str
    data_dir: str | None = None
    download: bool = True
    options: dict = field(default_factory=dict)
    loader: str | None = None  # "module:function" of the recipe's own task

    def to_dict(self) -> dict:
        d = vars(self).copy()
        if d["loader"] is None:  # kept out, so that recipes without one keep their digests
            del d["loader"]
        return d


@dataclass
class Schedule:
    kind: str = "constant"
    min_lr: float = 0.0  # alpha_min of eq. (34), as a fraction of the peak lr
    warmup_steps: int = 0  # linear warm-up, cosine-step only


@dataclass
class Training:
    epochs: int
    batch_size: int
    seeds: list[int]
    schedule: Schedule
    validation: float
    eval_splits: list[str]
    device: str
    threads: int | None
    target: float | None
    log_every: int
    explode_factor: float = 100.0
    explode_checks: int = 3


@dataclass
class MethodEntry:
    name: str  # the entry's key: names the run
    method: str  # the registered method
    hparams: dict


def holds_val(task: TaskConfig, validation: float) -> bool:
    """A validation split exists when part of train is held out or the dataset has its own."""
    from curvbench.tasks import spec_of

    return validation > 0 or spec_of(task).has_val


@dataclass
class Recipe:
    name: str
    source: str
    description: str
    experiment: str | None
    task: TaskConfig
    training: Training
    methods: list[MethodEntry]
    search: dict = field(default_factory=dict)  # entry -> hparam -> list | {low, high, log}
    extra: str | None = None  # the curvbench extra its imported methods need (pip install curvbench[extra])

    def to_dict(self) -> dict:
        """The resolved recipe, every default filled in: what gets logged and what round-trips."""
        t = self.training
        return {
            "name": self.name,
            "description": self.description,
            "experiment": self.experiment,
            "task": self.task.to_dict(),
            "training": {
                "epochs": t.epochs,
                "batch_size": t.batch_size,
                "seeds": list(t.seeds),
                "schedule": vars(t.schedule).copy(),
                "validation": t.validation,
                "eval_splits": list(t.eval_splits),
                "device": t.device,
                "threads": t.threads,
                "target": t.target,
                "log_every": t.log_every,
                "explode_factor": t.explode_factor,
                "explode_checks": t.explode_checks,
            },
            "methods": {
                m.name: ({"method": m.method} if m.method != m.name else {}) | dict(m.hparams) for m in self.methods
            },
            **({"search": copy.deepcopy(self.search)} if self.search else {}),
            **({"extra": self.extra} if self.extra else {}),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def default_split(self) -> str:
        """The split a score is read from unless told otherwise: val when the recipe has one, else test."""
        return "val" if holds_val(self.task, self.training.validation) else "test"

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def entry(self, name: str) -> MethodEntry:
        return next(m for m in self.methods if m.name == name)

    def with_search(self, spaces: dict | None) -> "Recipe":
        """This recipe with some entries' search spaces replaced (tune --space), checked like the recipe's own."""
        if not spaces:
            return self
        data = self.to_dict()
        data["search"] = {**data.get("search", {}), **spaces}
        return parse(data, self.source)


_SCHEDULE = Section(
    {
        "kind": (Choice(SCHEDULES), "constant"),
        "min_lr": (Number(ge=0, le=1), 0.0),
        "warmup_steps": (Number(integer=True, ge=0), 0),
    }
)

MAX_EPOCHS = 1_000_000
MAX_SEED = 2**32 - 1
_TRAINING = Section(
    {
        # bounded by what the engine can do: an epoch count past a million never ends, a seed past 2^32 - 1 is
        # refused by NumPy's generators, a batch past 2^31 by the tensor index
        "epochs": (Number(integer=True, ge=1, le=MAX_EPOCHS), 20),
        "batch_size": (Number(integer=True, ge=1, le=2**31 - 1), 100),
        "seeds": (ListOf(Number(integer=True, ge=0, le=MAX_SEED)), [0]),
        "schedule": (None, None),  # a name or a mapping: checked below
        "validation": (Number(ge=0, lt=1), 0.0),
        "eval_splits": (ListOf(Choice(EVAL_SPLITS)), None),
        "device": (DeviceName(), "auto"),
        "threads": (Number(integer=True, ge=1, le=4096, nullable=True), None),
        "target": (Number(gt=0, le=1, nullable=True), None),
        "log_every": (Number(integer=True, ge=1, le=2**31 - 1), 20),
        "explode_factor": (Number(ge=0), 100.0),
        "explode_checks": (Number(integer=True, ge=1, le=2**31 - 1), 3),
    }
)


class _Schedule:
    def expected(self) -> str:
        return f"one of {', '.join(SCHEDULES)} or a mapping"

    def check(self, value: Any) -> Schedule:
        if value is None:
            return Schedule()
        if isinstance(value, str):
            try:
                return Schedule(**_SCHEDULE.check({"kind": value}))
            except Invalid as e:
                raise Invalid(e.message) from None
        return Schedule(**_SCHEDULE.check(value))


_TRAINING.fields["schedule"] = (_Schedule(), Schedule())

class _Raw:
    """Passes a value through untouched; its own checker looks at it later."""

    def __init__(self, what: str):
        self.what = what

    def expected(self) -> str:
        return self.what

    def check(self, value: Any) -> Any:
        return value


_TOP = Section(
    {
        "name": (Text(max_length=200), None),  # part of study names and tags
        "description": (Text(nullable=True, allow_empty=True), ""),
        "experiment": (Text(nullable=True, max_length=256), None),  # MLflow's experiment names: 256 characters
        "task": (_Raw("a task name or a mapping with a dataset"), Section.REQUIRED),
        "training": (_TRAINING, None),
        "methods": (_Raw("a mapping of method names to hyperparameters"), Section.REQUIRED),
        "search": (_Raw("a mapping of method names to search spaces"), None),
        # the curvbench extra that installs the packages of the recipe's imported methods (pip install curvbench[X])
        "extra": (Text(nullable=True), None),
    }
)


def _task(value: Any) -> TaskConfig:
    from curvbench import tasks

    if isinstance(value, str):
        value = {"dataset": value}
    section = Section(
        {
            "dataset": (Text(nullable=True), None),
            "loader": (Text(nullable=True), None),
            "model": (Text(nullable=True), None),
            "metric": (Text(nullable=True), None),
            "data_dir": (Text(nullable=True), None),
            "download": (Boolean(), True),
            "options": (_Raw("a mapping of task options"), None),
        }
    )
    cfg = section.check(value)
    if cfg["loader"]:  # the recipe's own task: `loader: "my_pkg.tasks:make_task"`
        try:
            spec = tasks.from_loader(cfg["loader"])
        except CurvbenchError as e:
            raise Invalid(str(e), "loader") from None
        cfg["dataset"] = cfg["dataset"] or spec.name
    elif not cfg["dataset"]:
        raise Invalid("missing; name a task (curvbench tasks) or give a loader", "dataset")
    else:
        known = tasks.registry()
        if cfg["dataset"] not in known:
            why = tasks.why_missing(cfg["dataset"])
            if why:
                raise Invalid(why, "dataset")
            raise Invalid(f"unknown task {describe(cfg['dataset'])}; known tasks: {', '.join(known)}, or a "
                          f"loader: MODULE:FUNCTION", "dataset")
        spec = known[cfg["dataset"]]
    cfg["model"] = cfg["model"] or (spec.models[0] if spec.models else None)
    if spec.models and cfg["model"] not in spec.models:
        raise Invalid(f"expected one of {', '.join(spec.models)}, got {describe(cfg['model'])}", "model")
    cfg["metric"] = cfg["metric"] or (spec.metrics[0] if spec.metrics else "accuracy")
    if spec.metrics and cfg["metric"] not in spec.metrics:
        raise Invalid(f"expected one of {', '.join(spec.metrics)}, got {describe(cfg['metric'])}", "metric")
    if spec.options is None:  # the loader checks its own options
        cfg["options"] = dict(cfg["options"] or {})
        if not all(isinstance(k, str) for k in cfg["options"]):
            raise Invalid("expected a mapping of option names to values", "options")
    elif spec.options or cfg["options"]:
        try:
            cfg["options"] = Section(dict(spec.options)).check(cfg["options"])
        except Invalid as e:
            raise Invalid(e.message, f"options.{e.path}" if e.path else "options") from None
    else:
        cfg["options"] = {}
    return TaskConfig(**cfg)


def _methods(value: Any) -> list[MethodEntry]:
    from curvbench import methods as registry

    known = registry.registry()
    if isinstance(value, list):  # [sgd, lion]: defaults for each
        if not all(isinstance(v, str) for v in value):
            raise Invalid("expected a mapping of method names to hyperparameters, got a list")
        value = {v: None for v in value}
    if not isinstance(value, dict) or not value:
        raise Invalid(f"expected a mapping of method names to hyperparameters, got {describe(value)}")
    out = []
    for name, hp in value.items():
        name = str(name)
        if not ENTRY_NAME.fullmatch(name):
            raise Invalid(f"expected an entry name of letters, digits, '_', '-' and '.', starting with a letter or "
                          f"digit (it names runs, params and metrics), got {describe(name)}", name)
        hp = {} if hp is None else hp
        if not isinstance(hp, dict):
            raise Invalid(f"expected a mapping of hyperparameters, got {describe(hp)}", name)
        hp = dict(hp)
        method = str(hp.pop("method", name))
        where = f"{name}.method" if "method" in (value[name] or {}) else name
        if method not in known and not looks_like_import_path(method):
            why = registry.why_missing(method)
            if why:
                raise Invalid(why, where)
            raise Invalid(f"unknown method {describe(method)}; known methods: {', '.join(known)}", where)
        try:
            spec = registry.get(method)
        except CurvbenchError as e:
            raise Invalid(str(e), where) from None
        try:
            out.append(MethodEntry(name, method, spec.resolve(hp)))
        except Invalid as e:
            raise Invalid(e.message, f"{name}.{e.path}") from None
    return out


# ---------------------------------------------------------------------------------------------- overrides
def set_path(data: dict, dotted: str, value: Any) -> None:
    """Write `value` at `a.b.c` in nested mappings, creating mappings on the way."""
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def parse_assignment(text: str) -> tuple[str, Any]:
    """`training.epochs=3` -> ("training.epochs", 3); the value is read as YAML."""
    if "=" not in text:
        raise CurvbenchError(f"--set {text}: expected KEY=VALUE, e.g. training.epochs=3")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        return key.strip(), raw


@dataclass
class Overrides:
    """Command-line changes to a recipe, applied before it is checked (so they are checked too)."""

    values: dict[str, Any] = field(default_factory=dict)  # dotted path -> value
    methods: list[str] | None = None  # keep/add these method entries, in this order

    def apply(self, data: dict) -> dict:
        data = copy.deepcopy(data)
        if isinstance(data.get("task"), str) and any(p.startswith("task.") for p in self.values):
            data["task"] = {"dataset": data["task"]}
        methods = data.get("methods")
        if isinstance(methods, list) and all(isinstance(m, str) for m in methods):
            data["methods"] = {m: None for m in methods}  # [sgd, lion] -> mapping, so methods.sgd.lr can be set
        values = dict(self.values)
        if isinstance(values.get("task"), str) and any(p.startswith("task.") for p in values):
            data["task"] = {"dataset": values.pop("task")}  # --set task=mnist beside --data-dir: both apply
        for path, value in values.items():
            set_path(data, path, value)
        return data


@dataclass
class RunFlags:
    """The command-line options that change a recipe, shared by train, tune and to-target."""

    epochs: int | None = None
    batch_size: int | None = None
    seeds: list[int] | None = None
    device: str | None = None
    threads: int | None = None
    data_dir: str | None = None
    no_download: bool = False
    sets: list[str] | None = None  # --set KEY=VALUE
    methods: str | None = None  # --methods a,b
    experiment: str | None = None

    def overrides(self, keep_methods: bool = True) -> Overrides:
        """The recipe changes these flags ask for (with keep_methods False: every entry of the recipe)."""
        values: dict = {}
        for text in self.sets or []:
            key, value = parse_assignment(text)
            values[key] = value
        for flag, path in ((self.epochs, "training.epochs"), (self.batch_size, "training.batch_size"),
                           (self.device, "training.device"), (self.threads, "training.threads"),
                           (self.data_dir, "task.data_dir"), (self.experiment, "experiment")):
            if flag is not None:
                values[path] = flag
        if self.seeds:
            values["training.seeds"] = list(self.seeds)
        if self.no_download:
            values["task.download"] = False
        names = None
        if keep_methods and self.methods is not None:
            names = [m.strip() for m in self.methods.split(",") if m.strip()]
        return Overrides(values, names)


def parse(data: Any, source: str, overrides: Overrides | None = None) -> Recipe:
    """Check raw recipe data (a parsed YAML document) and return the resolved Recipe."""
    overrides = overrides or Overrides()
    if data is None:
        raise RecipeError(source, "", "the recipe is empty; expected a mapping with task and methods")
    if not isinstance(data, dict):
        raise RecipeError(source, "", f"expected a mapping with task and methods at the top, got {describe(data)}")
    data = overrides.apply(data)

    def fail(e: Invalid, prefix: str = "") -> RecipeError:
        path = prefix + ("." if prefix and e.path else "") + e.path
        flagged = next((p for p in overrides.values if path == p or path.startswith(p + ".")), None)
        return RecipeError("command line" if flagged else source, path, e.message)

    try:
        top = _TOP.check(data)
    except Invalid as e:
        raise fail(e) from None
    try:
        task = _task(top["task"])
    except Invalid as e:
        raise fail(e, "task") from None
    training = top["training"] or _TRAINING.check({})
    training = dict(training)
    training["schedule"] = training["schedule"] if isinstance(training["schedule"], Schedule) else Schedule()
    has_val = holds_val(task, training["validation"])
    if training["eval_splits"] is None:
        training["eval_splits"] = (["val"] if has_val else []) + ["test"]
    if "val" in training["eval_splits"] and not has_val:
        raise RecipeError(
            source, "training.eval_splits", 'lists "val" but training.validation is 0; hold out a fraction of train'
        )
    raw_methods, raw_search = top["methods"], top["search"]
    if overrides.methods is not None:  # only the chosen entries are resolved: the others' packages may be missing
        if isinstance(raw_methods, dict) and any(w in raw_methods for w in overrides.methods):
            raw_methods = {k: v for k, v in raw_methods.items() if str(k) in overrides.methods}
        if isinstance(raw_search, dict):
            raw_search = {k: v for k, v in raw_search.items() if str(k) in overrides.methods}
    try:
        entries = _methods(raw_methods)
    except Invalid as e:
        e = e if not top["extra"] or "cannot import" not in e.message else Invalid(
            f"{e.message}; this recipe needs the extra: pip install 'curvbench[{top['extra']}]'", e.path)
        raise fail(e, "methods") from None
    if overrides.methods is not None:
        entries = _select(entries, overrides.methods, source)
    try:
        search = space.check_search(raw_search, {m.name: m.method for m in entries})
    except Invalid as e:
        raise fail(e, "search") from None
    name = top["name"] or Path(source).stem
    return Recipe(
        name=name,
        source=source,
        description=top["description"] or "",
        experiment=top["experiment"],
        task=task,
        training=Training(**training),
        methods=entries,
        search=search,
        extra=top["extra"],
    )


def _select(entries: list[MethodEntry], wanted: list[str], source: str) -> list[MethodEntry]:
    from curvbench import methods as registry

    by_name = {m.name: m for m in entries}
    out = []
    for w in wanted:
        if w in by_name:
            out.append(by_name[w])
        elif w in registry.registry():
            out.append(MethodEntry(w, w, registry.get(w).defaults()))
        else:
            known = list(dict.fromkeys(list(by_name) + list(registry.registry())))
            raise CurvbenchError(f"--methods: unknown method {w!r}; known: {', '.join(known)}")
    if not out:
        raise CurvbenchError("--methods: expected at least one method name")
    return out


def load(ref: str, overrides: Overrides | None = None) -> Recipe:
    path = find_recipe(ref)
    return parse(load_yaml(path), str(path), overrides)
