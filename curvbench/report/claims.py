"""Claims about which method reaches a target first, as data, each checked against the tracked to-target runs.

A claims file (YAML) lists claims; each names its task(s), what is claimed, the methods (recipe entries) and the
measure (seconds, epochs or steps to the target):

    claims:
      - id: mnist-sam-fastest-time
        text: SAM reaches 0.985 first in time
        tasks: [mnist]
        claim: fastest          # methods[0] reaches the target before every other method run
        methods: [sam]
        measure: seconds
      - {id: ..., claim: faster, methods: [kfac, shampoo], ...}            # methods[0] before methods[1]
      - {id: ..., claim: slowest, methods: [kfac, shampoo], ...}           # after every method not named
      - {id: ..., claim: about_equal, methods: [lion, sgd], within: 0.2}   # medians within 20% of each other
      - {id: ..., claim: at_most, methods: [lion], measure: epochs, value: 1}

Each claim is judged on every setting that ran it (the to-target runs of one recipe and target on that task),
with the tests of curvbench.stats at the 5% level:
- faster: confirmed when the one-sided test says methods[0] is faster; refuted when it says it is slower;
- fastest / slowest: confirmed when every pairwise test against the methods not named agrees (all must pass, so no
  correction is needed); refuted when any pairwise test says the opposite at 5% / number of pairs (Bonferroni);
- about_equal: the speed-up's 95% interval inside [1/(1+within), 1+within] confirms, wholly outside refutes;
- at_most: the median's interval at or below `value` confirms, wholly above refutes;
- inconclusive otherwise. A setting that lacks one of the methods says "missing runs"; a task with no setting
  says "not run". Nothing is guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from curvbench.errors import CurvbenchError
from curvbench.report import stats

KINDS = ("fastest", "slowest", "faster", "about_equal", "at_most")
MEASURES = ("seconds", "epochs", "steps")
CONFIRMED, REFUTED, INCONCLUSIVE, MISSING, NOT_RUN = "confirmed", "refuted", "inconclusive", "missing runs", "not run"


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    task: str
    kind: str
    methods: tuple[str, ...]
    measure: str
    within: float | None = None
    value: float | None = None
    target: float | None = None


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    setting: str  # the recipe whose runs judged it ("-" when not run)
    outcome: str
    evidence: str


def find(ref: str) -> Path:
    """A path, or a name looked up like a recipe's (thesis-claims -> recipes/thesis-claims.yaml)."""
    from curvbench.recipe.loading import find_recipe

    p = Path(ref)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise CurvbenchError(f"--claims {ref}: no such file")
        return p
    try:
        return find_recipe(ref)
    except CurvbenchError:
        raise CurvbenchError(f"--claims {ref}: no claims file of that name or path") from None


def load(ref: str) -> list[Claim]:
    """Reads and checks a claims file: unknown tasks, methods, measures or kinds are one error naming the field."""
    from curvbench import methods as method_registry
    from curvbench.recipe.loading import load_yaml
    from curvbench.tasks import registry as task_registry

    path = find(ref)
    data = load_yaml(path)
    where = str(path)
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list) or not data["claims"]:
        raise CurvbenchError(f"{where}: expected a mapping with a non-empty list `claims`")
    known_tasks = set(task_registry())
    known_methods = set(method_registry.registry())
    out, seen = [], set()
    for i, c in enumerate(data["claims"]):
        at = f"{where}: claims[{i}]"
        if not isinstance(c, dict):
            raise CurvbenchError(f"{at}: expected a mapping, got {type(c).__name__}")
        unknown = set(c) - {"id", "text", "task", "tasks", "claim", "methods", "measure", "within", "value", "target"}
        if unknown:
            raise CurvbenchError(f"{at}: unknown key {sorted(unknown)[0]!r}")
        cid = str(c.get("id") or f"claim-{i}")
        if cid in seen:
            raise CurvbenchError(f"{at}.id: {cid!r} is used twice")
        seen.add(cid)
        kind = c.get("claim")
        if kind not in KINDS:
            raise CurvbenchError(f"{at}.claim: expected one of {', '.join(KINDS)}, got {kind!r}")
        measure = c.get("measure", "seconds")
        if measure not in MEASURES:
            raise CurvbenchError(f"{at}.measure: expected one of {', '.join(MEASURES)}, got {measure!r}")
        tasks = c.get("tasks", [c["task"]] if "task" in c else None)
        if not isinstance(tasks, list) or not tasks:
            raise CurvbenchError(f"{at}.tasks: expected a task name or a list of them")
        for t in tasks:
            if t not in known_tasks:
                raise CurvbenchError(f"{at}.tasks: unknown task {t!r}; known: {', '.join(sorted(known_tasks))}")
        methods = c.get("methods")
        if not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods):
            raise CurvbenchError(f"{at}.methods: expected a list of method names")
        for m in methods:
            if m not in known_methods:
                raise CurvbenchError(f"{at}.methods: unknown method {m!r}; known: {', '.join(sorted(known_methods))}")
        wanted = {"faster": 2, "about_equal": 2, "fastest": 1, "at_most": 1}.get(kind)
        if wanted is not None and len(methods) != wanted:
            raise CurvbenchError(f"{at}.methods: a {kind} claim names {wanted} method(s), got {len(methods)}")
        within, value, target = c.get("within"), c.get("value"), c.get("target")
        if kind == "about_equal" and not (isinstance(within, (int, float)) and within > 0):
            raise CurvbenchError(f"{at}.within: an about_equal claim needs a tolerance > 0 (0.2 = 20%)")
        if kind == "at_most" and not isinstance(value, (int, float)):
            raise CurvbenchError(f"{at}.value: an at_most claim needs a number")
        if target is not None and not isinstance(target, (int, float)):
            raise CurvbenchError(f"{at}.target: expected a number")
        for t in tasks:
            out.append(Claim(cid, str(c.get("text", cid)), t, kind, tuple(methods), measure,
                             within and float(within), value if value is None else float(value),
                             target if target is None else float(target)))
    return out


# a setting: {entry: {measure: Censored}} for the to-target runs of one recipe and target on a task
Setting = dict


def evaluate(claims: list[Claim], settings: dict[tuple[str, str, float], Setting]) -> list[Verdict]:
    """Each claim on each setting of its task (settings keyed by (task, recipe, target))."""
    out = []
    for c in claims:
        mine = {k: v for k, v in settings.items() if k[0] == c.task and (c.target is None or
                                                                         math.isclose(k[2], c.target))}
        if not mine:
            out.append(Verdict(c, "-", NOT_RUN, f"no to-target runs on {c.task}"
                               + (f" at target {c.target:g}" if c.target is not None else "")))
            continue
        for (task, recipe, target), entries in sorted(mine.items()):
            setting = f"{recipe} (target {target:g})"
            lacking = [m for m in c.methods if m not in entries]
            if lacking or (c.kind in ("fastest", "slowest") and len(entries) < 2):
                out.append(Verdict(c, setting, MISSING, "no runs of " + (", ".join(lacking) or "a second method")))
                continue
            values = {e: m[c.measure] for e, m in entries.items()}
            outcome, evidence = _judge(c, values)
            out.append(Verdict(c, setting, outcome, evidence))
    return out


def _judge(c: Claim, v: dict[str, stats.Censored]) -> tuple[str, str]:
    unit = {"seconds": "s", "epochs": "epochs", "steps": "steps"}[c.measure]
    if c.kind == "faster":
        a, b = c.methods
        cmp = stats.compare(v[a], v[b], b)
        # with fewer than 2 seeds a side the verdict is "no test (...)", which text() says: inconclusive
        outcome = CONFIRMED if cmp.verdict == "faster" else REFUTED if cmp.verdict == "slower" else INCONCLUSIVE
        return outcome, f"{c.measure}: {a} {cmp.text()}"
    if c.kind in ("fastest", "slowest"):
        named = set(c.methods)
        others = [e for e in v if e not in named]
        pairs = [(a, b) for a in c.methods for b in others]
        if not pairs:
            return INCONCLUSIVE, "no other method to compare with"
        cmps = {(a, b): stats.compare(v[a], v[b], b) for a, b in pairs}
        if any(x.p_faster is None for x in cmps.values()):
            return INCONCLUSIVE, "fewer than 2 seeds: no test"
        want = "faster" if c.kind == "fastest" else "slower"
        agree = [x.verdict == want for x in cmps.values()]
        opposite = [(x.p_slower if want == "faster" else x.p_faster) < stats.ALPHA / len(pairs) for x in cmps.values()]
        medians = ", ".join(f"{e} {v[e].text('{:.3g}')}" for e in sorted(v, key=lambda e: v[e].median))
        worst = max(cmps.items(), key=lambda kv: kv[1].p_faster if want == "faster" else kv[1].p_slower)
        evidence = f"{c.measure} ({unit}), median first: {medians}; weakest pair: {worst[0][0]} {worst[1].text()}"
        if all(agree):
            return CONFIRMED, evidence
        if any(opposite):
            (a, b), x = next((k, x) for k, x, o in zip(cmps, cmps.values(), opposite) if o)
            return REFUTED, f"{c.measure}: {a} {x.text()} (Bonferroni over {len(pairs)} pairs); {medians}"
        return INCONCLUSIVE, evidence
    if c.kind == "about_equal":
        a, b = c.methods
        cmp = stats.compare(v[a], v[b], b)
        lo, hi = 1 / (1 + c.within), 1 + c.within
        band = f"equal within {c.within:.0%}: [{lo:.2f}, {hi:.2f}]"
        if cmp.interval is None:
            return INCONCLUSIVE, f"{a}: {cmp.text()}; {band}; no interval"
        iv = cmp.interval
        if lo <= iv.low and iv.high <= hi:
            return CONFIRMED, f"{a}: {cmp.text()}; {band}"
        if iv.high < lo or iv.low > hi:
            return REFUTED, f"{a}: {cmp.text()}; {band}"
        return INCONCLUSIVE, f"{a}: {cmp.text()}; {band}"
    # at_most
    (a,) = c.methods
    x = v[a]
    ci = x.interval()
    text = f"{a}: {c.measure} {x.text('{:.3g}')}, reached {x.reached}/{x.n}; claimed at most {c.value:g}"
    if ci is None:
        return INCONCLUSIVE, text + " (one seed: no interval)"
    if ci.high <= c.value:
        return CONFIRMED, text
    if ci.low > c.value:
        return REFUTED, text
    return INCONCLUSIVE, text


COLUMNS = ("claim", "task", "setting", "verdict", "evidence")


def cells(v: Verdict, bold: bool = False) -> list[str]:
    """A verdict's row: its outcome in bold where Markdown shows it."""
    return [v.claim.text, v.claim.task, v.setting, f"**{v.outcome}**" if bold else v.outcome, v.evidence]


def markdown(verdicts: list[Verdict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells(v, bold=True)) + " |" for v in verdicts]
    return "\n".join(lines) + "\n"
