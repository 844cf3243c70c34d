"""An ``nn.LSTM`` run over the real tokens of right-padded rows, on the CPU's fused LSTM kernel.

``pack_padded_sequence`` gives the right answer (each row stops at its last real token, and the
backward direction of a bidirectional layer starts there), but on a CPU a packed LSTM runs as a loop
of small per-time-step matrix products: the encoder of ``lstm`` seq2seq and the ``lstm`` classifier
spent most of their step there (harness.bench). The same function, with one fused (oneDNN) call per
layer and direction over the whole padded batch:

- forward direction: right padding comes after a row's real tokens, so the outputs at real positions
  are already the packed ones; the backward direction runs forward over each row's real tokens
  reversed (padding left in place), and its outputs are put back in order.
- final states: h_n is the output at a row's last real token. The fused kernel returns the cell
  state only after the last column, so c_n is recomputed from what the kernel produced: the gates
  of every step from x_t and h_(t-1) in one matrix product, then c_t = f_t c_(t-1) + i_t g_t, a
  cheap elementwise recurrence, read at each row's last real token.

Outputs, states and gradients equal the packed run's to float rounding (tests/test_lstm.py). The
recomputed gates are extra work that the model's FLOPs (archs/lstm.py ``pair_flops``) do not count,
as MFU conventions leave recomputation out; ``packed_run`` is the reference they are counted on
(``packed_reference()`` makes every run take it, for the FLOP counter and harness.bench).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


_PACKED_ONLY = [False]  # set by packed_reference()


def run_lstm(rnn: nn.LSTM, x: torch.Tensor, mask: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``rnn`` over the real tokens of right-padded rows, the fastest way on this device: packed
    sequences on a GPU (cuDNN runs them natively), the fused real-token run elsewhere."""
    fused = x.device.type != "cuda" and not _PACKED_ONLY[0]
    return (run_real_tokens if fused else packed_run)(rnn, x, mask)


@contextlib.contextmanager
def packed_reference():
    """Every ``run_lstm`` inside takes the packed path: the model's own FLOPs, with no recomputation."""
    before, _PACKED_ONLY[0] = _PACKED_ONLY[0], True
    try:
        yield
    finally:
        _PACKED_ONLY[0] = before


def packed_run(rnn: nn.LSTM, x: torch.Tensor, mask: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same as ``run_real_tokens`` through pack_padded_sequence: what cuDNN runs natively on a GPU."""
    lengths = mask.sum(1).clamp_min(1).cpu()
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, (h, c) = rnn(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, h, c


def run_real_tokens(rnn: nn.LSTM, x: torch.Tensor, mask: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(outputs (B, T, H x directions), zero at padding; h_n and c_n (layers x directions, B, H)),
    as ``rnn`` over each row's real tokens (``mask`` True there, right padding; a row with none is
    read as one token, as pack_padded_sequence requires). ``rnn`` must be batch_first."""
    lengths = mask.sum(1).clamp_min(1)
    steps = torch.arange(x.shape[1], device=x.device)[None]
    real = (steps < lengths[:, None])[..., None]
    reverse = torch.where(real[..., 0], lengths[:, None] - 1 - steps, steps)  # each row's real tokens reversed
    last = (lengths - 1)[:, None, None]
    inputs, hs, cs = x, [], []
    for layer in range(rnn.num_layers):
        if layer and rnn.dropout and rnn.training:  # nn.LSTM's dropout between layers
            inputs = F.dropout(inputs, rnn.dropout, training=True)
        outs = []
        for suffix in ("", "_reverse") if rnn.bidirectional else ("",):
            w = [getattr(rnn, f"{n}_l{layer}{suffix}", None) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            seq = _reorder(inputs, reverse) if suffix else inputs
            zeros = seq.new_zeros(1, seq.shape[0], w[1].shape[1])
            out = torch.lstm(seq, (zeros, zeros), [p for p in w if p is not None], rnn.bias, 1, 0.0,
                             rnn.training, False, True)[0] * real
            hs.append(out.gather(1, last.expand(-1, 1, out.shape[2])).transpose(0, 1))
            cs.append(_final_cell(seq, out, w, lengths)[None])
            outs.append(_reorder(out, reverse) if suffix else out)
        inputs = torch.cat(outs, -1)
    return inputs, torch.cat(hs), torch.cat(cs)


def _reorder(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[2]))


def _final_cell(seq: torch.Tensor, out: torch.Tensor, w: list, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's cell state after its last real token, from the layer's inputs and outputs."""
    w_ih, w_hh, b_ih, b_hh = w
    previous = F.pad(out, (0, 0, 1, 0))[:, :-1]  # h_(t-1), zero before the first step
    gates = F.linear(seq, w_ih, b_ih) + F.linear(previous, w_hh, b_hh)
    i, f, g, _ = gates.chunk(4, -1)  # nn.LSTM's gate order: input, forget, cell, output
    n = int(lengths.max())  # unbind: one backward for all steps (slicing per step would copy the whole tensor each)
    written = (torch.sigmoid(i[:, :n]) * torch.tanh(g[:, :n])).unbind(1)
    kept = torch.sigmoid(f[:, :n]).unbind(1)
    c = final = torch.zeros_like(written[0])
    for t in range(n):
        c = kept[t] * c + written[t]
        final = torch.where((lengths - 1 == t)[:, None], c, final)
    return final

