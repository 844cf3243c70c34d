"""arch=hf: a local Hugging Face model is an arch like the others (trained by the one loop or
evaluated as is), and its bits per byte equal a direct transformers computation on the same windows."""
from __future__ import annotations

import math

import pytest
import torch

from archbench.errors import UserError
from harness.run import run_one
from tests.helpers import compose_conf

import transformers  # a declared dependency (arch=hf)

TEXTS = [f"document {i}: the quick brown fox {i % 7} jumps over the lazy dog number {i % 11}." for i in range(240)]


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    root = tmp_path_factory.mktemp("tiny_gpt2")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=320, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(root / "tokenizer.json"))
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2, n_head=2)
    transformers.GPT2LMHeadModel(config).save_pretrained(str(root))
    (root / "docs.txt").write_text("\n\n".join(TEXTS), encoding="utf-8")
    return root


def _conf(folder, tmp_path, *extra):
    return compose_conf("arch=hf", "size=local", f"arch.path={folder}", "task.source=files",
                        f"task.path={folder / 'docs.txt'}", "task.tokenizer=pretrained",
                        f"task.tokenizer_path={folder}", "train.seq_len=32", "train.batch_size=4",
                        "train.eval_every=0", "train.eval_batches=1", "train.progress=false", "report=false",
                        "threads=1", f"results_dir={tmp_path}", *extra)


def _direct_bits_per_byte(folder, task, seq_len: int) -> float:
    """Non-overlapping windows as tasks/scoring/lm_scoring.py defines them, scored by transformers."""
    model = transformers.GPT2LMHeadModel.from_pretrained(str(folder), dtype=torch.float32).eval()
    ids, start = task.scored["test"]
    nll = 0.0
    with torch.no_grad():
        for s in range(start, len(ids), seq_len):
            x, y = ids[s - 1:min(s - 1 + seq_len, len(ids) - 1)], ids[s:s + seq_len]
            logp = torch.log_softmax(model(input_ids=x[None]).logits[0].double(), -1)
            nll -= logp.gather(-1, y[:, None]).sum().item()
    return nll / math.log(2) / task.test_bytes


def test_eval_only_bits_per_byte_equal_transformers(gpt2_folder, tmp_path):
    from archbench import build_task

    conf = _conf(gpt2_folder, tmp_path, "train.mode=eval")
    rec = run_one(conf).to_dict()
    assert rec["status"] == "ok", rec["error"]
    assert rec["steps"] == 0 and rec["stop_reason"] == "eval-only"
    direct = _direct_bits_per_byte(gpt2_folder, build_task(conf["task"]), 32)
    assert rec["metrics"]["bits_per_byte"] == pytest.approx(direct, abs=1e-6)
    model = transformers.GPT2LMHeadModel.from_pretrained(str(gpt2_folder))
    assert rec["params"] == sum(p.numel() for p in model.parameters())


def test_trained_by_the_one_loop(gpt2_folder, tmp_path):
    rec = run_one(_conf(gpt2_folder, tmp_path, "train.max_steps=4", "train.warmup_steps=1")).to_dict()
    assert rec["status"] == "ok", rec["error"]
    assert rec["steps"] == 4 and rec["flops_per_token"] > 0 and rec["metrics"]["bits_per_byte"] > 0


def test_wrong_model_type_and_missing_folder_are_one_line(gpt2_folder, tmp_path):
    with pytest.raises(UserError, match="cannot load as AutoModelForSeq2SeqLM"):
        run_one(_conf(gpt2_folder, tmp_path, "task=mt", "task.source=builtin", "task.tokenizer=byte",
                      "train.mode=eval"))
    conf = _conf(gpt2_folder, tmp_path, "train.mode=eval")
    conf["arch"]["path"] = str(tmp_path)  # a folder without config.json
    with pytest.raises(UserError, match="not a Hugging Face model folder"):
        run_one(conf)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*.json"))  # nothing written


def test_planned_on_meta_without_reading_weights(gpt2_folder, tmp_path, monkeypatch):
    def no_weights(*args, **kwargs):
        raise AssertionError("the planner must not load weights")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_weights)
    rec = run_one(_conf(gpt2_folder, tmp_path, "plan=always")).to_dict()
    assert rec["status"] == "planned"
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config.from_pretrained(str(gpt2_folder)))
    assert rec["params"] == sum(p.numel() for p in model.parameters())
