"""``python -m harness.bench [--only attention|gpt|activations|decoding|lstm|baselines] ...``: the parts in order, then
the memory pass."""
from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from archbench.errors import ArgumentParser, UserError, check_output_file, user_errors_exit
from archbench.files import write_atomic
from harness import hardware
from harness.bench import activations, attention, attention_gpu, baselines, decoding, gpt_step, lstm_step
from harness.bench.memory import measure_memory

DESCRIPTION = "Micro-benchmarks: ``python -m harness.bench`` (not tests; numbers depend on the machine and its load)."


def _thread_counts(text: str) -> list[int]:
    try:
        counts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of positive integers")
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = ArgumentParser(prog="python -m harness.bench", description=DESCRIPTION)
    ap.add_argument("--only", choices=("attention", "gpt", "activations", "decoding", "lstm", "baselines"),
                    help="run one part (baselines: harness/bench/baselines.py with its defaults)")
    ap.add_argument("--device", default="auto", choices=hardware.DEVICES)
    ap.add_argument("--max-len", type=int, help="longest attention sequence (default 4096 on a CPU, 16384 on CUDA)")
    ap.add_argument("--steps", type=int, default=5, help="timed GPT steps (default 5)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ap.add_argument("--gpt-threads", default=[1, 2], type=_thread_counts,
                    help="CPU thread counts the GPT step runs at, comma-separated (default 1,2)")
    ap.add_argument("--nanogpt", help=f"nanoGPT checkout (or its model.py) to run beside the GPT step "
                                      f"(default ${gpt_step.NANOGPT_ENV}; skipped with the reason when unset)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    with user_errors_exit():
        check_args(args)
    return args


def check_args(args: argparse.Namespace) -> None:
    """Values argparse's types let through but the benchmarks cannot use: one line, before any work."""
    shortest = attention.LENGTHS[0]
    if args.max_len is not None and args.max_len < shortest:
        raise UserError(f"--max-len must be at least {shortest} (the shortest benchmarked length; lengths: "
                        f"{', '.join(map(str, attention.LENGTHS))}), got {args.max_len}")
    if args.steps < 1:
        raise UserError(f"--steps must be a positive integer, got {args.steps}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be a positive integer, got {args.threads}")
    if args.json:
        check_output_file(args.json, "--json")


def _attention(device: torch.device, max_len: int) -> dict[str, Any]:
    s = attention.ATTN_SHAPE
    print(f"attention: causal self-attention, B={s['batch']} H={s['heads']} D={s['head_dim']}, forward + backward")
    return attention.attention_bench(device, [t for t in attention.LENGTHS if t <= max_len])


def _gpt(device: torch.device, steps: int, nanogpt: str | None, threads: list[int]) -> dict[str, Any]:
    s = gpt_step.GPT_SHAPE
    print(f"gpt training step: {s['n_layer']} layers, d {s['d_model']}, {s['n_head']} heads, T {s['seq_len']}, "
          f"batch {s['batch']}, vocab {s['vocab']}, {gpt_step.GPT_DTYPE_NOTE}; harness beside nanoGPT, "
          "interleaved rounds in this process")
    counts = threads if device.type == "cpu" else [torch.get_num_threads()]
    before = torch.get_num_threads()
    runs = []
    for n in counts:
        runs.append(gpt_step.gpt_step_bench(device, steps=steps, nanogpt=nanogpt, threads=n))
        gpt_step.print_bench(runs[-1])
    torch.set_num_threads(before)
    return runs[-1] | {"by_threads": runs}


def _memory(results: dict[str, Any], device: torch.device) -> None:
    print("peak memory above the level before the call (a fresh process):")
    measure_memory(results, device)
    if "attention" in results:
        attention.print_memory(results["attention"])
    if "gpt" in results:
        print(f"  gpt training step: {(results['gpt']['peak_mem_bytes'] or 0) / 2**20:.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with user_errors_exit():
        device = hardware.resolve_device(args.device)
    env = hardware.environment(device)
    print(f"device: {env['device_name']} ({device.type}), {env['threads']} threads, torch {env['torch']}; "
          "timings on a shared machine vary with its load")
    results: dict[str, Any] = {"env": env}
    if args.only in (None, "attention") and device.type == "cuda":
        print("attention on the GPU: causal self-attention forward + backward, bf16, FlashAttention-2's "
              "shapes and FLOP count (harness/bench/attention_gpu.py)")
        results["attention_gpu"] = attention_gpu.attention_gpu_bench(device, max_len=args.max_len or 16384)
    elif args.only in (None, "attention"):
        results["attention"] = _attention(device, args.max_len or attention.LENGTHS[-1])
    if args.only in (None, "gpt"):
        results["gpt"] = _gpt(device, args.steps, args.nanogpt, args.gpt_threads)
    if "attention" in results or "gpt" in results:
        _memory(results, device)
    if args.only in (None, "activations"):
        s = activations.ACT_SHAPE
        print(f"activations held for backward by a GPT training forward + loss ({s['n_layer']} layers, d "
              f"{s['d_model']}, T {s['seq_len']}, batch {s['batch']}, fp32 on the CPU; counted exactly, not timed), "
              "by activation_checkpointing mode:")
        results["activations"] = activations.activation_bench()
        activations.print_activations(results["activations"])
    if args.only in (None, "decoding"):
        print("decoding: the seq2seq cells of study=tasks after their training, test split, task's search, "
              "incremental vs prefix reread, interleaved rounds in this process")
        results["decoding"] = decoding.decoding_bench(threads=torch.get_num_threads())
    if args.only in (None, "lstm") and device.type == "cpu":
        print("lstm seq2seq training step on mt and summarization (tiny, its tuned recipe; harness/bench/lstm_step.py): packed loop "
              "vs fused real-token run, subnormals kept vs flushed, same init and batches")
        results["lstm"] = lstm_step.lstm_step_bench()
    if args.only in (None, "baselines"):
        print("baselines (python -m harness.bench.baselines for its options):")
        baselines.main([])
    if args.json:
        write_atomic(args.json, json.dumps(results, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0
