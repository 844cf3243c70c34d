import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from taskcfg import task_config

from archbench import build_task
from archbench.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
PROSE = [f"Paragraph {i}: the module reads {i % 7} files and writes word number {i}." for i in range(200)]


class Uniform:
    """Every token equally likely: its scores follow from the vocabulary size alone."""

    def __init__(self, vocab):
        self.vocab = vocab

    def target_logprobs(self, x, y):
        return torch.full(y.shape, -math.log(self.vocab), dtype=torch.float64)


def synthetic(tmp_path, **over):
    return task_config("lm", tmp_path, source="synthetic-hmm", hmm__total_bytes=30_000, **over)


def test_synthetic_hmm_is_deterministic_and_reports_the_bayes_line(tmp_path):
    task = build_task(synthetic(tmp_path))
    assert task.fingerprint == build_task(synthetic(tmp_path)).fingerprint
    assert task.fingerprint != build_task(synthetic(tmp_path, hmm__seed=1)).fingerprint
    info = task.data_info()
    assert info["source"].startswith("synthetic-hmm") and info["documents"]["test"] > 0
    uniform = task.evaluate(Uniform(256), "cpu", 64)
    assert uniform["bits_per_byte"] == pytest.approx(8.0)
    assert uniform["bayes_bits_per_byte"] < math.log2(27)  # better than uniform over the alphabet
    assert uniform["excess_bits_per_byte"] == pytest.approx(8.0 - uniform["bayes_bits_per_byte"])
    truth = task.evaluate(task.oracle, "cpu", 64)
    assert truth["excess_bits_per_byte"] == pytest.approx(0.0, abs=1e-12)
    shorter = task.evaluate(task.oracle, "cpu", 16)["bayes_bits_per_byte"]
    assert shorter > truth["bayes_bits_per_byte"]  # less context per window, the Bayes score is worse


def test_metrics_formulas_with_a_uniform_model(tmp_path):
    path = tmp_path / "prose.txt"
    path.write_text("\n\n".join(PROSE), encoding="utf-8")
    for tokenizer in ("byte", "word", "bpe"):
        task = build_task(task_config("lm", tmp_path, source="files", path=str(path), tokenizer=tokenizer,
                                      vocab_size=300, valid_frac=0.1, test_frac=0.1))
        v = task.tokenizer.vocab_size
        m = task.evaluate(Uniform(v), "cpu", 32)
        text = "\n\n".join(task.splits["test"])
        n_tokens = len(task.tokenizer.encode(text))  # every test token is predicted, after a boundary
        assert m["test_tokens"] == n_tokens
        assert m["test_bytes"] == len(text.encode("utf-8"))
        assert m["bits_per_byte"] == pytest.approx(n_tokens * math.log2(v) / m["test_bytes"])
        assert m["token_perplexity"] == pytest.approx(v)
        words = len("\n\n".join(task.splits["test"]).split())
        assert m["word_perplexity"] == pytest.approx(math.exp(n_tokens * math.log(v) / words))
        assert len(task.sequences("test")) == len(task.splits["test"])


def test_jsonl_and_tsv_files_by_column(tmp_path):
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(PROSE)), encoding="utf-8")
    task = build_task(task_config("lm", tmp_path, source="files", path=str(jsonl), columns__text="body",
                                  valid_frac=0.1, test_frac=0.1))
    assert sum(task.split_docs.values()) == len(PROSE)
    tsv = tmp_path / "docs.tsv"
    tsv.write_text("id\tbody\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(PROSE)), encoding="utf-8")
    same = build_task(task_config("lm", tmp_path, source="files", path=str(tsv), columns__text="body",
                                  valid_frac=0.1, test_frac=0.1))
    assert same.fingerprint == task.fingerprint  # the data, not the file format, defines the fingerprint


def test_bad_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.jsonl:3: not valid JSON"):
        build_task(task_config("lm", tmp_path, source="files", path=str(bad)))
    good = tmp_path / "good.jsonl"
    good.write_text('{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"good\.jsonl:1: no column 'text' \(task.columns.text\); this line has: body"):
        build_task(task_config("lm", tmp_path, source="files", path=str(good)))
    tsv = tmp_path / "t.tsv"
    tsv.write_text("a\tb\n1\t2\n", encoding="utf-8")
    with pytest.raises(UserError, match="no column 'text' .* the header has: a, b"):
        build_task(task_config("lm", tmp_path, source="files", path=str(tsv)))
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("one document\n\nanother one", encoding="utf-8")
    with pytest.raises(UserError, match="the (validation|test) split is empty"):
        build_task(task_config("lm", tmp_path, source="files", path=str(tiny)))
    with pytest.raises(UserError, match="unknown task.source 'web'"):
        build_task(task_config("lm", tmp_path, source="web"))
    with pytest.raises(UserError, match="valid_frac"):
        build_task(task_config("lm", tmp_path, source="files", path=str(tiny), valid_frac=0.7, test_frac=0.5))


def test_hf_source_from_a_dataset_saved_to_disk(tmp_path):
    import datasets

    rows = {"body": PROSE, "label": [i % 2 for i in range(len(PROSE))]}
    folder = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                          "extra": datasets.Dataset.from_dict({"body": ["more text here"] * 3, "label": [0] * 3})}
                         ).save_to_disk(str(folder))
    cfg = dict(source="hf", hf__name=str(folder), columns__text="body", valid_frac=0.1, test_frac=0.1)
    task = build_task(task_config("lm", tmp_path, **cfg))
    assert sum(task.split_docs.values()) == len(PROSE)
    assert task.data_info()["source"] == f"hf:{folder}:train"
    joined = build_task(task_config("lm", tmp_path, **{**cfg, "hf__split": "train+extra"}))
    assert sum(joined.split_docs.values()) == len(PROSE) + 1  # the three equal extra texts count once
    with pytest.raises(UserError, match="has no column 'text' .* its columns: body, label"):
        build_task(task_config("lm", tmp_path, **{**cfg, "columns__text": "text"}))
    with pytest.raises(UserError, match="has no split 'test'; its splits: train, extra"):
        build_task(task_config("lm", tmp_path, **{**cfg, "hf__split": "test"}))


def test_hf_source_offline_fails_in_one_line_through_the_entry_point(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(
        [sys.executable, "-m", "harness.sweep", "task.source=hf", "task.hf.name=someone/no-such-dataset",
         f"results_dir={tmp_path / 'results'}", "train.progress=false", "report=false"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "hf dataset 'someone/no-such-dataset'" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "results").glob("runs/*.json"))  # no record for a user mistake
