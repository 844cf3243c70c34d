#!/usr/bin/env bash
# GPU check for issue 12 ("arch=gpt size=7b trains for real on the GPUs researchers have").
#
#   OUT=/some/folder bash tools/gpu_check.sh        # from the checkout root, on a CUDA machine
#
# Needs: python with torch (CUDA), hydra-core/omegaconf and the project's other dependencies, and
# transformers for the HF comparison. Every step has its own time limit and the whole script a total
# budget (GPU_CHECK_SECONDS, default 480), so one failure cannot eat the rest; steps run in order of
# importance and a step that does not fit in what is left is skipped and says so. Each step's output
# goes to stdout and to $OUT/<step>.log; $OUT/summary.txt lists every step's exit code, and
# $OUT/results holds the run records (results_dir).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HYDRA_FULL_ERROR=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python}
RES="$OUT/results"
# the shape under test (defaults: the issue's 7B setup); a CPU smoke run of this script itself:
#   SIZE=tiny DEVICE=cpu BATCH=4 SEQ=64 bash tools/gpu_check.sh
SIZE=${SIZE:-7b} DEVICE=${DEVICE:-cuda} BATCH=${BATCH:-4} SEQ=${SEQ:-2048}
TOTAL=${GPU_CHECK_SECONDS:-480}
START=$(date +%s)
: > "$OUT/summary.txt"

step() {  # step NAME LIMIT_SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local left=$((TOTAL - ($(date +%s) - START)))
  if [ "$left" -lt 20 ]; then
    echo "=== $name: SKIPPED (only ${left}s of the ${TOTAL}s budget left)" | tee -a "$OUT/summary.txt"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name (limit ${limit}s) $(date -u +%H:%M:%S)"
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 124 ] && rc="124 (timed out after ${limit}s)"
  echo "=== $name: rc=$rc" | tee -a "$OUT/summary.txt"
}

# what the record says about a run: tokens/s, MFU, peak memory, the loss curve
summarize() {
  "$PY" - "$RES" "$1" <<'EOF'
import json, sys
from pathlib import Path
recs = sorted(Path(sys.argv[1], "runs").glob("*.json"), key=lambda p: p.stat().st_mtime)
recs = [json.loads(p.read_text()) for p in recs]
recs = [r for r in recs if r.get("config", {}).get("attention") == sys.argv[2] or sys.argv[2] == "any"]
if not recs:
    print("no record"); sys.exit(0)
r = recs[-1]; t = r["throughput"]
gib = (t.get("peak_mem_bytes") or 0) / 2**30
mfu = f"{100 * t['mfu']:.1f}%" if t.get("mfu") else "n/a"
print(f"status={r['status']} error={r.get('error')} attention={r.get('attention_backend')} dist={(r.get('dist') or {}).get('mode')}")
print(f"params={r.get('params') or 0:,} steps={r['steps']} tokens/s={t.get('tokens_per_s') or 0:,.0f} MFU={mfu} peak_mem={gib:.1f} GiB ({t.get('peak_mem_kind')})")
print("loss curve (step, train, val):", [(c["step"], c["train_loss"] and round(c["train_loss"], 3), round(c["val_loss"], 3)) for c in r["curve"]])
print("metrics:", {k: v for k, v in (r.get("metrics") or {}).items() if k in ("bits_per_byte", "token_perplexity")})
print("attention choice:", r.get("attention_choice"))
EOF
}

RUN7B=(arch=gpt "size=$SIZE" "device=$DEVICE" arch.activation_checkpointing=true "train.batch_size=$BATCH" "train.seq_len=$SEQ"
       train.lr=3e-4 train.warmup_steps=5 train.eval_batches=1 task.max_bytes=300000 train.progress=false
       report=false force=true "results_dir=$RES")

step env 30 bash -c "nvidia-smi; $PY -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))'; \
  $PY -c 'from archs.layers.attention import xformers_build; print(\"xformers build:\", xformers_build())'"
step cuda_tests 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_attention_properties.py tests/test_transformers.py \
  tests/test_install_profiles.py -k "cuda or xformers or profile or pair"
step gpt7b_sdpa 200 "$PY" -m harness.sweep "${RUN7B[@]}" attention=sdpa train.max_steps=30 train.eval_every=10
summarize sdpa | tee "$OUT/gpt7b_sdpa.summary"
# expected here: one line naming the installed torch and the torch xformers was built for, exit 2
step gpt7b_xformers 90 "$PY" -m harness.sweep "${RUN7B[@]}" attention=xformers train.max_steps=20 train.eval_every=10
summarize xformers | tee "$OUT/gpt7b_xformers.summary"
step bench_ours 150 "$PY" -m harness.bench.vs_hf --impl ours --size "$SIZE" --batch "$BATCH" --seq-len "$SEQ"
step bench_hf 150 "$PY" -m harness.bench.vs_hf --impl hf --size "$SIZE" --batch "$BATCH" --seq-len "$SEQ"
# the issue's lever: selective (op-level) activation checkpointing instead of full, same step otherwise
step bench_ours_selective 150 "$PY" -m harness.bench.vs_hf --impl ours --size "$SIZE" --batch "$BATCH" --seq-len "$SEQ" \
  --activation-checkpointing selective
"$PY" - "$OUT" <<'EOF' | tee "$OUT/bench.summary"
import json, sys
from pathlib import Path
for impl in ("ours", "hf", "ours_selective"):
    p = Path(sys.argv[1], f"bench_{impl}.log")
    lines = [l for l in p.read_text().splitlines() if l.startswith("{")] if p.exists() else []
    if not lines:
        print(f"{impl}: no result"); continue
    r = json.loads(lines[-1])
    print(f"{impl:4s} {r['size']} step B={r['batch']} T={r['seq_len']} V={r['vocab']}: {r['tokens_per_s']:,.0f} tok/s  "
          f"MFU {100 * (r['mfu'] or 0):.1f}%  peak {r['peak_mem_gib'] or 0:.1f} GiB  ({r['settings']})")
EOF
# FSDP2 on one GPU: the bf16 mixed-precision policy (bf16 compute copies, fp32 master + reduce) through torchrun
step gpt7b_fsdp1 200 "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m harness.sweep "${RUN7B[@]}" \
  attention=sdpa dist=fsdp train.max_steps=20 train.eval_every=0
summarize any | tee "$OUT/gpt7b_fsdp1.summary"
# an MFU lever, if the budget has room: each layer torch.compile'd, then sharded (bf16 compute copies)
step gpt7b_fsdp1_compile 200 "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m harness.sweep \
  "${RUN7B[@]}" attention=sdpa dist=fsdp train.compile=true train.max_steps=20 train.eval_every=0
summarize any | tee "$OUT/gpt7b_fsdp1_compile.summary"
echo "=== summary ($(( $(date +%s) - START ))s)"; cat "$OUT/summary.txt"
