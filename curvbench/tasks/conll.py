"""CoNLL-2003 English NER with an LSTM tagger: column-file reader, vocabulary, bucketed padded batches on the
device, loss and metrics over real tokens only (token accuracy, entity-level micro F1)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from curvbench.errors import DatasetMissing
from curvbench.tasks import data_dir as data_dirs
from curvbench.tasks.base import Batch, sample_labels
from curvbench.tasks.ner_metrics import iob1_to_iob2, micro_f1

PAD, UNK = "<pad>", "<unk>"
SPLIT_FILES = {
    "train": ("train.txt", "eng.train"),
    "val": ("dev.txt", "valid.txt", "eng.testa"),
    "test": ("test.txt", "eng.testb"),
}


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    """Sentences of (tokens, IOB2 tags): token first, tag last, blank lines between sentences."""
    sentences, tokens, tags = [], [], []
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DatasetMissing(f"{path}:{line}: not UTF-8 text (byte {e.object[e.start]:#04x}); expected the CoNLL "
                             f"column format") from None
    except OSError as e:
        raise DatasetMissing(f"{path}: cannot read ({e.strerror or e.__class__.__name__})") from None
    if "\x00" in text:
        raise DatasetMissing(f"{path}: a binary file (NUL bytes); expected the CoNLL column format")
    for lineno, line in enumerate(text.splitlines(keepends=True), 1):
        parts = line.split()
        if not parts:
            if tokens:
                sentences.append((tokens, iob1_to_iob2(tags)))
                tokens, tags = [], []
            continue
        if parts[0] == "-DOCSTART-":
            continue
        if len(parts) < 2:
            raise DatasetMissing(f"{path}:{lineno}: expected 'TOKEN ... TAG', got {line.strip()!r}")
        tag = parts[-1]
        if tag != "O" and (tag[:2] not in ("B-", "I-") or len(tag) < 3):
            raise DatasetMissing(f"{path}:{lineno}: expected an IOB tag (O, B-TYPE or I-TYPE), got {tag!r}")
        tokens.append(parts[0])
        tags.append(tag)
    if tokens:
        sentences.append((tokens, iob1_to_iob2(tags)))
    if not sentences:
        raise DatasetMissing(f"{path}: no sentences")
    return sentences


def _find_files(root: Path) -> dict[str, Path] | None:
    for folder in (root / "conll2003", root):
        found = {}
        for split, names in SPLIT_FILES.items():
            hit = next((folder / n for n in names if (folder / n).is_file()), None)
            if hit:
                found[split] = hit
        if {"train", "test"} <= found.keys():
            if "val" not in found:
                raise DatasetMissing(f"conll2003: {folder} has {found['train'].name} and {found['test'].name} but no "
                                     f"validation file ({' or '.join(SPLIT_FILES['val'])}); the task's val split "
                                     f"(scores, early stopping) needs it")
            return found
    return None


def _from_hub() -> dict[str, list] | str:
    """The Hugging Face `datasets` copy, when online; returns the sentences or why it failed."""
    try:
        import datasets

        for name in ("eriktks/conll2003", "conll2003"):
            try:
                ds = datasets.load_dataset(name)
                break
            except Exception as e:  # noqa: BLE001 - every failure is reported the same way
                err = e
        else:
            return " ".join(str(err).split())[:120]
        names = ds["train"].features["ner_tags"].feature.names
        out = {}
        for split, hub in (("train", "train"), ("val", "validation"), ("test", "test")):
            out[split] = [(r["tokens"], iob1_to_iob2([names[t] for t in r["ner_tags"]])) for r in ds[hub]]
        return out
    except Exception as e:  # noqa: BLE001
        return " ".join(str(e).split())[:120]


@dataclass
class Encoded:
    tokens: torch.Tensor  # (N, Lmax) token ids, PAD = 0
    tags: torch.Tensor  # (N, Lmax) tag ids, padding = 0 (masked out)
    lengths: torch.Tensor  # (N,) on the CPU
    raw_tags: list[list[str]]

    def __len__(self) -> int:
        return self.tokens.shape[0]


class Vocabulary:
    def __init__(self, sentences, min_freq: int = 1, lowercase: bool = False):
        self.lowercase = lowercase
        counts = Counter(self.norm(w) for toks, _ in sentences for w in toks)
        self.words = [PAD, UNK] + sorted(w for w, c in counts.items() if c >= min_freq)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.tags = sorted({t for _, tags in sentences for t in tags})
        self.tag_index = {t: i for i, t in enumerate(self.tags)}

    def norm(self, word: str) -> str:
        return word.lower() if self.lowercase else word

    def encode(self, sentences, device, source: str) -> Encoded:
        n, lmax = len(sentences), max(len(t) for t, _ in sentences)
        tokens = torch.zeros(n, lmax, dtype=torch.long)
        tags = torch.zeros(n, lmax, dtype=torch.long)
        for i, (toks, tg) in enumerate(sentences):
            tokens[i, : len(toks)] = torch.tensor([self.index.get(self.norm(w), 1) for w in toks])
            unknown = [t for t in tg if t not in self.tag_index]
            if unknown:
                raise DatasetMissing(f"{source}: tag {unknown[0]!r} does not occur in the training split")
            tags[i, : len(tg)] = torch.tensor([self.tag_index[t] for t in tg])
        lengths = torch.tensor([len(t) for t, _ in sentences])
        return Encoded(tokens.to(device), tags.to(device), lengths, [tg for _, tg in sentences])


class TaggingTask:
    """Sentences held as padded id tensors on the device; batches bucketed by length with a seeded shuffle."""

    BUCKET = 50  # batches per length bucket

    def __init__(self, name, model_name, metric, splits: dict[str, Encoded], vocab: Vocabulary, options: dict):
        self.name, self.model_name, self.metric = name, model_name, metric
        self.splits, self.vocab, self.options = splits, vocab, options

    def hold_out(self, fraction: float, seed: int = 0) -> None:
        """CoNLL has its own dev split (val); a held-out fraction of train replaces it if asked for."""
        if fraction <= 0:
            return
        train = self.splits["train"]
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        n_val = max(1, int(round(fraction * len(train))))
        self.splits["val"] = _subset(train, perm[:n_val])
        self.splits["train"] = _subset(train, perm[n_val:])

    def steps_per_epoch(self, batch_size: int) -> int:
        return -(-len(self.splits["train"]) // batch_size)

    def _batch(self, data: Encoded, ids: torch.Tensor) -> Batch:
        length = int(data.lengths[ids].max())
        ids = ids.to(data.tokens.device)
        tokens = data.tokens[ids, :length]
        return Batch(tokens, data.tags[ids, :length], tokens != 0)

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        data = self.splits["train"]
        perm = torch.randperm(len(data), generator=generator)
        batches = []
        for chunk in perm.split(batch_size * self.BUCKET):  # sort within buckets: little padding, still random
            order = chunk[torch.argsort(data.lengths[chunk], stable=True)]
            batches += list(order.split(batch_size))
        for i in torch.randperm(len(batches), generator=generator).tolist():
            yield self._batch(data, batches[i])

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        data = self.splits[split]
        order = torch.argsort(data.lengths, stable=True)
        for ids in order.split(batch_size):
            yield self._batch(data, ids)

    def build_model(self, needs: frozenset = frozenset()) -> torch.nn.Module:
        from curvbench.models.lstm_tagger import LSTMTagger

        o = self.options
        return LSTMTagger(len(self.vocab.words), len(self.vocab.tags), embed=o["embed"], hidden=o["hidden"],
                          proj=o["proj"], bidirectional=o["bidirectional"],
                          unrolled="per_step_layers" in needs)  # a method that observes each time step

    def forward(self, model, batch: Batch) -> torch.Tensor:
        return model(batch.inputs, batch.mask)

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(outputs[batch.mask], batch.targets[batch.mask])

    def fisher_loss(self, outputs, batch, generator, empirical):
        logits = outputs[batch.mask]
        if empirical:
            targets = batch.targets[batch.mask]
        else:
            targets = sample_labels(logits.detach(), generator)
        return F.cross_entropy(logits, targets, reduction="sum"), targets.shape[0]

    @torch.no_grad()
    def evaluate(self, model, split: str, batch_size: int = 256) -> dict[str, float]:
        was_training = model.training
        model.eval()
        loss_sum, correct, tokens = 0.0, 0, 0
        gold, pred = [], []
        for b in self.eval_batches(split, batch_size):
            out = self.forward(model, b).float()
            loss_sum += F.cross_entropy(out[b.mask], b.targets[b.mask], reduction="sum").item()
            guess = out.argmax(-1)
            correct += int(((guess == b.targets) & b.mask).sum())
            tokens += int(b.mask.sum())
            lengths = b.mask.sum(1).tolist()
            for row, n in zip(guess.tolist(), lengths):
                pred.append([self.vocab.tags[t] for t in row[:n]])
            for row, n in zip(b.targets.tolist(), lengths):
                gold.append([self.vocab.tags[t] for t in row[:n]])
        model.train(was_training)
        return {"loss": loss_sum / tokens, "accuracy": correct / tokens, "f1": micro_f1(gold, pred)["f1"]}


def _subset(data: Encoded, idx: torch.Tensor) -> Encoded:
    dev_idx = idx.to(data.tokens.device)
    return Encoded(data.tokens[dev_idx], data.tags[dev_idx], data.lengths[idx], [data.raw_tags[i] for i in idx.tolist()])


def load_conll(config, device) -> TaggingTask:
    root = data_dirs.resolve(config.data_dir)
    files = _find_files(root)
    if files is not None:
        sentences = {split: read_conll(path) for split, path in files.items()}
    else:
        why = _from_hub() if config.download else "download disabled"
        if isinstance(why, str):
            raise DatasetMissing(
                f"conll2003: train.txt and test.txt not found in {root / 'conll2003'} or {root}, and the Hugging "
                f"Face copy could not be loaded ({why}); put the CoNLL-2003 column files there, or point "
                f"--data-dir / CURVBENCH_DATA at their folder"
            )
        sentences = why
    o = config.options
    vocab = Vocabulary(sentences["train"], min_freq=o["min_freq"], lowercase=o["lowercase"])
    splits = {s: vocab.encode(sents, device, str(files[s]) if files else s) for s, sents in sentences.items()}
    return TaggingTask("conll2003", config.model, config.metric, splits, vocab, o)
