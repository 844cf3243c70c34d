"""lm-evaluation-harness's own command line, with the archbench model registered:

    archbench-lm-eval run --model archbench --model_args checkpoint=<results>/checkpoints/<key>.pt \\
        --tasks <tasks> [--include_path DIR] [--limit N]

lm-eval 0.4 finds a model only in modules it has imported (it reads no entry points for models), so
``lm_eval --model archbench`` cannot find ours unless something imports it first: this entry point
does exactly that and then hands every argument to lm-eval's CLI unchanged. ``python -m
harness.lmeval`` remains the way that also exports the run's own test split and writes the scores
into its record.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    import harness.lmeval.model  # noqa: F401  (registers the "archbench" model with lm-eval)
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
