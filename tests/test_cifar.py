"""CIFAR-10 on generated data in the real `cifar-10-batches-py` pickle layout; ResNet-18's shape and size."""

import pickle

import numpy as np
import pytest
import torch

from curvbench.errors import DatasetMissing
from curvbench.recipe import loading as recipe
from curvbench.tasks.cifar import MEAN, STD, random_crop_flip
from curvbench.training.runner import load_task


def write_cifar(root, n_per_batch=12, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n_per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels, "filenames": []}, f)
        batches[name] = (data, labels)
    return batches


@pytest.fixture
def cifar_recipe(tmp_path):
    batches = write_cifar(tmp_path)
    r = recipe.parse({"task": {"dataset": "cifar10", "data_dir": str(tmp_path), "download": False},
                      "training": {"epochs": 1, "batch_size": 20, "device": "cpu"}, "methods": ["sgd"]}, "t")
    return r, batches


def test_reader_loads_the_pickle_layout_normalised(cifar_recipe):
    r, batches = cifar_recipe
    task = load_task(r, torch.device("cpu"))
    assert task.splits["train"].x.shape == (60, 3, 32, 32) and task.splits["test"].x.shape == (12, 3, 32, 32)
    data, labels = batches["data_batch_2"]
    x = task.splits["train"].x[12]  # first image of the second batch
    raw = torch.from_numpy(data[0].reshape(3, 32, 32)).float() / 255
    expected = (raw - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(x, expected)
    assert task.splits["train"].y[12].item() == labels[0]


def test_crop_and_flip_match_an_explicit_per_image_computation():
    x = torch.randn(6, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, g, pad=2)
    g = torch.Generator().manual_seed(0)
    dy, dx = torch.randint(0, 5, (6,), generator=g), torch.randint(0, 5, (6,), generator=g)
    flip = torch.rand(6, generator=g) < 0.5
    for i in range(6):  # crop from the zero-padded image, then flip (torchvision's RandomCrop, RandomHorizontalFlip)
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        crop = padded[:, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8]
        torch.testing.assert_close(out[i], crop.flip(2) if flip[i] else crop)
    assert flip.any() and not flip.all()


def test_resnet18_cifar_variant_shape_and_parameters():
    from curvbench.models.resnet import ResNet18

    m = ResNet18()
    assert sum(p.numel() for p in m.parameters()) == 11_173_962
    conv = m.stem[0]
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1)
    assert not any(isinstance(l, torch.nn.MaxPool2d) for l in m.modules())
    assert [b.conv1.out_channels for b in m.layers] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.slow
def test_one_epoch_through_the_engine(cifar_recipe):
    from curvbench import methods
    from curvbench.recipe.loading import MethodEntry
    from curvbench.training import engine

    r, _ = cifar_recipe
    task = load_task(r, torch.device("cpu"))
    entry = MethodEntry("sgd", "sgd", methods.get("sgd").defaults())
    result = engine.train(task, entry, r.training, 0, torch.device("cpu"))
    assert result.status == "FINISHED" and result.steps == 3
    assert 0 <= result.epochs[0].metrics["test_accuracy"] <= 1


def test_kfac_covers_every_resnet_conv_and_leaves_batchnorm_to_the_plain_step():
    from helpers import TinyTask

    from curvbench.methods.base import BuildContext
    from curvbench.models.resnet import ResNet18

    model = ResNet18()
    spec = methods_get("kfac")
    opt = spec.build(BuildContext(model, TinyTask(), 1, 1, 0), spec.configure(spec.defaults()))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert opt.tags["kfac_layers"].count(":conv2d") == len(convs) == 20
    assert ":linear" in opt.tags["kfac_layers"]
    plain = opt.tags["kfac_plain_gradient"].split(", ")
    assert all(".bn" in n or "shortcut.1" in n or n.startswith("stem.1") for n in plain) and len(plain) == 40


def methods_get(name):
    from curvbench import methods

    return methods.get(name)


def test_missing_cifar_names_the_folder(tmp_path):
    r = recipe.parse({"task": {"dataset": "cifar10", "data_dir": str(tmp_path), "download": False},
                      "methods": ["sgd"]}, "t")
    with pytest.raises(DatasetMissing, match=f"not found in {tmp_path}/cifar-10-batches-py"):
        load_task(r, torch.device("cpu"))


def _with_options(tmp_path, **options):
    write_cifar(tmp_path)
    return recipe.parse({"task": {"dataset": "cifar10", "data_dir": str(tmp_path), "download": False,
                                  "options": options},
                         "training": {"epochs": 1, "batch_size": 20, "device": "cpu"}, "methods": ["sgd"]}, "t")


def test_cpu_defaults_are_channels_last_and_float32_without_bf16_instructions_and_say_so(tmp_path, monkeypatch):
    from curvbench.tasks import cifar

    monkeypatch.setattr(cifar, "cpu_has_bf16", lambda: False)
    task = load_task(_with_options(tmp_path), torch.device("cpu"))
    assert not task.bf16 and task.channels_last
    assert task.run_tags == {"precision": "float32", "memory_format": "channels_last"}
    assert task.splits["train"].x.is_contiguous(memory_format=torch.channels_last)
    model = task.prepare_model(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)))
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    (tmp_path / "off").mkdir()
    off = load_task(_with_options(tmp_path / "off", channels_last=False), torch.device("cpu"))
    assert off.run_tags["memory_format"] == "contiguous" and off.splits["train"].x.is_contiguous()


def test_bf16_on_the_cpu_when_asked_autocasts_the_model_and_keeps_the_logits_and_kfac_statistics_float32(
        tmp_path, monkeypatch):
    from curvbench.tasks import cifar

    # bf16 arithmetic is emulated on a CPU without the instructions: slow, but what is computed is the same
    monkeypatch.setattr(cifar, "cpu_has_bf16", lambda: True)
    task = load_task(_with_options(tmp_path, bf16=True, channels_last=True), torch.device("cpu"))
    assert task.bf16 and task.channels_last and task.run_tags["precision"].startswith("bf16 autocast")
    assert task.splits["train"].x.is_contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)
    batch = next(task.eval_batches("train", 2))
    # a small conv net through the task's forward: autocast, as for ResNet-18, at a fraction of the cost
    model = task.prepare_model(torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)))
    reference = torch.nn.Sequential(*[m for m in __import__("copy").deepcopy(model)])
    model.train()
    reference.train()
    out = task.forward(model, batch)
    exact = reference(batch.inputs)
    assert out.dtype == torch.float32
    assert not torch.equal(out, exact)  # computed in bf16: close, not equal
    torch.testing.assert_close(out, exact, rtol=0.05, atol=0.05)
    from curvbench.methods.kfac import KFAC
    from curvbench.training import engine

    opt = KFAC(model, task.fisher_loss, factor_every=1, inverse_every=1)
    for _ in range(3):
        opt.step(engine.make_closure(model, task, opt, batch, list(model.parameters()), 0.0))
    assert len(opt.blocks) == 2
    assert all(b.A.dtype == torch.float32 and b.G.dtype == torch.float32 for b in opt.blocks)
    assert all(torch.isfinite(b.A).all() and torch.isfinite(b.G).all() for b in opt.blocks)


def test_cpu_default_is_bf16_autocast_on_a_cpu_with_bf16_instructions_and_says_so(tmp_path, monkeypatch):
    from curvbench.tasks import cifar

    monkeypatch.setattr(cifar, "cpu_has_bf16", lambda: True)
    task = load_task(_with_options(tmp_path), torch.device("cpu"))
    assert task.bf16 and task.channels_last
    assert task.run_tags == {"precision": "bf16 autocast (float32 loss and statistics)",
                             "memory_format": "channels_last"}
    (tmp_path / "off").mkdir()
    assert load_task(_with_options(tmp_path / "off", bf16=False), torch.device("cpu")).bf16 is False


def test_bf16_asked_for_on_a_cpu_without_it_is_refused_before_the_data_is_read(tmp_path, monkeypatch):
    from curvbench.errors import CurvbenchError
    from curvbench.tasks import cifar

    monkeypatch.setattr(cifar, "cpu_has_bf16", lambda: False)
    with pytest.raises(CurvbenchError, match="task.options.bf16: true, but this CPU has no bf16 instructions"):
        load_task(_with_options(tmp_path, bf16=True), torch.device("cpu"))
    assert load_task(_with_options(tmp_path / "b", bf16="auto"), torch.device("cpu")).bf16 is False
