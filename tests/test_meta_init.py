"""Building for FSDP without a whole model (harness/meta_init.py): the build runs on the meta device,
and replaying its recorded init gives exactly the ordinary build's weights and buffers, leaves the
random stream where the ordinary build leaves it, and holds one parameter at a time; what cannot be
replayed is refused with the reason (the run then builds whole, as before)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from archbench import ARCHS, TaskSpec
from harness import meta_init

SPEC = TaskSpec(kind="lm", vocab_size=50, max_seq_len=32)


# archs whose construction computes a parameter from other tensors (the HMM's scaled randn start
# logits): FSDP builds them whole on every rank, as before
BUILT_WHOLE = {"hmm": "start_logits is computed from other tensors"}


def _cases():
    for name, spec in ARCHS.items():
        if not spec.fitted and name != "hf":  # hf: transformers' own init, needs the package (built whole)
            for kind in spec.kinds:
                yield name, kind


@pytest.mark.parametrize("arch, kind", list(_cases()))
def test_replayed_init_equals_the_ordinary_build(arch, kind):
    """Every gradient-trained arch and kind, except those refused (with the reason) and built whole."""
    a = ARCHS[arch]
    hp = a.hparams("tiny" if "tiny" in a.sizes else next(iter(a.sizes)), {})
    spec = TaskSpec(kind=kind, vocab_size=50, max_seq_len=32, num_classes=3 if kind == "classify" else None)
    torch.manual_seed(5)
    ref = a.build(kind, hp, spec)
    rng_after = torch.get_rng_state()
    devices = []

    def spy():
        devices.append(torch.empty(0).device.type)
        return a.build(kind, hp, spec)

    torch.manual_seed(5)
    model, how = meta_init.build_sharded(spy, lambda m: None, torch.device("cpu"))
    if arch in BUILT_WHOLE:
        assert model is None and BUILT_WHOLE[arch] in how
        return
    assert model is not None, how
    assert devices == ["meta"] and how.startswith("built on the meta device")
    assert torch.equal(torch.get_rng_state(), rng_after)  # training's dropout draws what it would have
    ours, theirs = model.state_dict(), ref.state_dict()
    assert list(ours) == list(theirs)
    for k in theirs:
        assert torch.equal(ours[k], theirs[k]), k
    for (k, b), r in zip(model.named_buffers(), ref.buffers()):
        assert torch.equal(b, r), k
    ties = [n for n, p in ref.named_parameters(remove_duplicate=False)]
    assert [n for n, p in model.named_parameters(remove_duplicate=False)] == ties
    assert len(list(model.parameters())) == len(list(ref.parameters()))  # tied weights stay tied


def test_the_replay_holds_one_parameter_at_a_time():
    a = ARCHS["gpt"]
    model, rec = meta_init.record(lambda: a.build("lm", a.hparams("tiny", {"n_layer": 4}), SPEC))
    largest = max(p.untyped_storage().nbytes() for p in model.parameters())
    total = sum(p.untyped_storage().nbytes() for p in model.parameters())
    finished = []
    peak = meta_init.replay(rec.ops, torch.device("cpu"), lambda key, storage: finished.append(key))
    assert peak == largest < total / 8
    assert {p.untyped_storage()._cdata for p in model.parameters()} <= set(finished)  # every weight gets its values


class _Computed(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3) * 2)


class _Buffered(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.register_buffer("table", torch.arange(4.0))


@pytest.mark.parametrize("build, why", [(_Computed, "parameter w is computed from other tensors"),
                                        (_Buffered, "has buffers and no reset_buffers()")])
def test_what_cannot_be_replayed_is_refused_with_the_reason(build, why):
    model, how = meta_init.build_sharded(build, lambda m: None, torch.device("cpu"))
    assert model is None and why in how
