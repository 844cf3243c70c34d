import json
from dataclasses import replace

import pytest
import torch
from taskcfg import task_config

from archbench import Budget, build_task
from archbench.errors import UserError
from archs.gpt import GPT, SIZES
from archs.layers.prefix_lm import build_prefix_lm
from harness.train import train
from tasks.data.examples import cut_bytes
from tasks.data.python_docs import docstring_summaries
from tasks.scoring.metrics import rouge_scores
from tasks.summarization import first_sentence

DOCS = [(f"Open the file number {i} for reading. The handle is closed when the block ends. "
         f"Errors raise OSError with the path {i}.", f"Open file {i} and close it afterwards.") for i in range(80)]


def write_pairs(path):
    path.write_text("".join(json.dumps({"article": d, "highlights": s}) + "\n" for d, s in DOCS), encoding="utf-8")


def test_first_sentence_and_cut_bytes():
    assert first_sentence("Return the value. Then more.") == "Return the value."
    assert first_sentence("No end\nmark here") == "No end mark here"
    assert first_sentence("Version 3.11 is out! Yes.") == "Version 3.11 is out!"
    assert cut_bytes("aaaa bbbb cccc", 11) == "aaaa bbbb"  # at a word boundary in the last quarter
    assert cut_bytes("ü" * 10, 5) == "üü"  # never half a character
    assert cut_bytes("short", 100) == "short"


def test_builtin_docstring_pairs():
    pairs = docstring_summaries()
    assert len(pairs) > 1000
    for body, summary in pairs[:200]:
        assert summary and "\n" not in summary and body.strip()


def test_files_pairs_lead_reference_and_training(tmp_path):
    path = tmp_path / "news.jsonl"
    write_pairs(path)
    task = build_task(task_config("summarization", tmp_path, source="files", path=str(path),
                                  columns__document="article", columns__summary="highlights", valid_frac=0.1,
                                  test_frac=0.15, max_document_bytes=60, max_eval_examples=5,
                                  decode__max_len_b=12))
    assert all(len(d.encode()) <= 60 for v in task.splits.values() for d, _ in v)
    lead = task.data_info()["reference_rows"]["lead"]["metrics"]
    docs, refs = zip(*task.splits["test"])
    assert lead == pytest.approx(rouge_scores([first_sentence(d) for d in docs], list(refs)))
    torch.manual_seed(0)
    model = build_prefix_lm("seq2seq", task.spec(64), lambda s: GPT(replace(
        SIZES["tiny"], n_layer=1, d_model=32, n_head=2, vocab_size=s.vocab_size, block_size=s.max_seq_len,
        attention="sdpa")))
    cfg = dict(batch_size=8, seq_len=64, max_steps=2, max_tokens=None, max_seconds=None, lr=3e-3, min_lr_ratio=0.1,
               warmup_steps=1, weight_decay=0.1, betas=[0.9, 0.95], grad_clip=1.0, eval_every=1, eval_batches=1,
               progress=False)
    out = train(model, task, cfg, Budget.from_config({"train": cfg}), torch.device("cpu"), torch.float32,
                torch.Generator().manual_seed(0))
    assert out.status == "ok" and len(out.curve) == 3
    metrics = task.evaluate(model, torch.device("cpu"), 64)
    assert set(metrics) >= {"rouge1_f1", "rouge2_f1", "rougeL_f1", "test_token_nll"}
    assert metrics["mean_output_bytes"] <= 11  # the output limit (12 tokens, eos included) holds


def test_bad_input(tmp_path):
    path = tmp_path / "news.jsonl"
    write_pairs(path)
    with pytest.raises(UserError, match="none of the 80 pairs .* task.max_summary_bytes=5"):
        build_task(task_config("summarization", tmp_path, source="files", path=str(path), columns__document="article",
                               columns__summary="highlights", max_summary_bytes=5))
    with pytest.raises(UserError, match="task.max_summary_bytes must be a positive integer"):
        build_task(task_config("summarization", tmp_path, source="files", path=str(path), columns__document="article",
                               columns__summary="highlights", max_summary_bytes=-1))
