"""The real datasets in ../shared/datasets: the readers give the official counts, and a short training run on
each task's real data learns. Skipped, with the reason, on a machine without that folder."""

from collections import Counter

import numpy as np
import pytest
import torch
from conftest import SHARED

from curvbench.methods import get
from curvbench.recipe import loading as recipe
from curvbench.recipe.loading import MethodEntry
from curvbench.training import engine
from curvbench.training.runner import load_task

pytestmark = [pytest.mark.data,
              pytest.mark.skipif(not SHARED.is_dir(), reason=f"real datasets not found at {SHARED}")]
CPU = torch.device("cpu")


def need(folder: str):
    if not (SHARED / folder).is_dir():
        pytest.skip(f"{SHARED / folder} is absent")


def load(task: dict, **training):
    r = recipe.parse({"task": {"data_dir": str(SHARED), "download": False, **task}, "methods": ["sgd"],
                      "training": {"device": "cpu", "seeds": [0], **training}}, "real-data test")
    return r, load_task(r, CPU)


def train(task, r, method: str, **hp):
    entry = MethodEntry(method, method, get(method).resolve(hp))
    result = engine.train(task, entry, r.training, 0, CPU)
    assert result.status == engine.FINISHED, result.reason
    return result


MNIST_TRAIN_PER_CLASS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.mark.parametrize("dataset,folder,per_class", [("mnist", "MNIST", MNIST_TRAIN_PER_CLASS),
                                                      ("fashion-mnist", "FashionMNIST", [6000] * 10)])
def test_idx_readers_give_the_official_counts(dataset, folder, per_class):
    need(folder)
    _, task = load({"dataset": dataset})
    train_, test = task.splits["train"], task.splits["test"]
    assert (len(train_), len(test)) == (60_000, 10_000)
    assert tuple(train_.x.shape[1:]) == (1, 28, 28)
    assert torch.bincount(train_.y, minlength=10).tolist() == per_class
    if dataset == "fashion-mnist":
        assert torch.bincount(test.y, minlength=10).tolist() == [1000] * 10


@pytest.mark.parametrize("dataset,folder,floor,epochs", [("mnist", "MNIST", 0.96, 1),
                                                          ("fashion-mnist", "FashionMNIST", 0.80, 2)])
def test_a_short_run_of_sgd_on_real_images_learns(dataset, folder, floor, epochs):
    """MNIST 0.9745 after one epoch, Fashion-MNIST 0.8438 after two (0.8018 after one: too near its floor)."""
    need(folder)
    r, task = load({"dataset": dataset}, epochs=epochs, threads=2)
    acc = train(task, r, "sgd", lr=0.1).epochs[-1].metrics["test_accuracy"]
    assert acc >= floor, acc


def test_cifar_reader_takes_the_pixel_exact_batches_and_gives_the_official_counts():
    need("cifar-10-batches-py")
    from curvbench.tasks.cifar import TEST_FILES, TRAIN_FILES, read_batches

    folder = SHARED / "cifar-10-batches-py"
    x, y = read_batches(folder, TRAIN_FILES)
    xt, yt = read_batches(folder, TEST_FILES)
    assert x.shape == (50_000, 3, 32, 32) and xt.shape == (10_000, 3, 32, 32) and x.dtype == np.uint8
    assert np.bincount(y, minlength=10).tolist() == [5000] * 10
    assert np.bincount(yt, minlength=10).tolist() == [1000] * 10
    assert yt[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1] and y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    np.testing.assert_allclose((x / 255.0).mean(axis=(0, 2, 3)), [0.4914, 0.4822, 0.4465], atol=1e-4)


def test_resnet18_on_real_cifar10_learns_in_a_few_dozen_steps():
    """SGD with momentum, 60 steps of 50 real images each (ResNet-18 is slow on a CPU): the loss falls and test
    accuracy on 500 real test images rises above chance (0.1): 0.31 here."""
    need("cifar-10-batches-py")
    r, task = load({"dataset": "cifar10"}, epochs=3, batch_size=50, threads=2, log_every=10)
    g = torch.Generator().manual_seed(0)
    task.splits["train"] = task.splits["train"].subset(torch.randperm(50_000, generator=g)[:1000])
    task.splits["test"] = task.splits["test"].subset(torch.arange(500))
    result = train(task, r, "sgd", lr=0.02, momentum=0.9)
    first, last = result.epochs[0].metrics, result.epochs[-1].metrics
    assert last["train_loss"] < first["train_loss"], (first, last)
    assert last["test_accuracy"] > 0.2, last


def _write_sentences(src, dst, n):
    """The first n sentences of a CoNLL file (documents' -DOCSTART- lines included), as they stand."""
    out, count = [], 0
    for block in src.read_text().split("\n\n"):
        if not block.strip():
            continue
        out.append(block.strip("\n"))
        count += not block.startswith("-DOCSTART-")
        if count >= n:
            break
    dst.write_text("\n\n".join(out) + "\n\n")


def test_conll_reader_gives_the_official_counts():
    need("conll2003")
    from curvbench.tasks.conll import read_conll

    counts = {"train.txt": (14_041, 203_621, 6600), "valid.txt": (3_250, 51_362, 1842),
              "test.txt": (3_453, 46_435, 1617)}
    for name, (sentences, tokens, persons) in counts.items():
        data = read_conll(SHARED / "conll2003" / name)
        assert len(data) == sentences, name
        assert sum(len(words) for words, _ in data) == tokens, name
        assert Counter(t for _, tags in data for t in tags)["B-PER"] == persons, name


def test_lstm_tagger_on_real_conll_learns_in_two_short_epochs(tmp_path):
    """1,500 real training sentences, two epochs of AdamW: token accuracy on 300 real dev sentences clearly beats
    tagging every token O (0.78 on them), and entity F1 is well above 0."""
    need("conll2003")
    folder = tmp_path / "conll2003"
    folder.mkdir()
    for name, n in (("train.txt", 1500), ("valid.txt", 300), ("test.txt", 300)):
        _write_sentences(SHARED / "conll2003" / name, folder / name, n)
    r = recipe.parse({"task": {"dataset": "conll2003", "data_dir": str(tmp_path), "download": False},
                      "methods": ["sgd"], "training": {"device": "cpu", "epochs": 2, "batch_size": 8, "threads": 2}},
                     "real-data test")
    task = load_task(r, CPU)
    tags = [t for sentence in task.splits["val"].raw_tags for t in sentence]
    o_share = tags.count("O") / len(tags)  # the accuracy of tagging every token O
    metrics = train(task, r, "adamw", lr=0.005).epochs[-1].metrics
    assert metrics["val_accuracy"] > o_share + 0.05, (o_share, metrics)
    assert metrics["val_f1"] > 0.3, metrics


def test_adaptive_kfac_with_its_defaults_reaches_the_thesis_target_on_mnist_in_two_epochs():
    """Nothing tuned, reached as to-target counts it (at an epoch end within two). Seeds 0-2 gave 0.9886, 0.9894,
    0.9889 after two epochs on the machine the test was written on; on a 2-core AMD EPYC (other float kernels, the
    same code) 0.9866, 0.9867, 0.9874 after one and 0.9845, 0.9863, 0.9635 after two: the final epoch is not the
    claim, the first reach is."""
    need("MNIST")
    r, task = load({"dataset": "mnist"}, epochs=2, threads=2)
    result = train(task, r, "kfac-adaptive")
    assert max(e.metrics["test_accuracy"] for e in result.epochs) >= 0.985
    lam = [e.metrics["kfac_damping"] for e in result.epochs]
    assert lam[0] < 150.0  # the damping adapted from its start
