"""Muon (torch.optim.Muon) for hidden matrices, conv kernels flattened to 2-D; AdamW for everything else.

AdamW takes the biases, embeddings, normalisation weights and the output layer (the last Linear of the model,
or the module a model names in `output_layer`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from curvbench.methods.base import DECOUPLED, BuildContext, MethodConfig, MethodSpec, hp, lr_field, weight_decay_field
from curvbench.methods.composite import Composite
from curvbench.schema import Boolean, Number


def split_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(hidden weights for Muon, the rest for AdamW)."""
    out_name = getattr(model, "output_layer", None)
    output = getattr(model, out_name) if out_name else None
    if output is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        output = linears[-1] if linears else None
    skip = {id(p) for p in output.parameters()} if output is not None else set()
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            skip |= {id(p) for p in m.parameters()}
    hidden, rest = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (hidden if p.ndim >= 2 and id(p) not in skip else rest).append(p)
    return hidden, rest


@dataclass(frozen=True)
class MuonConfig(MethodConfig):
    lr: float = lr_field(0.02, "Muon learning rate (hidden weights)")
    adamw_lr: float = hp(1e-3, Number(gt=0), "AdamW learning rate (biases, embeddings, output layer)")
    adamw_beta1: float = hp(0.9, Number(ge=0, lt=1), "AdamW beta1")
    adamw_beta2: float = hp(0.95, Number(ge=0, lt=1), "AdamW beta2")
    weight_decay: float = weight_decay_field(0.0, "decoupled weight decay, both parts")
    momentum: float = hp(0.95, Number(ge=0, lt=1), "Muon momentum")
    nesterov: bool = hp(True, Boolean(), "Nesterov momentum in Muon")
    ns_steps: int = hp(5, Number(integer=True, ge=1), "Newton-Schulz iterations")


def build(ctx: BuildContext, cfg: MuonConfig):
    hidden, rest = split_params(ctx.model)
    # Muon needs 2-D parameters: each conv kernel gets a 2-D stand-in with storage of its own (a view would
    # fail on channels_last kernels). Before every step the stand-in takes the kernel's value and gradient;
    # after it the kernel takes the stand-in's new value. The kernels' own gradients are cleared with the rest.
    pairs = [(p, nn.Parameter(p.detach().reshape(p.shape[0], -1).clone())) for p in hidden if p.ndim > 2]
    stand_in = {id(p): q for p, q in pairs}
    proxies = [stand_in.get(id(p), p) for p in hidden]

    @torch.no_grad()
    def load_kernels():
        for p, q in pairs:
            q.copy_(p.reshape(q.shape))
            q.grad = None if p.grad is None else p.grad.reshape(q.shape)

    @torch.no_grad()
    def store_kernels():
        for p, q in pairs:
            p.copy_(q.view(p.shape))

    muon = torch.optim.Muon(
        proxies,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        ns_steps=cfg.ns_steps,
    ) if proxies else None
    adamw = torch.optim.AdamW(
        rest, lr=cfg.adamw_lr, betas=(cfg.adamw_beta1, cfg.adamw_beta2), weight_decay=cfg.weight_decay,
        foreach=True,
    ) if rest else None
    opt = Composite([muon, adamw], before_step=load_kernels, after_step=store_kernels,
                    also_zero=[p for p, _ in pairs])
    opt.tags = {"muon_params": len(hidden), "adamw_params": len(rest)}
    return opt


SPEC = MethodSpec(
    name="muon",
    description="Muon (orthogonalised momentum, torch.optim.Muon) for hidden weights, AdamW for the rest",
    regularisation=DECOUPLED,
    hparams=MuonConfig.hparams(),
    build=build,
    config=MuonConfig,
)
