"""Sequence tagger: embedding -> LSTM with a projection layer (LSTMP, Sak et al. 2014) -> linear over the tags.

Two interchangeable implementations of the recurrent layer, with the same parameters and the same function:
nn.LSTM with proj_size (fast, fused), and an LSTM unrolled over time from Linear layers, used with K-FAC, which
needs each time step's layer inputs and pre-activations (time steps as independent samples, Martens, Ba &
Johnson 2018). The unrolled one runs its loop only on the steps where someone observes the time steps (K-FAC's
factor steps, one in `factor_every`); on the others it runs the fused LSTM kernel on the same parameters."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class LSTMTagger(nn.Module):
    output_layer = "out"

    def __init__(self, vocab: int, tags: int, embed: int = 100, hidden: int = 128, proj: int = 64,
                 bidirectional: bool = True, unrolled: bool = False, padding_idx: int = 0):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed, padding_idx=padding_idx)
        if unrolled:
            self.lstm = UnrolledLSTMP(embed, hidden, proj, bidirectional)
        else:
            self.lstm = nn.LSTM(embed, hidden, proj_size=proj, batch_first=True, bidirectional=bidirectional)
        self.out = nn.Linear(proj * (2 if bidirectional else 1), tags)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            mask = tokens != self.embedding.padding_idx
        x = self.embedding(tokens)
        if isinstance(self.lstm, nn.LSTM):
            lengths = mask.sum(1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            h, _ = self.lstm(packed)
            h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=tokens.shape[1])
        else:
            h = self.lstm(x, mask)
        return self.out(h)  # (batch, time, tags)

    def recurrent_layers(self) -> list:
        """The unrolled LSTM's layers by how they are applied (see RecurrentLayers); none for nn.LSTM."""
        return self.lstm.recurrent_layers("lstm") if isinstance(self.lstm, UnrolledLSTMP) else []


class _Direction(nn.Module):
    """One direction of an LSTMP layer: gates = ih(x_t) + hh(r_{t-1}); c, h as usual; r_t = hr(h_t)."""

    def __init__(self, inp: int, hidden: int, proj: int, reverse: bool):
        super().__init__()
        self.ih = nn.Linear(inp, 4 * hidden)  # all time steps at once
        self.hh = nn.Linear(proj, 4 * hidden)  # once per time step
        self.hr = nn.Linear(hidden, proj, bias=False)  # once per time step
        self.hidden, self.proj, self.reverse = hidden, proj, reverse
        self.step_observer = None  # see observe_steps

    def observe_steps(self, observer) -> None:
        """Report each time step's inputs and outputs of hh and hr to `observer` (an object with active() and
        save(layer, input, output, mask): an optimizer's statistics); the model knows nothing more of it."""
        self.step_observer = observer

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, steps, _ = x.shape
        pre = self.ih(x)  # (batch, time, 4H)
        r = x.new_zeros(batch, self.proj)
        c = x.new_zeros(batch, self.hidden)
        record = self.step_observer is not None and self.step_observer.active()
        outs = [None] * steps
        order = range(steps - 1, -1, -1) if self.reverse else range(steps)
        for t in order:
            m = mask[:, t : t + 1]
            z_hh = self.hh(r)
            i, f, g, o = (pre[:, t] + z_hh).chunk(4, dim=1)  # nn.LSTM's gate order
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
            r_new = self.hr(h_new)
            if record:  # each time step is one more sample of hh's and hr's inputs and outputs
                self.step_observer.save("hh", r, z_hh, mask[:, t])
                self.step_observer.save("hr", h_new, r_new, mask[:, t])
            c = torch.where(m, c_new, c)  # padding leaves the state as it was (matters for the reverse pass)
            r = torch.where(m, r_new, r)
            outs[t] = torch.where(m, r_new, torch.zeros_like(r_new))
        return torch.stack(outs, dim=1)


class UnrolledLSTMP(nn.Module):
    def __init__(self, inp: int, hidden: int, proj: int, bidirectional: bool = True):
        super().__init__()
        self.directions = nn.ModuleList(
            [_Direction(inp, hidden, proj, reverse=False)]
            + ([_Direction(inp, hidden, proj, reverse=True)] if bidirectional else [])
        )
        self.use_fused = True  # False: the loop on every step (forward-mode differentiation lacks the fused kernel)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not self.use_fused or any(d.step_observer is not None and d.step_observer.active()
                                     for d in self.directions):
            return self.loop(x, mask)
        return self.fused(x, mask)

    def loop(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Time step by time step, each step's layer inputs and outputs shown to the step observers."""
        return torch.cat([d(x, mask) for d in self.directions], dim=-1)

    def fused(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The same function through the fused LSTM kernel (what nn.LSTM runs), on the Linear layers' parameters.
        Padding only at the end of each row (the tagger's masks): packed sequences give what the loop gives,
        the state held through padding, zeros out."""
        from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

        batch, steps, _ = x.shape
        packed = pack_padded_sequence(x, mask.sum(1).cpu(), batch_first=True, enforce_sorted=False)
        first = self.directions[0]
        n = len(self.directions)
        h0 = x.new_zeros(n, batch, first.proj)
        c0 = x.new_zeros(n, batch, first.hidden)
        weights = [w for d in self.directions for w in (d.ih.weight, d.hh.weight, d.ih.bias, d.hh.bias, d.hr.weight)]
        out, _, _ = torch._VF.lstm(packed.data, packed.batch_sizes, (h0, c0), weights, True, 1, 0.0, self.training,
                                   n == 2)
        h, _ = pad_packed_sequence(PackedSequence(out, packed.batch_sizes, packed.sorted_indices,
                                                  packed.unsorted_indices), batch_first=True, total_length=steps)
        return h

    def load_from_lstm(self, lstm: nn.LSTM) -> None:
        """Copy an nn.LSTM(proj_size=...)'s weights (same function afterwards)."""
        with torch.no_grad():
            for k, d in enumerate(self.directions):
                sfx = "_l0" + ("_reverse" if k == 1 else "")
                d.ih.weight.copy_(getattr(lstm, "weight_ih" + sfx))
                d.ih.bias.copy_(getattr(lstm, "bias_ih" + sfx))
                d.hh.weight.copy_(getattr(lstm, "weight_hh" + sfx))
                d.hh.bias.copy_(getattr(lstm, "bias_hh" + sfx))
                d.hr.weight.copy_(getattr(lstm, "weight_hr" + sfx))

    def recurrent_layers(self, prefix: str) -> list["RecurrentLayers"]:
        return [RecurrentLayers(f"{prefix}.{'bwd' if d.reverse else 'fwd'}", d, {"ih": d.ih}, {"hh": d.hh, "hr": d.hr})
                for d in self.directions]


@dataclass
class RecurrentLayers:
    """The Linear layers of one direction by how they are applied: `whole` to every time step at once (inputs of
    shape (batch, time, features)), `per_step` once per time step inside the loop, reported to the direction's
    observer (observe_steps). What an optimizer that needs per-layer statistics (K-FAC) reads; no optimizer is named here."""

    name: str
    owner: nn.Module  # the direction: its observe_steps(observer) reports each step of the per-step layers
    whole: dict
    per_step: dict
