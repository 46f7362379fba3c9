"""K-FAC: Kronecker-factored approximate curvature (Martens & Grosse 2015; KFC for convolutions, Grosse &
Martens 2016). The Fisher is block-diagonal, one block per layer, each block F ~ A (x) G:

    A = E[a a^T]      a: the layer's input with a homogeneous 1 appended (the bias column)
    G = E[g g^T]      g: gradient of -log p(y|x) w.r.t. the layer's pre-activations, y sampled from the
                      model's own predictive distribution (true Fisher) or the labels (empirical Fisher)

For Conv2d, `conv_factors` chooses how the R = H_out * W_out positions that share the kernel enter (Eschenhagen
et al., NeurIPS 2023, name the two):

    expand (KFC, Grosse & Martens 2016; the default): unfolded patches at every position are samples of a;
            A = E_n[mean_r a_nr a_nr^T], G = E_n[sum_r g_nr g_nr^T]. Exact when the derivatives at different
            positions are uncorrelated; its A costs (C k^2)^2 * N * R per factor step.
    reduce: A = E_n[abar_n abar_n^T] with abar_n = mean_r a_nr, G = E_n[gsum_n gsum_n^T] with
            gsum_n = sum_r g_nr. Exact when the layer's output is summed over positions before the loss; the
            patch means come from strided sums of the padded input (no unfolding), so A costs (C k^2)^2 * N,
            R times less: 16-1024x on ResNet-18.
A sequence layer with a mask counts real time steps only (time steps as independent samples).

Every `factor_every` steps the forward pass keeps the layer inputs and one extra backward pass of the sampled
loss gives g; A and G are running averages with `factor_decay`. Every `inverse_every` steps the damped inverses
are rebuilt by Cholesky factorisations in float64 (during the first interval, after every factor update), with Tikhonov damping split between the factors (the pi-correction):

    (A + pi*sqrt(damping) I)^-1,  (G + sqrt(damping)/pi I)^-1,   pi = sqrt((tr A / dim A) / (tr G / dim G))

The update of a layer's weight matrix V = [W, b] is U = G_d^-1 V A_d^-1, scaled by the KL-clipping factor
nu = min(1, sqrt(kl_clip / (lr^2 * sum_layers <U, V>))), then applied with SGD momentum.

Defaults: lr 0.001 with momentum 0.9, an effective step lr/(1 - momentum) of 0.01. Measured on LeNet-5, batch
100, constant lr: full MNIST, test accuracy after one epoch 0.9901 (lr 0.001, momentum 0.9), 0.9878 (lr 0.01,
momentum 0, the thesis's rule), 0.9582 (lr 0.01, momentum 0.9: a step of 0.1, ten times the thesis's); mnist-mini,
two epochs, seeds 0 and 1: 0.9775 and 0.9775, against 0.9745 and 0.9750 for lr 0.01 without momentum. Parameters of layers
K-FAC does not cover get the plain (momentum) gradient step; the run's tags list them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from curvbench.methods.base import COUPLED, BuildContext, MethodConfig, MethodSpec, hp, lr_field, weight_decay_field
from curvbench.schema import Choice, Number


def _full(x: torch.Tensor) -> torch.Tensor:
    """Statistics of bf16/fp16 activations (autocast) are accumulated in float32."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _damped_inverse(factor: torch.Tensor, damping: float) -> torch.Tensor:
    """(factor + damping*I)^-1 by a Cholesky factorisation in float64: the matrix is positive definite (a PSD
    factor plus damping > 0), and Cholesky costs a fraction of an eigendecomposition (4608 x 4608, ResNet-18's
    largest factor, on 2 CPU cores: 2 s against 10 s). A factor whose rounding makes it indefinite falls back
    to the eigendecomposition, negative eigenvalues clamped to 0."""
    work = factor.double()
    work = (work + work.T) / 2
    work.diagonal().add_(damping)
    chol, info = torch.linalg.cholesky_ex(work)
    if int(info) == 0:
        return torch.cholesky_inverse(chol).to(factor.dtype)
    evals, evecs = torch.linalg.eigh(factor.double())
    return ((evecs / (evals.clamp(min=0) + damping)) @ evecs.T).to(factor.dtype)


class LayerBlock:
    """The Kronecker factors of one layer, built from its saved input and the gradient at its output."""

    kind = "layer"

    def __init__(self, name: str, module: nn.Module):
        self.name, self.module = name, module
        self.A: torch.Tensor | None = None
        self.G: torch.Tensor | None = None
        self.A_inv: torch.Tensor | None = None
        self.G_inv: torch.Tensor | None = None
        self.inputs: list[torch.Tensor] = []  # one entry per call of the layer in this forward pass
        self.outputs: list[torch.Tensor] = []
        self.masks: list[torch.Tensor | None] = []  # which rows of each call are real samples (None: all)

    def save(self, x: torch.Tensor, out: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        self.inputs.append(x.detach())
        self.outputs.append(out)
        self.masks.append(mask)

    def clear(self) -> None:
        self.inputs, self.outputs, self.masks = [], [], []

    @property
    def params(self) -> list[nn.Parameter]:
        return [p for p in (self.module.weight, getattr(self.module, "bias", None)) if p is not None]

    # --- statistics
    def input_rows(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def grad_rows(self, g: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def batch_factors(self, grads: list[torch.Tensor], n_samples: int, batch_mask: torch.Tensor | None):
        masks = [m if m is not None else batch_mask for m in self.masks]
        a = _full(torch.cat([self.input_rows(x, m) for x, m in zip(self.inputs, masks)]))
        g = _full(torch.cat([self.grad_rows(gr, m) for gr, m in zip(grads, masks)]))
        rows = a.shape[0]
        if self.module.bias is None:
            A = a.T @ a / rows
        else:  # [a, 1]^T [a, 1] without materialising the column of ones
            d = a.shape[1]
            A = a.new_empty(d + 1, d + 1)
            torch.matmul(a.T, a, out=A[:d, :d])
            A[:d, d] = A[d, :d] = a.sum(0)
            A[d, d] = rows
            A /= rows
        return A, g.T @ g / n_samples

    def update_factors(self, grads: list[torch.Tensor], n_samples: int, mask, decay: float) -> None:
        A, G = self.batch_factors(grads, n_samples, mask)
        if self.A is None:
            self.A, self.G = A, G
        else:
            self.A.mul_(decay).add_(A, alpha=1 - decay)
            self.G.mul_(decay).add_(G, alpha=1 - decay)

    def update_inverses(self, damping: float) -> None:
        dim_a, dim_g = self.A.shape[0], self.G.shape[0]
        tr_a = torch.trace(self.A).clamp(min=1e-12) / dim_a
        tr_g = torch.trace(self.G).clamp(min=1e-12) / dim_g
        pi = math.sqrt(float(tr_a / tr_g))
        root = math.sqrt(damping)
        self.A_inv = _damped_inverse(self.A, pi * root)
        self.G_inv = _damped_inverse(self.G, root / pi)

    def precondition(self, v: torch.Tensor) -> torch.Tensor:
        return self.G_inv @ v @ self.A_inv

    # --- gradients as one matrix [W, b]
    def grad_matrix(self) -> torch.Tensor:
        w = self.module.weight.grad.reshape(self.module.weight.shape[0], -1)
        if self.module.bias is not None:
            return torch.cat([w, self.module.bias.grad.unsqueeze(1)], dim=1)
        return w

    def set_grad(self, update: torch.Tensor) -> None:
        w = self.module.weight
        if self.module.bias is not None:
            w.grad.copy_(update[:, :-1].reshape(w.shape))
            self.module.bias.grad.copy_(update[:, -1])
        else:
            w.grad.copy_(update.reshape(w.shape))


class LinearBlock(LayerBlock):
    kind = "linear"

    def input_rows(self, x, mask):
        if mask is not None and x.dim() == mask.dim() + 1:  # (batch[, time], features): real samples only
            return x[mask]
        return x.reshape(-1, x.shape[-1])

    def grad_rows(self, g, mask):
        return self.input_rows(g, mask)


class Conv2dBlock(LayerBlock):
    kind = "conv2d"

    def input_rows(self, x, mask):
        m = self.module
        patches = F.unfold(x, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])  # (batch*positions, C*kh*kw)

    def grad_rows(self, g, mask):
        return g.permute(0, 2, 3, 1).reshape(-1, g.shape[1])  # (batch*positions, C_out)


class Conv2dReduceBlock(Conv2dBlock):
    """K-FAC-reduce: one row per sample, its patches averaged and its output gradients summed over positions."""

    kind = "conv2d-reduce"

    def input_rows(self, x, mask):
        m = self.module
        (kh, kw), (sh, sw), (dh, dw), (ph, pw) = m.kernel_size, m.stride, m.dilation, m.padding
        padded = F.pad(x, (pw, pw, ph, ph))
        h_out = (padded.shape[2] - dh * (kh - 1) - 1) // sh + 1
        w_out = (padded.shape[3] - dw * (kw - 1) - 1) // sw + 1
        # the kernel offset (i, j) sees the strided grid of the padded input that starts at (i*dh, j*dw)
        sums = torch.stack([padded[:, :, i * dh: i * dh + sh * (h_out - 1) + 1: sh,
                                   j * dw: j * dw + sw * (w_out - 1) + 1: sw].sum((2, 3))
                            for i in range(kh) for j in range(kw)], dim=2)  # (batch, C, kh*kw)
        return sums.reshape(x.shape[0], -1) / (h_out * w_out)  # unfold's column order: channel, then offset

    def grad_rows(self, g, mask):
        return g.sum((2, 3))  # (batch, C_out)


class StepLinearBlock(LinearBlock):
    """A Linear layer applied once per time step of a recurrent network, which saves each step itself
    (`save(input, output, step_mask)`): every real time step is one more sample of A and G."""

    kind = "linear-per-time-step"
    fed_by_model = True
    owner = None  # the KFAC optimizer, set when it takes the block

    def capturing(self) -> bool:
        return self.owner is not None and self.owner.capturing and torch.is_grad_enabled()


class EmbeddingBlock(LayerBlock):
    """An embedding's input is a one-hot token: A = E[a a^T] is diagonal, the tokens' frequencies.

    The weight is (vocabulary, features), input side first, so the update is A_d^-1 V G_d^-1."""

    kind = "embedding-diagonal"

    def batch_factors(self, grads, n_samples, batch_mask):
        masks = [m if m is not None else batch_mask for m in self.masks]
        ids = torch.cat([x[m] if m is not None else x.reshape(-1) for x, m in zip(self.inputs, masks)])
        g = _full(torch.cat([self.grad_rows(gr, m) for gr, m in zip(grads, masks)]))
        counts = torch.bincount(ids, minlength=self.module.num_embeddings).to(g.dtype)
        return counts / ids.numel(), g.T @ g / n_samples

    def input_rows(self, x, mask):
        return x[mask] if mask is not None else x.reshape(-1)

    def grad_rows(self, g, mask):
        return g[mask] if mask is not None else g.reshape(-1, g.shape[-1])

    def update_inverses(self, damping: float) -> None:
        dim_a, dim_g = self.A.shape[0], self.G.shape[0]
        pi = math.sqrt(float((self.A.sum() / dim_a) / (torch.trace(self.G).clamp(min=1e-12) / dim_g)))
        self.A_inv = 1.0 / (self.A + pi * math.sqrt(damping))
        self.G_inv = _damped_inverse(self.G, math.sqrt(damping) / pi)

    def precondition(self, v):
        return (self.A_inv[:, None] * v) @ self.G_inv

    def grad_matrix(self):
        return self.module.weight.grad

    def set_grad(self, update):
        self.module.weight.grad.copy_(update)


def make_block(name: str, module: nn.Module, conv_factors: str = "expand") -> LayerBlock | None:
    if isinstance(module, nn.Linear):
        return LinearBlock(name, module)
    if isinstance(module, nn.Embedding) and module.max_norm is None and not module.sparse:
        return EmbeddingBlock(name, module)
    if isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros" and isinstance(
        module.padding, tuple
    ):
        return (Conv2dReduceBlock if conv_factors == "reduce" else Conv2dBlock)(name, module)
    return None


CONV_FACTORS = ("expand", "reduce")
CONV_FACTORS_HELP = ("Conv2d factors: expand (KFC: every position a sample) or reduce (K-FAC-reduce: patches averaged, "
                     "gradients summed over positions; R times cheaper A)")


@dataclass(frozen=True)
class KFACConfig(MethodConfig):
    lr: float = lr_field(0.001, "learning rate alpha; with momentum mu the effective step is alpha/(1-mu): 0.001 with "
                                "0.9 is 0.01, the step that works on LeNet-5 (the thesis's alpha = 0.01 is for momentum 0)")
    weight_decay: float = weight_decay_field(0.0, "L2 lambda: loss + lambda*||theta||^2 (preconditioned with the gradient)")
    momentum: float = hp(0.9, Number(ge=0, lt=1),
                         "momentum on the preconditioned gradient (the thesis's K-FAC has none: its recipes set 0)")
    damping: float = hp(1e-2, Number(gt=0), "Tikhonov damping gamma, split between A and G by pi")
    factor_decay: float = hp(0.95, Number(ge=0, lt=1), "running-average decay of A and G")
    kl_clip: float = hp(1e-3, Number(ge=0), "KL-clipping bound on the update (0 = off)")
    factor_every: int = hp(10, Number(integer=True, ge=1), "steps between factor updates")
    inverse_every: int = hp(100, Number(integer=True, ge=1), "steps between updates of the damped factors' inverses (Cholesky)")
    fisher: str = hp("true", Choice(("true", "empirical")), "targets for G: sampled from the model, or the labels")
    conv_factors: str = hp("expand", Choice(CONV_FACTORS), CONV_FACTORS_HELP)


class KFAC(torch.optim.Optimizer):
    def __init__(
        self,
        model: nn.Module,
        fisher_loss,
        lr: float = KFACConfig.lr,
        momentum: float = KFACConfig.momentum,
        damping: float = KFACConfig.damping,
        factor_decay: float = KFACConfig.factor_decay,
        kl_clip: float | None = KFACConfig.kl_clip,
        factor_every: int = KFACConfig.factor_every,
        inverse_every: int = KFACConfig.inverse_every,
        fisher: str = KFACConfig.fisher,
        seed: int = 0,
        extra_blocks: list | None = None,
        conv_factors: str = KFACConfig.conv_factors,
    ):
        KFACConfig.checked(lr=lr, momentum=momentum, damping=damping, factor_decay=factor_decay, kl_clip=kl_clip or 0.0,
                           factor_every=factor_every, inverse_every=inverse_every, fisher=fisher,
                           conv_factors=conv_factors)
        super().__init__([p for p in model.parameters() if p.requires_grad], dict(lr=lr, momentum=momentum))
        self.model, self.fisher_loss = model, fisher_loss
        self.damping, self.factor_decay, self.kl_clip = damping, factor_decay, kl_clip
        self.factor_every, self.inverse_every = factor_every, inverse_every
        self.empirical = fisher == "empirical"
        self.generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed + 7919)
        self.blocks: list[LayerBlock] = list(extra_blocks or [])
        taken = {id(p) for b in self.blocks for p in b.params}
        for name, module in model.named_modules():
            if any(id(p) in taken for p in module.parameters(recurse=False)):
                continue
            block = make_block(name, module, conv_factors)
            if block is not None and all(p.requires_grad for p in block.params):
                self.blocks.append(block)
        for block in self.blocks:
            if getattr(block, "fed_by_model", False):  # the model saves what the block needs (the LSTM's steps)
                block.owner = self
                continue
            block.module.register_forward_hook(self._saver(block))
        covered = {id(p) for b in self.blocks for p in b.params}
        names = {id(p): n for n, p in model.named_parameters()}
        self.uncovered = [names[id(p)] for g in self.param_groups for p in g["params"] if id(p) not in covered]
        self.capturing = False
        self.steps = 0
        self.tags = {
            "kfac_layers": ", ".join(f"{b.name}:{b.kind}" for b in self.blocks) or "none",
            "kfac_plain_gradient": ", ".join(self.uncovered) or "none",
        }

    def _saver(self, block: LayerBlock):
        def hook(module, inputs, output):
            if self.capturing and torch.is_grad_enabled():
                block.save(inputs[0], output)

        # Run eagerly even inside a torch.compile'd model: traced, the saved output would be an extra output of the
        # compiled graph that the loss's backward never passes through, so its gradient (G's samples) would be None.
        # Eager, the graph breaks at the layer and its output is a real link between two compiled graphs.
        return torch.compiler.disable(hook)

    # ---- called by the engine after the forward pass, before the loss's backward
    def on_forward(self, outputs: torch.Tensor, batch) -> None:
        if not self.capturing:
            return
        if self.blocks and not any(b.outputs for b in self.blocks):
            raise RuntimeError(
                f"K-FAC: no layer it preconditions ({self.blocks[0].name}, ...) saw this forward pass, so its factors "
                "would never be gathered; its layer hooks did not run (a torch.compile'd graph traced without them, "
                "or a forward that does not call the model's own layers)")
        live = [b for b in self.blocks if b.outputs and all(o.requires_grad for o in b.outputs)]
        if live:
            loss_sum, n = self.fisher_loss(outputs, batch, self.generator, self.empirical)
            flat = [o for b in live for o in b.outputs]
            grads = torch.autograd.grad(loss_sum, flat, retain_graph=True, allow_unused=True)
            with torch.no_grad():
                i = 0
                for block in live:
                    gs = grads[i : i + len(block.outputs)]
                    i += len(block.outputs)
                    gs = [torch.zeros_like(o) if g is None else g for o, g in zip(block.outputs, gs)]
                    block.update_factors(list(gs), n, batch.mask, self.factor_decay)
        for b in self.blocks:
            b.clear()

    def update_inverses(self) -> None:
        for b in self.blocks:
            # non-finite factors (a run going to NaN) keep the last inverses: the engine's loss check ends the run
            if b.A is not None and bool(torch.isfinite(b.A).all() and torch.isfinite(b.G).all()):
                b.update_inverses(self.damping)

    @torch.no_grad()
    def precondition(self, lr: float) -> None:
        """Replace each covered layer's gradient by its KL-clipped Kronecker-factored natural gradient."""
        pairs = []
        for b in self.blocks:
            if b.A_inv is None or any(p.grad is None for p in b.params):
                continue
            v = b.grad_matrix()
            pairs.append((b, v, b.precondition(v)))
        if not pairs:
            return
        scale = None
        if self.kl_clip:
            vg = torch.stack([(u * v).sum() for _, v, u in pairs]).sum() * lr**2
            scale = torch.clamp(torch.sqrt(self.kl_clip / vg.clamp(min=1e-30)), max=1.0)  # no host sync
        for b, _, u in pairs:
            b.set_grad(u * scale if scale is not None else u)

    def gradients_and_factors(self, closure):
        """The closure's forward and backward pass, gathering factors on factor steps; inverses when due."""
        self.capturing = self.steps % self.factor_every == 0
        try:
            with torch.enable_grad():
                loss = closure()
        finally:
            self.capturing = False
        # Inverses are due every `inverse_every` steps; during the first interval they follow every factor
        # update, so the early steps are not preconditioned by the statistics of one batch at initialisation.
        warming_up = self.steps < self.inverse_every and self.steps % self.factor_every == 0
        if self.steps % self.inverse_every == 0 or warming_up:
            self.update_inverses()
        return loss

    def step(self, closure):
        loss = self.gradients_and_factors(closure)
        group = self.param_groups[0]
        self.precondition(group["lr"])
        with torch.no_grad():
            for group in self.param_groups:
                params = [p for p in group["params"] if p.grad is not None]
                grads = [p.grad for p in params]
                if group["momentum"]:
                    fresh = [p for p in params if "momentum_buffer" not in self.state[p]]
                    for p in fresh:
                        self.state[p]["momentum_buffer"] = torch.zeros_like(p)
                    bufs = [self.state[p]["momentum_buffer"] for p in params]
                    torch._foreach_mul_(bufs, group["momentum"])
                    torch._foreach_add_(bufs, grads)
                    grads = bufs
                torch._foreach_add_(params, grads, alpha=-group["lr"])
        self.steps += 1
        return loss


class _StepObserver:
    """Attached to a recurrent direction: forwards each time step of its per-step layers to their blocks."""

    def __init__(self, blocks: dict[str, "StepLinearBlock"]):
        self.blocks = blocks

    def active(self) -> bool:
        return any(b.capturing() for b in self.blocks.values())

    @torch.compiler.disable  # as KFAC._saver's hook: a compiled model's time steps must stay links of autograd
    def save(self, layer: str, x: torch.Tensor, out: torch.Tensor, mask: torch.Tensor | None) -> None:
        self.blocks[layer].save(x, out, mask)


def recurrent_blocks(layers) -> list[LayerBlock]:
    """Blocks for an unrolled recurrent network (its `recurrent_layers()`): a Linear block for each layer applied
    to all time steps at once, a per-time-step block for each layer inside the loop, fed by a step observer."""
    blocks: list[LayerBlock] = []
    for group in layers:
        whole = [LinearBlock(f"{group.name}.{k}", m) for k, m in group.whole.items()]
        steps = {k: StepLinearBlock(f"{group.name}.{k}", m) for k, m in group.per_step.items()}
        group.owner.observe_steps(_StepObserver(steps))
        blocks += whole + list(steps.values())
    return blocks


def model_blocks(model) -> list[LayerBlock]:
    """Blocks for the layers K-FAC reaches only through the model's own loop (the LSTM's), none for others."""
    return recurrent_blocks(model.recurrent_layers()) if hasattr(model, "recurrent_layers") else []


def build(ctx: BuildContext, cfg: KFACConfig):
    return KFAC(
        ctx.model,
        ctx.task.fisher_loss,
        lr=cfg.lr,
        momentum=cfg.momentum,
        damping=cfg.damping,
        factor_decay=cfg.factor_decay,
        kl_clip=cfg.kl_clip or None,
        factor_every=cfg.factor_every,
        inverse_every=cfg.inverse_every,
        fisher=cfg.fisher,
        seed=ctx.seed,
        extra_blocks=model_blocks(ctx.model),
        conv_factors=cfg.conv_factors,
    )


SPEC = MethodSpec(
    name="kfac",
    description="K-FAC: Kronecker-factored natural gradient for Linear, Conv2d and Embedding layers and an LSTM's "
                "layers per time step (Martens & Grosse 2015)",
    regularisation=COUPLED,
    hparams=KFACConfig.hparams(),
    build=build,
    needs=("fisher_loss",),
    model_needs=("per_step_layers",),  # an LSTM's per-step layers get their own factors (recurrent_blocks)
    config=KFACConfig,
)
