"""The thesis recipes run each method with the update rule the thesis writes, so its tables mean what they meant."""

import pytest

from curvbench.recipe import loading as recipe

THESIS = ("mnist", "fashion-mnist", "cifar", "cifar-cosine", "conll")


@pytest.mark.parametrize("name", THESIS)
def test_kfac_runs_without_momentum_and_sam_keeps_l2_outside_the_maximisation(name):
    r = recipe.load(name)
    kfac = r.entry("kfac").hparams
    assert kfac["momentum"] == 0  # the thesis's K-FAC: alpha is the step
    assert r.entry("sam").hparams["l2_in_perturbation"] is False  # eq. (22)
    assert r.entry("lion").hparams["beta1"] == 0.9 and r.entry("lion").hparams["beta2"] == 0.99  # Chen et al.'s names


@pytest.mark.parametrize("name", [n for n in THESIS if n != "conll"])
def test_shampoo_is_the_papers_update(name):
    sh = recipe.load(name).entry("shampoo").hparams
    assert (sh["grafting"], sh["precondition_frequency"], sh["start_preconditioning_step"]) == ("none", 1, 1)


def test_default_kfac_takes_an_effective_step_of_about_0_01():
    from curvbench.methods import get

    d = get("kfac").defaults()
    assert d["lr"] / (1 - d["momentum"]) == pytest.approx(0.01)
