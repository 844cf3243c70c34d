"""Hypothesis profiles: ``ci`` (chosen when the CI environment variable is set) replays the same
examples on every run (derandomize=True); ``dev`` explores new ones. Neither has a deadline: these
tests run on shared CPUs where one slow example says nothing about correctness."""
import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=30, print_blob=True)
settings.register_profile("dev", deadline=None, max_examples=30)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_configure(config):
    # Tests use tiny tensors: one thread does them as fast, and avoids OpenMP barrier stalls (100x
    # slowdowns measured) when the CPUs are shared with other jobs.
    import torch

    torch.set_num_threads(1)


import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import harness  # noqa: E402,F401  (registers the built-in archs and tasks)
from archbench import TASKS, Task, TaskSpec  # noqa: E402


class SyntheticClassify(Task):
    """A tiny classification task on random token sequences (label = the first token's parity),
    right-padded to random lengths; for testing classify-kind models through the one engine."""

    name = "_synthetic_classify"
    kind = "classify"
    primary_metric = "accuracy"
    lower_is_better = False
    fingerprint = "synthetic"

    def __init__(self, cfg=None, num_classes: int = 2):
        self.vocab_size, self.num_classes = int((cfg or {}).get("vocab_size", 32)), num_classes
        self.pad_id = self.vocab_size - 1

    def spec(self, seq_len):
        return TaskSpec(kind="classify", vocab_size=self.vocab_size, max_seq_len=seq_len,
                        num_classes=self.num_classes, pad_id=self.pad_id)

    def _batch(self, n, seq_len, g):
        ids = torch.randint(0, self.vocab_size - 1, (n, seq_len), generator=g)
        lengths = torch.randint(1, seq_len + 1, (n,), generator=g)
        mask = torch.arange(seq_len)[None] < lengths[:, None]
        return ids.masked_fill(~mask, self.pad_id), mask, ids[:, 0] % self.num_classes

    def train_batches(self, batch_size, seq_len, generator):
        while True:
            yield self._batch(batch_size, seq_len, generator)

    def loss(self, model, batch, device):
        ids, mask, y = (t.to(device) for t in batch)
        return F.cross_entropy(model(ids, mask).float(), y), ids.numel()  # no .item(): plans run it on meta

    def _eval(self, model, device, seq_len):
        ids, mask, y = (t.to(device) for t in self._batch(256, seq_len, torch.Generator().manual_seed(7)))
        logits = model(ids, mask).float()
        return F.cross_entropy(logits, y).item(), (logits.argmax(-1) == y).float().mean().item()

    def validation_loss(self, model, device, seq_len, max_batches):
        with torch.no_grad():
            return self._eval(model, device, seq_len)[0]

    def evaluate(self, model, device, seq_len):
        return {"accuracy": self._eval(model, device, seq_len)[1]}

    def data_info(self):
        return {"source": "synthetic", "fingerprint": self.fingerprint}


@pytest.fixture
def synthetic_classify():
    """Registers SyntheticClassify (vocab from the task config) for one test, then removes it."""
    TASKS.register(SyntheticClassify.name, SyntheticClassify)
    yield SyntheticClassify
    TASKS.pop(SyntheticClassify.name, None)
