"""Entity-level scores for IOB2 tags: exact-match micro F1, as conlleval and seqeval's default mode count it."""

from __future__ import annotations


def entities(tags: list[str]) -> set[tuple[str, int, int]]:
    """(type, start, end) spans of an IOB2 sequence; an I- that does not continue its type opens a new entity."""
    spans = set()
    start, kind = None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, t = tag.partition("-")
        continues = prefix == "I" and kind == t
        if start is not None and not continues:
            spans.add((kind, start, i))
            start, kind = None, None
        if prefix == "B" or (prefix == "I" and not continues):
            start, kind = i, t
    return spans


def micro_f1(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    tp = n_gold = n_pred = 0
    for g, p in zip(gold, pred):
        eg, ep = entities(g), entities(p)
        tp += len(eg & ep)
        n_gold += len(eg)
        n_pred += len(ep)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def iob1_to_iob2(tags: list[str]) -> list[str]:
    """IOB1 starts an entity with I- unless it follows one of the same type; IOB2 always starts with B-."""
    out = []
    prev = "O"
    for tag in tags:
        prefix, _, t = tag.partition("-")
        if prefix == "I" and (prev == "O" or prev.partition("-")[2] != t):
            tag = "B-" + t
        out.append(tag)
        prev = tag
    return out
