"""The GPU attention benchmark's FLOP count (FlashAttention-2's convention) and shape plan, on a CPU."""
from harness.bench.attention_gpu import HEAD_DIMS, LENGTHS, attention_flops, math_bytes, shape_plan


def test_flop_count_follows_flashattention2():
    # B=2, H=3, T=8, D=4: two matmuls of 2*T*T*D each per head
    fwd = 2 * 3 * (2 * 8 * 8 * 4) * 2
    assert attention_flops(2, 3, 8, 4, causal=False, mode="fwd") == fwd
    assert attention_flops(2, 3, 8, 4, causal=True, mode="fwd") == fwd / 2
    assert attention_flops(2, 3, 8, 4, causal=True, mode="bwd") == 2.5 * fwd / 2
    assert attention_flops(2, 3, 8, 4, causal=True) == 3.5 * fwd / 2


def test_shape_plan_keeps_the_gpu_busy_at_every_length():
    plan = shape_plan()
    assert {c["head_dim"] for c in plan} == set(HEAD_DIMS) == {64, 128}
    assert sorted({c["seq_len"] for c in plan}) == list(LENGTHS) and LENGTHS[0] == 512 and LENGTHS[-1] == 16384
    for c in plan:
        assert c["batch"] * c["heads"] >= 128
        assert c["heads"] * c["head_dim"] == 2048
        assert c["batch"] * c["seq_len"] >= 16384  # at least FlashAttention-2's 16k tokens per batch
    big = next(c for c in plan if c["seq_len"] == 16384 and c["head_dim"] == 64)
    assert math_bytes(big) == 3 * 4 * big["batch"] * big["heads"] * 16384 ** 2
