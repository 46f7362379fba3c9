"""The search-space grammar, in one place: a recipe's `search` section and `--space` flags both say, per method
entry and hyperparameter, either a list of values (a grid) or a range {low, high, log} (for the samplers that
draw), every value checked like the hyperparameter itself; and how a space becomes grid points or Optuna
suggestions.

    search:                                   --space sgd.lr=0.1,0.03        (a grid)
      sgd: {lr: [0.1, 0.03]}                  --space sgd.lr=1e-3:1:log      (a log range)
      lion: {lr: {low: 1.0e-5, high: 1.0e-3, log: true}}
"""

from __future__ import annotations

import itertools
from typing import Any

from curvbench.errors import CurvbenchError, describe
from curvbench.schema import Boolean, Invalid, Number, Section


def check_search(value: Any, names: dict[str, str]) -> dict:
    """search: {entry: {hparam: [values] | {low, high, log}}} — each value checked like the hparam itself.
    `names` maps the recipe's entry names to their methods."""
    from curvbench import methods as registry

    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(f"expected a mapping of method names to search spaces, got {describe(value)}")
    out: dict = {}
    for entry, space in value.items():
        method = names.get(entry, entry)
        try:
            spec = registry.get(method)
        except CurvbenchError:
            raise Invalid(f"unknown method {describe(entry)}; known methods: {', '.join(registry.registry())}",
                          entry) from None
        if not isinstance(space, dict):
            raise Invalid(f"expected a mapping of hyperparameters to values or ranges, got {describe(space)}", entry)
        hps = {h.name: h for h in spec.hparams}
        out[entry] = {}
        for hp, dom in space.items():
            path = f"{entry}.{hp}"
            if hp not in hps:
                raise Invalid(f"unknown hyperparameter {hp!r} for {method}; accepted: {', '.join(hps)}", path)
            if isinstance(dom, list):
                if not dom:
                    raise Invalid("expected a non-empty list of values or a range", path)
                vals = []
                for i, v in enumerate(dom):
                    try:
                        vals.append(hps[hp].check.check(v))
                    except Invalid as e:
                        raise Invalid(e.message, f"{path}[{i}]") from None
                out[entry][hp] = vals
            elif isinstance(dom, dict):
                rng = Section(
                    {"low": (Number(), Section.REQUIRED), "high": (Number(), Section.REQUIRED), "log": (Boolean(), False)}
                )
                try:
                    r = rng.check(dom)
                    for k in ("low", "high"):
                        hps[hp].check.check(r[k])
                except Invalid as e:
                    raise Invalid(e.message, f"{path}.{e.path}" if e.path else path) from None
                if not r["low"] < r["high"]:
                    raise Invalid(f"expected low < high, got low {r['low']:g}, high {r['high']:g}", path)
                if r["log"] and r["low"] <= 0:
                    raise Invalid(f"expected low > 0 for a log range, got {r['low']:g}", f"{path}.low")
                out[entry][hp] = r
            else:
                raise Invalid(f"expected a list of values or a mapping with low and high, got {describe(dom)}", path)
    return out



def parse_space_flags(items: list[str] | None) -> dict | None:
    """--space sgd.lr=0.1,0.03  or  --space sgd.lr=1e-3:1:log  ->  {"sgd": {"lr": [...] | {low, high, log}}}
    (checked later with the recipe, by check_search)."""
    if not items:
        return None
    import yaml

    def value(raw: str):
        v = yaml.safe_load(raw)
        if isinstance(v, str):  # YAML 1.1 reads 1e-4 as text
            try:
                return float(v)
            except ValueError:
                return v
        return v

    out: dict = {}
    for text in items:
        if "=" not in text or "." not in text.split("=", 1)[0]:
            raise CurvbenchError(f"--space {text}: expected METHOD.PARAM=v1,v2,... or METHOD.PARAM=LOW:HIGH[:log]")
        key, raw = text.split("=", 1)
        entry, hp = key.split(".", 1)
        try:
            if ":" in raw:
                parts = raw.split(":")
                if len(parts) > 3 or (len(parts) == 3 and parts[2] != "log"):
                    raise CurvbenchError(f"--space {text}: expected LOW:HIGH or LOW:HIGH:log (the only suffix), got "
                                         f"the suffix {':'.join(parts[2:])!r}")
                dom = {"low": value(parts[0]), "high": value(parts[1]), "log": parts[2:] == ["log"]}
            else:
                dom = [value(v) for v in raw.split(",")]
        except yaml.YAMLError:
            raise CurvbenchError(f"--space {text}: cannot read the values") from None
        out.setdefault(entry, {})[hp] = dom
    return out


def grid_points(space: dict) -> list[dict]:
    for hp, dom in space.items():
        if not isinstance(dom, list):
            raise CurvbenchError(f"search.{hp}: the grid sampler needs a list of values, got a range; use "
                                 f"--sampler random, halton or tpe, or list the values")
    keys = list(space)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(space[k] for k in keys))]


def suggest(trial, space: dict, integer: set[str]) -> dict:
    params = {}
    for hp, dom in space.items():
        if isinstance(dom, list):
            params[hp] = trial.suggest_categorical(hp, dom)
        elif hp in integer:
            params[hp] = trial.suggest_int(hp, int(dom["low"]), int(dom["high"]), log=dom["log"])
        else:
            params[hp] = trial.suggest_float(hp, dom["low"], dom["high"], log=dom["log"])
    return params


