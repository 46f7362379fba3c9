"""CoNLL-2003 on generated column files: reader, masking, entity F1, the two LSTMs, K-FAC through the LSTM."""

import pytest
import torch
import torch.nn.functional as F

from curvbench import methods
from curvbench.errors import DatasetMissing
from curvbench.models.lstm_tagger import LSTMTagger
from curvbench.recipe import loading as recipe
from curvbench.recipe.loading import MethodEntry
from curvbench.tasks.conll import read_conll
from curvbench.tasks.ner_metrics import entities, iob1_to_iob2, micro_f1
from curvbench.training import engine
from curvbench.training.runner import load_task

WORDS = "the a of in to Paris Berlin Smith Jones EU UN said went saw met visited".split()


def conll_text(n: int, seed: int, iob1: bool = False) -> str:
    """Sentences like 'Smith visited Paris .' with POS and chunk columns and DOCSTART lines."""
    g = torch.Generator().manual_seed(seed)
    lines = ["-DOCSTART- -X- -X- O", ""]
    kinds = {"Paris": "LOC", "Berlin": "LOC", "Smith": "PER", "Jones": "PER", "EU": "ORG", "UN": "ORG"}
    for i in range(n):
        if i % 7 == 6:
            lines += ["-DOCSTART- -X- -X- O", ""]
        length = int(torch.randint(2, 9, (1,), generator=g))
        prev = None
        for _ in range(length):
            w = WORDS[int(torch.randint(0, len(WORDS), (1,), generator=g))]
            kind = kinds.get(w)
            tag = "O" if kind is None else ("I-" if (iob1 and prev != kind) or prev == kind else "B-") + kind
            lines.append(f"{w} NN I-NP {tag}")
            prev = kind
        lines.append("")
    return "\n".join(lines) + "\n"


@pytest.fixture
def conll_dir(tmp_path):
    d = tmp_path / "conll2003"
    d.mkdir()
    (d / "train.txt").write_text(conll_text(60, 0, iob1=True))
    (d / "valid.txt").write_text(conll_text(20, 1))
    (d / "test.txt").write_text(conll_text(20, 2))
    return tmp_path


def conll_recipe(root, **training):
    return recipe.parse({"task": {"dataset": "conll2003", "data_dir": str(root), "download": False,
                                  "options": {"embed": 8, "hidden": 6, "proj": 4, "min_freq": 1}},
                         "training": {"epochs": 1, "batch_size": 4, "device": "cpu", **training},
                         "methods": ["sgd"]}, "t")


def test_reader_skips_docstart_and_normalises_iob1(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("-DOCSTART- -X- O\n\nEU NNP I-ORG\nrejects VBZ O\nGerman JJ I-MISC\ncall NN O\n\n"
                 "Peter NNP I-PER\nBlackburn NNP I-PER\n\nLondon I-LOC\nParis I-LOC\nB B-LOC\n")
    sents = read_conll(p)
    assert sents == [
        (["EU", "rejects", "German", "call"], ["B-ORG", "O", "B-MISC", "O"]),
        (["Peter", "Blackburn"], ["B-PER", "I-PER"]),
        (["London", "Paris", "B"], ["B-LOC", "I-LOC", "B-LOC"]),
    ]


@pytest.mark.parametrize("bad,msg", [("word\n", "expected 'TOKEN ... TAG'"), ("word NN X-PER\n", "expected an IOB tag")])
def test_malformed_line_names_file_and_line(tmp_path, bad, msg):
    p = tmp_path / "bad.txt"
    p.write_text("EU NNP B-ORG\n\n" + bad)
    with pytest.raises(DatasetMissing, match=f"{p}:3: {msg}"):
        read_conll(p)


def test_entity_f1_on_hand_made_cases():
    assert entities(["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-ORG"]) == {
        ("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 5), ("ORG", 5, 6)}
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "O"]]  # PER span cut short: wrong; LOC, ORG right
    s = micro_f1(gold, pred)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert micro_f1(gold, gold)["f1"] == 1.0
    assert micro_f1([["O"]], [["B-PER"]])["f1"] == 0.0
    assert iob1_to_iob2(["I-PER", "I-PER", "I-LOC", "O", "I-LOC", "B-LOC"]) == ["B-PER", "I-PER", "B-LOC", "O", "B-LOC", "B-LOC"]


def test_splits_and_vocabulary(conll_dir):
    task = load_task(conll_recipe(conll_dir), torch.device("cpu"))
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 60, "val": 20, "test": 20}
    assert task.vocab.words[:2] == ["<pad>", "<unk>"] and "Paris" in task.vocab.words
    assert set(task.vocab.tags) <= {"O", "B-LOC", "I-LOC", "B-PER", "I-PER", "B-ORG", "I-ORG"}
    assert task.splits["val"] is not None and conll_recipe(conll_dir).training.eval_splits == ["val", "test"]


@pytest.mark.parametrize("unrolled", [False, True])
def test_padding_never_changes_outputs_loss_or_metrics(conll_dir, unrolled):
    task = load_task(conll_recipe(conll_dir), torch.device("cpu"))
    torch.manual_seed(0)
    model = LSTMTagger(len(task.vocab.words), len(task.vocab.tags), 8, 6, 4, unrolled=unrolled)
    data = task.splits["train"]
    short = int(torch.argmin(data.lengths))
    long_ = int(torch.argmax(data.lengths))
    n = int(data.lengths[short])
    alone = task._batch(data, torch.tensor([short]))
    padded = task._batch(data, torch.tensor([long_, short]))
    assert padded.inputs.shape[1] > n
    out_alone = task.forward(model, alone)
    out_padded = task.forward(model, padded)
    torch.testing.assert_close(out_padded[1, :n], out_alone[0, :n], rtol=1e-5, atol=1e-6)
    # the loss counts real tokens only: the padded batch's loss is the token-weighted mean of the two sentences
    other = task._batch(data, torch.tensor([long_]))
    m = int(data.lengths[long_])
    expected = (task.loss(out_alone, alone) * n + task.loss(task.forward(model, other), other) * m) / (n + m)
    torch.testing.assert_close(task.loss(out_padded, padded), expected, rtol=1e-5, atol=1e-6)


def test_unrolled_lstm_is_the_same_function_as_nn_lstm():
    torch.manual_seed(0)
    fused = LSTMTagger(30, 5, 8, 6, 4)
    unrolled = LSTMTagger(30, 5, 8, 6, 4, unrolled=True)
    unrolled.embedding.load_state_dict(fused.embedding.state_dict())
    unrolled.out.load_state_dict(fused.out.state_dict())
    unrolled.lstm.load_from_lstm(fused.lstm)
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in unrolled.parameters())
    tokens = torch.tensor([[3, 4, 5, 6, 7], [8, 9, 0, 0, 0]])
    x, mask = unrolled.embedding(tokens), tokens != 0
    expected = fused(tokens)
    torch.testing.assert_close(unrolled.out(unrolled.lstm.loop(x, mask)), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(unrolled.out(unrolled.lstm.fused(x, mask)), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(unrolled(tokens), expected, rtol=1e-5, atol=1e-6)  # unobserved: the fused kernel


def test_the_unrolled_lstms_loop_and_its_fused_kernel_give_the_same_gradients(conll_dir):
    task = load_task(conll_recipe(conll_dir), torch.device("cpu"))
    torch.manual_seed(0)
    model = LSTMTagger(len(task.vocab.words), len(task.vocab.tags), 8, 6, 4, unrolled=True)
    batch = next(task.train_batches(16, torch.Generator().manual_seed(0)))
    assert not bool(batch.mask.all())  # padded rows: the state must be held through padding by both paths
    grads = {}
    for path in ("loop", "fused"):
        model.zero_grad()
        h = getattr(model.lstm, path)(model.embedding(batch.inputs), batch.mask)
        task.loss(model.out(h), batch).backward()
        grads[path] = [p.grad.clone() for p in model.parameters()]
    for g_loop, g_fused in zip(grads["loop"], grads["fused"]):
        torch.testing.assert_close(g_fused, g_loop, rtol=1e-4, atol=1e-6)


def test_kfac_lstm_factors_treat_time_steps_as_independent_samples(conll_dir):
    """hh's factors from an explicit loop over sentences and time steps, real tokens only."""
    from curvbench.methods.kfac import KFAC, recurrent_blocks

    task = load_task(conll_recipe(conll_dir), torch.device("cpu"))
    torch.manual_seed(1)
    model = LSTMTagger(len(task.vocab.words), len(task.vocab.tags), 8, 6, 4, unrolled=True).double()
    opt = KFAC(model, task.fisher_loss, momentum=0, factor_every=1, inverse_every=1, fisher="empirical",
               extra_blocks=recurrent_blocks(model.recurrent_layers()))
    b = task._batch(task.splits["train"], torch.arange(5))
    # explicit: one sentence at a time (no padding at all), the forward direction's hh layer
    d = model.lstm.directions[0]
    A, G, ids_all, n_tokens = torch.zeros(5, 5, dtype=torch.float64), torch.zeros(24, 24, dtype=torch.float64), [], 0
    for i in range(5):
        L = int(b.mask[i].sum())
        tokens = b.inputs[i : i + 1, :L]
        x = model.embedding(tokens)
        pre = d.ih(x)
        r = torch.zeros(1, 4, dtype=torch.float64)
        c = torch.zeros(1, 6, dtype=torch.float64)
        zs, rs, outs = [], [], []
        for t in range(L):
            z = d.hh(r)
            zs.append(z)
            rs.append(r.detach())
            gi, gf, gg, go = (pre[:, t] + z).chunk(4, dim=1)
            c = torch.sigmoid(gf) * c + torch.sigmoid(gi) * torch.tanh(gg)
            r = d.hr(torch.sigmoid(go) * torch.tanh(c))
            outs.append(r)
        fwd = torch.stack(outs, 1)
        bwd = model.lstm.directions[1](x, torch.ones(1, L, dtype=torch.bool))
        logits = model.out(torch.cat([fwd, bwd], -1))
        loss = F.cross_entropy(logits[0], b.targets[i, :L], reduction="sum")
        grads = torch.autograd.grad(loss, zs)
        for rr, gz in zip(rs, grads):
            a = torch.cat([rr[0], torch.ones(1, dtype=torch.float64)])
            A += torch.outer(a, a)
            G += torch.outer(gz[0], gz[0])
        n_tokens += L
        ids_all.append(tokens[0])
    opt.step(engine.make_closure(model, task, opt, b, list(model.parameters()), 0.0))  # factors, then the update
    blocks = {blk.name: blk for blk in opt.blocks}
    assert blocks["embedding"].kind == "embedding-diagonal"
    assert blocks["lstm.fwd.hh"].kind == blocks["lstm.bwd.hr"].kind == "linear-per-time-step"
    torch.testing.assert_close(blocks["lstm.fwd.hh"].A, A / n_tokens)
    torch.testing.assert_close(blocks["lstm.fwd.hh"].G, G / n_tokens)
    counts = torch.bincount(torch.cat(ids_all), minlength=len(task.vocab.words)).double() / n_tokens
    torch.testing.assert_close(blocks["embedding"].A, counts)


def test_kfac_updates_are_unchanged_by_the_fused_kernel_on_steps_without_factors(conll_dir):
    """K-FAC with the fused kernel between factor steps against K-FAC with the loop on every step: the same
    parameters after each of 8 steps (factors every 3 steps, inverses every 6, momentum on)."""
    from curvbench.methods.kfac import KFAC, recurrent_blocks

    task = load_task(conll_recipe(conll_dir), torch.device("cpu"))
    models, opts = [], []
    for always_loop in (False, True):
        torch.manual_seed(2)
        model = LSTMTagger(len(task.vocab.words), len(task.vocab.tags), 8, 6, 4, unrolled=True).double()
        calls = []
        for path in ("loop", "fused"):  # count which path each forward takes
            inner = getattr(model.lstm, path)
            setattr(model.lstm, path, lambda x, m, inner=inner, path=path, calls=calls: calls.append(path) or inner(x, m))
        if always_loop:
            model.lstm.fused = model.lstm.loop
        models.append((model, calls))
        opts.append(KFAC(model, task.fisher_loss, lr=0.05, momentum=0.5, factor_every=3, inverse_every=6,
                         extra_blocks=recurrent_blocks(model.recurrent_layers())))
    batches = list(task.train_batches(8, torch.Generator().manual_seed(0)))[:8]
    for step, b in enumerate(batches):
        for (model, _), opt in zip(models, opts):
            opt.step(engine.make_closure(model, task, opt, b, list(model.parameters()), 1e-4))
        for p_fast, p_loop in zip(models[0][0].parameters(), models[1][0].parameters()):
            torch.testing.assert_close(p_fast, p_loop, rtol=1e-9, atol=1e-11, msg=f"step {step}")
    assert models[0][1] == ["loop", "fused", "fused"] * 2 + ["loop", "fused"]  # the factor steps 0, 3, 6 loop
    assert models[1][1].count("loop") == 8


@pytest.mark.parametrize("method", ["sgd", "kfac", "shampoo"])
def test_engine_trains_the_tagger(conll_dir, method):
    r = conll_recipe(conll_dir, epochs=2)
    task = load_task(r, torch.device("cpu"))
    entry = MethodEntry(method, method, methods.get(method).defaults())
    result = engine.train(task, entry, r.training, 0, torch.device("cpu"))
    assert result.status == "FINISHED"
    m = result.epochs[-1].metrics
    assert {"val_accuracy", "val_f1", "test_accuracy", "test_f1", "test_loss"} <= m.keys()
    assert 0 <= m["test_f1"] <= 1 and m["test_accuracy"] > 0.3
    if method == "kfac":
        assert "lstm.bwd.hh:linear-per-time-step" in result.tags["kfac_layers"]
        assert "embedding:embedding-diagonal" in result.tags["kfac_layers"]
        assert result.tags["kfac_plain_gradient"] == "none"


def test_a_method_gets_the_model_it_needs_without_the_task_naming_it(conll_dir):
    """K-FAC says in its spec that it needs per-step layers; the task builds its unrolled LSTM for that need, not
    for a method's name; a task whose build_model takes no argument still builds its one model."""
    r = recipe.parse({"task": {"dataset": "conll2003", "data_dir": str(conll_dir)}, "methods": ["sgd"]}, "t")
    task = load_task(r, torch.device("cpu"))
    assert methods.get("kfac").model_needs == ("per_step_layers",) and methods.get("sgd").model_needs == ()
    assert engine.build_model(task, methods.get("kfac").model_needs).recurrent_layers()
    assert engine.build_model(task, methods.get("kfac-adaptive").model_needs).recurrent_layers()
    assert not engine.build_model(task, methods.get("sgd").model_needs).recurrent_layers()

    class OldTask:
        def build_model(self):
            return torch.nn.Linear(2, 2)

    assert isinstance(engine.build_model(OldTask(), ("per_step_layers",)), torch.nn.Linear)


@pytest.mark.slow
def test_kfac_through_a_compiled_tagger_gathers_the_eager_factors(conll_dir):
    """The unrolled LSTM's time steps reach K-FAC through the step observer: under torch.compile its saved outputs
    must stay links of autograd, as the layer hooks' (tests/test_kfac.py), or their G would be silently zero."""
    r = conll_recipe(conll_dir)
    task = load_task(r, torch.device("cpu"))
    entry = MethodEntry("kfac", "kfac", {**methods.get("kfac").defaults(), "inverse_every": 2})
    b = next(iter(task.train_batches(8, torch.Generator().manual_seed(0))))
    runs = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = engine.build_model(task, methods.get("kfac").model_needs)
        opt, l2 = engine.build_optimizer(task, model, entry, 10, 1, 0)
        forward = torch.compile(model, backend="aot_eager", dynamic=False) if compiled else model
        for _ in range(3):
            opt.step(engine.make_closure(forward, task, opt, b, list(model.parameters()), l2))
        runs.append((opt, model))
    (eager, eager_model), (comp, comp_model) = runs
    steps = [i for i, blk in enumerate(eager.blocks) if "per-time-step" in blk.kind]
    assert steps and all(eager.blocks[i].G.abs().sum() > 0 for i in steps)
    for be, bc in zip(eager.blocks, comp.blocks):
        torch.testing.assert_close(bc.A, be.A, rtol=1e-5, atol=1e-7, msg=be.name)
        torch.testing.assert_close(bc.G, be.G, rtol=1e-5, atol=1e-7, msg=be.name)
    for pe, pc in zip(eager_model.parameters(), comp_model.parameters()):
        torch.testing.assert_close(pc, pe, rtol=1e-5, atol=1e-7)
