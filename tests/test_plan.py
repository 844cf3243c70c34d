"""The planning guard: memory plans on the meta device, the planned-record path, one timed layer.

The 7B shape is only ever built on ``meta`` here; the real-device path is exercised with tiny models.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import replace

import pytest
import torch

from archbench import ARCHS, TaskSpec, build_task
from archs.gpt import GPT, SIZES as GPT_SIZES
from harness import planner as planning
from harness.run import run_one
from tests.helpers import compose_conf

GIB = 2**30


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(1)
    words = "plans weigh memory against what the machine holds before any tensor is made".split()
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 50))) for _ in range(300)]
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("\n\n".join(docs), encoding="utf-8")
    return str(path)




def lm_task(corpus, name="lm"):
    cfg = compose_conf(f"task={name}")["task"]  # every declared key, as a run gets them
    cfg.update(source="files", path=corpus, cache_dir=None)
    return build_task(cfg)


@pytest.fixture
def memory(monkeypatch):
    """Pretend the machine has ``memory.bytes`` available (CI machines differ)."""

    class Fake:
        bytes = 24 * GIB

    monkeypatch.setattr(planning, "available_memory", lambda device: (Fake.bytes, "test"))
    return Fake


def test_7b_plan_on_meta_follows_the_formula(corpus, memory):
    task = lm_task(corpus)
    tcfg = {"batch_size": 2, "seq_len": 64}
    spec = TaskSpec(kind="lm", vocab_size=32000, max_seq_len=64)  # the Llama-2 vocabulary
    hp = GPT_SIZES["7b"]
    p = planning.plan_memory(ARCHS["gpt"], task, hp, spec, tcfg, torch.device("cpu"), torch.float32, 0)
    assert all(t.device.type == "meta" for t in p.model.parameters())
    n = 6_738_415_616
    m = p.record["memory"]
    assert m["weights_bytes"] == m["gradients_bytes"] == 4 * n
    assert m["optimizer_bytes"] == 2 * 4 * n
    # saved activations: at least the fp32 residual stream of every layer, at most 60 such tensors per layer
    stream = 2 * 64 * 4096 * 4
    assert 32 * stream < m["activations_bytes"] < 32 * 60 * stream
    assert m["total_bytes"] == 16 * n + m["activations_bytes"]
    assert p.fits is False and p.record["estimate"] is True and p.record["available_bytes"] == 24 * GIB
    memory.bytes = 10**15
    assert planning.plan_memory(ARCHS["gpt"], task, hp, spec, tcfg, torch.device("cpu"), torch.float32, 0).fits


def test_meta_activation_count_equals_a_real_count(corpus):
    """Counting saved tensors on the meta model gives the same bytes as on a real one."""
    task = lm_task(corpus)
    tcfg = {"batch_size": 3, "seq_len": 16}
    hp = replace(ARCHS["gpt"].sizes["tiny"], positions="rope", mlp="swiglu")
    spec = task.spec(16)
    p = planning.plan_memory(ARCHS["gpt"], task, hp, spec, tcfg, torch.device("cpu"), torch.float32, 0)
    real = ARCHS["gpt"].build("lm", hp, spec)
    params = {t.untyped_storage()._cdata for t in real.parameters()}
    seen, total = set(), 0

    def pack(t):
        nonlocal total
        s = t.untyped_storage()
        if s._cdata not in params and s._cdata not in seen:  # each storage once, parameters excluded
            seen.add(s._cdata)
            total += s.nbytes()
        return t

    batch = next(task.train_batches(3, 16, torch.Generator().manual_seed(0)))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        task.loss(real, batch, torch.device("cpu"))
    # equal up to the token ids: on the CPU they are views of a (B, T+1) window, on meta fresh (B, T) copies
    assert total > 0 and 0 <= total - p.record["memory"]["activations_bytes"] <= 3 * 8


def test_activation_checkpointing_plans_layer_inputs_plus_one_recomputed_layer_and_selective_keeps(corpus):
    task = lm_task(corpus)
    tcfg = {"batch_size": 2, "seq_len": 32}
    spec = task.spec(32)
    acts = {}
    for ckpt in (False, True, "selective"):
        hp = replace(ARCHS["gpt"].sizes["tiny"], n_layer=6, activation_checkpointing=ckpt)
        p = planning.plan_memory(ARCHS["gpt"], task, hp, spec, tcfg, torch.device("cpu"), torch.float32, 0)
        acts[ckpt] = p.record["memory"]["activations_bytes"]
    layer_input = 2 * 32 * 128 * 4
    assert 6 * layer_input < acts[True] < acts[False] / 2
    # selective keeps, beyond full, every layer's matmul outputs (qkv, attention out-projection, MLP in
    # and out: 3 + 1 + 4 + 1 widths of d_model) and the attention output with its logsumexp
    kept = 6 * (9 * layer_input + layer_input + 2 * 4 * 32 * 4)
    assert acts["selective"] - acts[True] == kept and acts["selective"] < acts[False]


def test_run_that_does_not_fit_is_planned_and_never_built_for_real(corpus, tmp_path, memory, monkeypatch):
    memory.bytes = 1024  # nothing fits
    devices = []
    real_build = ARCHS["gpt"].build

    def spy(kind, hp, spec):
        devices.append(torch.empty(0).device.type)  # the default device the build runs under
        return real_build(kind, hp, spec)

    monkeypatch.setitem(ARCHS, "gpt", dataclasses.replace(ARCHS["gpt"], build=spy))
    conf = compose_conf("arch=gpt", "size=tiny", "task.source=files", f"task.path={corpus}", "train.batch_size=2",
                   "train.seq_len=32", "report=false", f"results_dir={tmp_path}")
    rec = run_one(conf).to_dict()
    assert devices == ["meta"]
    assert rec["status"] == "planned" and rec["steps"] == 0 and rec["metrics"] == {}
    assert rec["throughput"]["tokens_per_s"] is None and rec["throughput"]["mfu"] is None  # nothing measured
    plan = rec["plan"]
    assert plan["estimate"] is True and plan["fits"] is False
    assert "one layer needs" in plan["speed"]["block"]["skipped"]  # not even one layer fits: a peak bound
    assert plan["speed"]["method"] == "peak bound" and plan["speed"]["mfu"] is None
    assert rec["params"] == GPT(replace(ARCHS["gpt"].sizes["tiny"], vocab_size=256, block_size=32)).num_params()


def test_planned_gpt_times_one_real_layer(corpus, tmp_path, memory):
    conf = compose_conf("arch=gpt", "size=tiny", "plan=always", "task.source=files", f"task.path={corpus}",
                   "train.batch_size=2", "train.seq_len=32", "report=false", f"results_dir={tmp_path}")
    rec = run_one(conf).to_dict()
    assert rec["status"] == "planned" and rec["plan"]["fits"] is True
    speed = rec["plan"]["speed"]
    assert speed["estimate"] is True and speed["method"] == "timed one layer"
    block = speed["block"]
    assert block["timed_batch"] == 2 and block["block_seconds"] > 0 and block["block_count"] == 2
    expected = (block["block_seconds"] * rec["flops_per_token"] / block["block_flops_per_token"]
                + block["adamw_seconds"] * rec["params"] / block["block_params"])
    assert speed["step_seconds"] == pytest.approx(expected)
    assert speed["tokens_per_s"] == pytest.approx(64 / expected)
    assert 0 < speed["mfu"] == pytest.approx(speed["tokens_per_s"] * rec["flops_per_token"] / speed["peak_flops"])


def test_plan_always_estimates_even_when_it_fits(corpus, tmp_path, memory):
    conf = compose_conf("arch=lstm", "size=tiny", "plan=always", "task.source=files", f"task.path={corpus}",
                   "train.batch_size=2", "train.seq_len=16", "report=false", f"results_dir={tmp_path}")
    rec = run_one(conf).to_dict()
    assert rec["status"] == "planned" and rec["plan"]["fits"] is True
    speed = rec["plan"]["speed"]  # the LSTM names no planning block: a peak bound, no MFU estimate
    assert speed["method"] == "peak bound" and speed["mfu"] is None and speed["step_seconds"] > 0


def test_timed_batch_is_cut_to_the_flop_cap(monkeypatch):
    monkeypatch.setattr(planning, "BLOCK_FLOP_CAP", 1.0)
    model = GPT(replace(ARCHS["gpt"].sizes["tiny"], vocab_size=50, block_size=16))
    tcfg = compose_conf()["train"] | {"batch_size": 8, "seq_len": 16}
    out = planning.time_block(model, tcfg, torch.device("cpu"), torch.float32, None)
    assert out["timed_batch"] == 1 and len(out["block_seconds_all"]) == planning.TIMED_REPEATS


def test_every_size_of_every_arch_can_be_planned(corpus, memory, synthetic_classify):
    """The guard covers every preset of every gradient-trained arch: each builds on meta, counts its
    activations through a task of a kind it serves, and gets a verdict."""
    tasks = {"lm": lm_task(corpus), "mlm": lm_task(corpus, "mlm"), "classify": synthetic_classify({"vocab_size": 300})}
    tcfg = {"batch_size": 2, "seq_len": 32}
    planned = set()
    for name, arch in ARCHS.items():
        kinds = [k for k in arch.kinds if k in tasks]
        if arch.fitted or not kinds or name == "hf":  # hf has no model until arch.path: tests/test_arch_hf.py
            continue
        task = tasks[kinds[0]]
        for size in arch.sizes:
            hp = arch.hparams(size, {})
            p = planning.plan_memory(arch, task, hp, task.spec(32), tcfg, torch.device("cpu"), torch.float32, 0)
            m = p.record["memory"]
            assert m["activations_bytes"] and m["activations_bytes"] > 0, (name, size, p.record["activations"])
            assert p.fits == (m["total_bytes"] <= planning.HEADROOM * 24 * GIB)
            planned.add(name)
    assert {"gpt", "bert", "transformer", "lstm"} <= planned


def test_available_memory_reads_meminfo():
    n, source = planning.available_memory(torch.device("cpu"))
    assert n > 0 and source in ("/proc/meminfo MemAvailable", "sysconf SC_AVPHYS_PAGES")


def test_7b_under_fsdp_fits_eight_80gb_gpus_and_one_says_how_many_it_needs(corpus):
    """The plan is per device: FSDP splits weights, gradients and AdamW states over the ranks."""
    task = lm_task(corpus)
    tcfg = {"batch_size": 8, "seq_len": 2048}
    spec = TaskSpec(kind="lm", vocab_size=32000, max_seq_len=2048)
    hp = replace(GPT_SIZES["7b"], activation_checkpointing=True)
    gpu, bf16, h100 = torch.device("cuda"), torch.bfloat16, 80 * 10**9
    eight = planning.plan_memory(ARCHS["gpt"], task, hp, spec, tcfg, gpu, bf16, 0, world_size=8, sharded=True,
                                 available=h100)
    one = planning.plan_memory(ARCHS["gpt"], task, hp, spec, tcfg, gpu, bf16, 0, available=h100)
    m8, m1 = eight.record["memory"], one.record["memory"]
    assert eight.fits and eight.record["micro_batch"] == 1 and eight.record["world_size"] == 8
    state = 16 * 6_738_415_616
    assert m8["total_bytes"] == -(-state // 8) + m8["gathered_layers_bytes"] + m8["activations_bytes"]
    assert m8["gathered_layers_bytes"] == 2 * 2 * (4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096)  # 2 bf16 layers
    assert not one.fits and m1["total_bytes"] > state
    need = one.record["gpus_needed"]
    assert need is not None and 2 <= need <= 8
    assert f"needs {need} devices" in planning.describe(one)
    # and that many do hold it, at the micro-batch the plan assumed
    again = planning.plan_memory(ARCHS["gpt"], task, hp, spec, {**tcfg, "batch_size": 8 * need}, gpu, bf16, 0,
                                 world_size=need, sharded=True, available=h100)
    assert again.fits
