"""Micro-benchmarks: ``python -m harness.bench`` (not tests; numbers depend on the machine and its load).

  attention.py  forward + backward time and peak memory of each attention backend (math and sdpa on a
                CPU) for causal self-attention at B=1, H=8, D=64 and T = 128 .. 4096, with the
                exponent of peak memory ~ T^k fitted per backend (least squares on log-log over
                T >= 512, where fixed overheads no longer dominate).
  attention_gpu.py  the same on CUDA the way the FlashAttention papers report it: TFLOP/s and peak
                memory per backend at GPU-sized shapes (B*H >= 128, D 64 and 128, T 512 .. 16384).
  gpt_step.py   one training step of the harness (forward, the LM task's fused loss, backward,
                gradient clipping, the engine's AdamW) of a 4-layer d256 4-head GPT at T=256, batch 8,
                vocab 50304, fp32 on a CPU, beside nanoGPT's model.py (--nanogpt / $NANOGPT_DIR) in
                interleaved rounds, at 1 and 2 threads: tokens/s, MFU, time per phase, the ratio.
  decoding.py   the seq2seq cells of study=tasks decoded with and without incremental state.
  activations.py  the bytes a GPT training forward holds for backward under activation_checkpointing
                none / selective / full, counted exactly (live storages made in forward), not timed.
  memory.py     the peak memory of the CPU attention and GPT steps, in a fresh process, after all timings.
  baselines.py  n-gram estimation and HMM forward-backward beside hmmlearn
                (``python -m harness.bench.baselines``).
  ngram_vs_kenlm.py  our Kneser-Ney estimator and KenLM's lmplz as child processes on the same
                text file (wall time, max RSS from wait4, interleaved rounds), and query throughput
                beside KenLM's query; ngram_child.py is our side's child.
  measure.py    timing, the peak-memory probe (harness/hardware.py's, as the engine uses), exponents.
  cli.py        the entry point.

Peak memory on CPU is the process's resident high-water mark above its level before the measured
call (Linux /proc/self/status VmHWM, reset through /proc/self/clear_refs), with glibc told to serve
every allocation over 64 KiB by mmap so that freed tensors leave the resident set; on CUDA it is
torch.cuda.max_memory_allocated above the level before the call. Memory is measured after all
timings, since serving every block by mmap slows allocation-heavy code. Warm-up calls come first
and the clock is read after synchronizing the device (nanoGPT's bench.py).
"""
