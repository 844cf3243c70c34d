import gettext
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from taskcfg import task_config

from archbench import Budget, build_task
from archbench.errors import UserError
from archs.gpt import GPT, SIZES
from archs.layers.prefix_lm import build_prefix_lm
from harness.train import train
from tasks.data.gettext_catalogs import languages_with_catalogs

LOCALE = "/usr/share/locale"
needs_catalogs = pytest.mark.skipif(not {"de", "fr"} <= set(languages_with_catalogs(LOCALE)),
                                    reason="needs the system's German and French gettext catalogs")
TRAIN_CFG = dict(batch_size=8, seq_len=64, max_steps=3, max_tokens=None, max_seconds=None, lr=3e-3, min_lr_ratio=0.1,
                 warmup_steps=1, weight_decay=0.1, betas=[0.9, 0.95], grad_clip=1.0, eval_every=0, eval_batches=1,
                 progress=False)


def tiny_gpt(spec):
    return GPT(replace(SIZES["tiny"], n_layer=1, d_model=32, n_head=2, vocab_size=spec.vocab_size,
                       block_size=spec.max_seq_len, attention="sdpa"))


@needs_catalogs
def test_builtin_pairs_are_verbatim_catalog_translations(tmp_path):
    task = build_task(task_config("mt", tmp_path, max_eval_examples=50))
    pairs = [p for v in task.splits.values() for p in v]
    assert len(pairs) > 10_000
    sources = {s: name for name, v in task.splits.items() for s, _ in v}
    for name, v in task.splits.items():  # split by source: no source sentence in two splits
        assert all(sources[s] == name for s, _ in v)
    with_placeholders = [p for p in task.splits["train"] if "%s" in p[0] or "{" in p[0]][:5]
    assert with_placeholders
    domains = [p.stem for p in Path(LOCALE, "de", "LC_MESSAGES").glob("*.mo")]
    for src, tgt in with_placeholders:  # found as is through gettext's public lookup
        found = []
        for d in domains:
            try:
                found.append(gettext.translation(d, LOCALE, languages=["de"]).gettext(src))
            except (OSError, UnicodeDecodeError):
                continue
        assert tgt in found
    info = task.data_info()
    assert info["source"] == "builtin:gettext-catalogs en-de" and len(info["fingerprint"]) == 64
    copy = info["reference_rows"]["copy-source"]["metrics"]
    assert 0 < copy["bleu"] < 100 and 0 < copy["chrf"] < 100


@needs_catalogs
def test_any_two_languages_with_catalogs(tmp_path):
    task = build_task(task_config("mt", tmp_path, source_lang="de", target_lang="fr", max_eval_examples=5))
    assert task.data_info()["pair"] == "de-fr"
    assert len(task.splits["train"]) > 1000


def test_language_pair_without_catalogs_is_one_line(tmp_path):
    with pytest.raises(UserError, match="no gettext catalogs for language 'xx' under '/usr/share/locale/xx/"):
        build_task(task_config("mt", tmp_path, target_lang="xx"))
    with pytest.raises(UserError, match="found no gettext catalogs under '/nonexistent'"):
        build_task(task_config("mt", tmp_path, locale_dir="/nonexistent"))


def write_pairs(path, n=120):
    words = ["file", "open", "close", "read", "write", "user", "group", "path"]
    rows = [{"en": f"cannot {words[i % 8]} {words[(i // 8) % 8]} %s ({i})",
             "de": f"kann {words[(i // 8) % 8]} nicht {words[i % 8]} %s ({i})"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return rows


def test_files_source_and_bad_columns(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_pairs(path)
    cfg = dict(source="files", path=str(path), columns__source="en", columns__target="de",
               valid_frac=0.1, test_frac=0.1, max_eval_examples=None)
    task = build_task(task_config("mt", tmp_path, **cfg))
    assert sum(len(v) for v in task.splits.values()) == 120
    with pytest.raises(UserError, match=r"pairs\.jsonl:1: no column 'english' \(task.columns.source\); this line has: en, de"):
        build_task(task_config("mt", tmp_path, **{**cfg, "columns__source": "english"}))
    with pytest.raises(UserError, match="the (validation|test) split is empty"):
        build_task(task_config("mt", tmp_path, **{**cfg, "test_frac": 0.0}))


@pytest.mark.parametrize("tokenizer,beam", [("byte", 1), ("bpe", 3)])
def test_prefix_lm_gpt_trains_and_translates(tmp_path, tokenizer, beam):
    path = tmp_path / "pairs.jsonl"
    write_pairs(path)
    task = build_task(task_config("mt", tmp_path, source="files", path=str(path), columns__source="en",
                                  columns__target="de", valid_frac=0.1, test_frac=0.1, max_eval_examples=6,
                                  tokenizer=tokenizer, vocab_size=400, decode__beam_size=beam,
                                  decode__max_len_a=0.5))
    spec = task.spec(64)
    assert (spec.kind, spec.pad_id, spec.bos_id, spec.eos_id) == ("seq2seq", *[task.tokenizer.specials[s] for s in
                                                                               ("<pad>", "<bos>", "<eos>")])
    torch.manual_seed(0)
    model = build_prefix_lm("seq2seq", spec, tiny_gpt)
    out = train(model, task, TRAIN_CFG, Budget.from_config({"train": TRAIN_CFG}), torch.device("cpu"), torch.float32,
                torch.Generator().manual_seed(0))
    assert out.status == "ok" and out.steps == 3
    metrics = task.evaluate(model, torch.device("cpu"), 64)
    assert set(metrics) >= {"bleu", "chrf", "test_token_nll", "test_examples"}
    assert metrics["test_examples"] == 6 and 0 <= metrics["bleu"] <= 100
    outputs = task.decode_split(model, "test", torch.device("cpu"))
    assert len(outputs) == 6 and all(isinstance(o, str) for o in outputs)
    ids = task.decode_ids(model, "test", torch.device("cpu"))  # what inference tokens/s counts
    assert metrics["test_generated_tokens"] == sum(len(t) + 1 for t in ids) >= 6
    assert [task.tokenizer.decode(t) for t in ids] == outputs
