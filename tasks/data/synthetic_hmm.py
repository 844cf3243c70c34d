"""A builtin LM source whose Bayes-optimal score is known exactly: text sampled from a random HMM.

Documents are i.i.d. samples of a random hidden Markov model over a small alphabet: the first state
is drawn from the chain's stationary distribution, each state emits one character, and after every
character the document ends with probability 1 / mean_doc_bytes. The LM task joins documents with a
blank line ("\\n\\n"), so the stream a model reads is itself exactly an HMM sample: two extra states
emit the two newlines and lead back to a document start.

``StreamOracle`` is that true model, used as a predictor: given the same window of context a model
had, its forward-algorithm probabilities are the best any predictor can achieve in expectation, so
its score on the test split (computed exactly, float64) is the Bayes-optimal line for the report.
Generic HMM code is short and exact here; hmmlearn would add a dependency for two matrix products.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from archbench.errors import UserError

SEPARATOR = "\n\n"  # what the LM task puts between documents (tasks/lm.py DOC_SEPARATOR)


@dataclass(frozen=True)
class HMM:
    transition: np.ndarray  # (S, S), rows sum to 1
    emission: np.ndarray  # (S, A) over ``alphabet``
    alphabet: str
    end_prob: float  # a document ends after each character with this probability

    @property
    def start(self) -> np.ndarray:
        return stationary(self.transition)


def stationary(transition: np.ndarray) -> np.ndarray:
    """The distribution p with p T = p (the eigenvector of T^T for eigenvalue 1)."""
    vals, vecs = np.linalg.eig(transition.T)
    p = np.real(vecs[:, np.argmin(np.abs(vals - 1.0))])
    p = np.abs(p) / np.abs(p).sum()
    return p


def random_hmm(cfg: Mapping[str, Any]) -> HMM:
    """Dirichlet(concentration) rows: small concentrations give peaked, learnable structure."""
    states, alphabet = int(cfg["states"]), str(cfg["alphabet"])
    conc, mean_len = float(cfg["concentration"]), float(cfg["mean_doc_bytes"])
    if states < 1 or conc <= 0 or mean_len < 1:
        raise UserError(f"task.hmm needs states >= 1, concentration > 0, mean_doc_bytes >= 1; got {dict(cfg)}")
    if not alphabet or "\n" in alphabet or not alphabet.isascii() or len(set(alphabet)) != len(alphabet):
        raise UserError(f"task.hmm.alphabet must be distinct ASCII characters without a newline, got {alphabet!r}")
    rng = np.random.default_rng(int(cfg["seed"]))
    transition = rng.dirichlet(np.full(states, conc), size=states)
    emission = rng.dirichlet(np.full(len(alphabet), conc), size=states)
    return HMM(transition, emission, alphabet, 1.0 / mean_len)


def sample_documents(hmm: HMM, total_bytes: int, seed: int) -> list[str]:
    """Documents until their characters add up to at least ``total_bytes`` (all docs advance together)."""
    rng = np.random.default_rng(seed)
    t_cdf, e_cdf, start_cdf = np.cumsum(hmm.transition, 1), np.cumsum(hmm.emission, 1), np.cumsum(hmm.start)
    letters = np.frombuffer(hmm.alphabet.encode("ascii"), dtype=np.uint8)
    docs: list[str] = []
    made = 0
    while made < total_bytes:
        n = max(16, int((total_bytes - made) * hmm.end_prob * 1.1) + 1)
        state = _draw(start_cdf[None].repeat(n, 0), rng)
        alive = np.ones(n, dtype=bool)
        lengths = np.zeros(n, dtype=np.int64)
        columns = []
        while alive.any():
            symbol = _draw(e_cdf[state], rng)
            columns.append(np.where(alive, letters[symbol], 0).astype(np.uint8))
            lengths += alive
            alive &= rng.random(n) >= hmm.end_prob
            state = _draw(t_cdf[state], rng)
        grid = np.stack(columns, 1)
        for i in range(n):
            docs.append(grid[i, :lengths[i]].tobytes().decode("ascii"))
            made += int(lengths[i])
            if made >= total_bytes:
                break
    return docs


def _draw(cdf_rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    u = rng.random(len(cdf_rows))
    return np.minimum((cdf_rows < u[:, None]).sum(1), cdf_rows.shape[1] - 1)


class StreamOracle:
    """The true distribution of the byte stream (documents joined by SEPARATOR) as a predictor.

    States: the HMM's S states, then two newline states. From a document state the chain moves on
    with probability 1 - end_prob, else to the first newline; the second newline leads to a new
    document's first state. Emissions are bytes. A window is scored from the chain's stationary
    distribution: the model knows nothing before the window either.
    """

    def __init__(self, hmm: HMM, tokenizer):
        s = len(hmm.transition)
        q = hmm.end_prob
        trans = np.zeros((s + 2, s + 2))
        trans[:s, :s] = (1 - q) * hmm.transition
        trans[:s, s] = q
        trans[s, s + 1] = 1.0
        trans[s + 1, :s] = hmm.start
        emit = np.zeros((s + 2, 256))
        emit[:s, list(hmm.alphabet.encode("ascii"))] = hmm.emission
        emit[s:, ord("\n")] = 1.0
        self.transition, self.emission = trans, emit
        self.prior = stationary(trans)
        self.tokenizer = tokenizer

    def target_logprobs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p(y_t | x_0, y_<t) under the true process, summed over each target token's bytes."""
        x, y = x.cpu().numpy(), y.cpu().numpy()
        rows, width = y.shape
        tok = self.tokenizer
        # bytes of each row: the first input token's bytes as context (owner -1), then the targets'
        seqs, owners = [], []
        for r in range(rows):
            parts = [tok.token_bytes(x[r, 0])] + [tok.token_bytes(t) for t in y[r]]
            seqs.append(b"".join(parts))
            owners.append(np.repeat(np.arange(-1, width), [len(p) for p in parts]))
        longest = max(len(s) for s in seqs)
        data = np.zeros((rows, longest), dtype=np.int64)
        owner = np.full((rows, longest), -2, dtype=np.int64)  # -2 = past the row's end
        for r in range(rows):
            data[r, :len(seqs[r])] = np.frombuffer(seqs[r], dtype=np.uint8)
            owner[r, :len(seqs[r])] = owners[r]
        out = np.zeros((rows, width))
        belief = np.repeat(self.prior[None], rows, 0)
        for i in range(longest):
            likelihood = belief * self.emission[:, data[:, i]].T  # (rows, states)
            p = likelihood.sum(1)
            live = owner[:, i] > -2
            with np.errstate(divide="ignore"):
                logp = np.log(p)
            scored = owner[:, i] >= 0
            np.add.at(out, (np.nonzero(scored)[0], owner[scored, i]), logp[scored])
            posterior = likelihood / np.where(p > 0, p, 1.0)[:, None]
            belief = np.where(live[:, None], posterior @ self.transition, belief)
        return torch.from_numpy(out)


def hmm_documents(cfg: Mapping[str, Any]) -> tuple[list[str], HMM]:
    hmm = random_hmm(cfg)
    total = int(cfg["total_bytes"])
    if total < 1000:
        raise UserError(f"task.hmm.total_bytes must be at least 1000, got {total}")
    return sample_documents(hmm, total, int(cfg["seed"]) + 1), hmm
