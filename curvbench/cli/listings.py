"""What `curvbench methods` and `curvbench tasks` print: every method and task a recipe can name, with where
each comes from (built-in, an entry point, an import path in a recipe) and the plugins that failed to load."""

from __future__ import annotations

from curvbench.errors import CurvbenchError


def _recipe_names(ref: str, section: str) -> list[tuple[str, str]]:
    """(entry, what it names) of a recipe's methods or task, read from its YAML without resolving anything, so
    that an entry whose package is missing is listed with its error instead of failing the listing."""
    from curvbench.recipe import loading as recipe

    path = recipe.find_recipe(ref)
    data = recipe.load_yaml(path)
    if not isinstance(data, dict):
        raise CurvbenchError(f"{path}: expected a mapping at the top of the recipe")
    if section == "task":
        task = data.get("task")
        if isinstance(task, dict):
            return [("task", str(task.get("loader") or task.get("dataset")))]
        return [("task", str(task))]
    entries = data.get("methods") or {}
    if isinstance(entries, list):
        entries = {str(e): None for e in entries}
    if not isinstance(entries, dict):
        raise CurvbenchError(f"{path}: methods: expected a mapping of method names to hyperparameters")
    return [(str(k), str((v or {}).get("method", k)) if isinstance(v, dict) or v is None else str(k))
            for k, v in entries.items()]


def method_lines(recipe_ref: str | None = None) -> tuple[list[str], list[str]]:
    """(lines to print, one-line problems): every registered method, then the recipe's imported ones. A plugin
    that fails to load is a problem (a warning); an entry of the named recipe that cannot be used is an error:
    the user asked about that recipe, and it would not run."""
    from curvbench import methods

    lines: list[str] = []
    for spec in methods.registry().values():
        lines += _method_block(spec)
    problems = [b.line() for b in methods.broken_plugins()]
    if recipe_ref:
        for entry, name in _recipe_names(recipe_ref, "methods"):
            if name in methods.registry():
                continue
            try:
                spec = methods.get(name)
            except CurvbenchError as e:
                raise CurvbenchError(f"{recipe_ref}: methods.{entry}: {e}") from None
            lines += _method_block(spec, entry)
    return lines, problems


def _method_block(spec, entry: str | None = None) -> list[str]:
    source = spec.source
    if spec.source != "built-in" and not spec.source.startswith("entry point"):
        source = f"imported: {spec.source} {spec.version}"
    head = f"{entry + ' = ' if entry else ''}{spec.name}: {spec.description} [L2 {spec.regularisation}] ({source})"
    return [head] + [f"    {h.name} = {h.default!r}: {h.help}" for h in spec.hparams]


def task_lines(recipe_ref: str | None = None) -> tuple[list[str], list[str]]:
    from curvbench import tasks

    lines = [_task_line(t) for t in tasks.registry().values()]
    problems = [b.line() for b in tasks.broken_plugins()]
    if recipe_ref:
        for _, name in _recipe_names(recipe_ref, "task"):
            if name in tasks.registry():
                continue
            try:
                lines.append(_task_line(tasks.from_loader(name)))
            except CurvbenchError as e:  # the named recipe's task cannot be used: an error, as for a method
                raise CurvbenchError(f"{recipe_ref}: task: {e}") from None
    return lines, problems


def _task_line(t) -> str:
    models = ", ".join(t.models) or "its own"
    metric = t.metrics[0] if t.metrics else "accuracy"
    return f"{t.name:14s} models: {models:10s} metric: {metric:9s} {t.description} ({t.source})"
