import json
from collections import Counter
from dataclasses import replace

import pytest
import torch
import torch.nn as nn
from taskcfg import task_config

from archbench import Budget, build_task
from archbench.errors import UserError
from archbench.model import NeuralModel
from archs.gpt import GPT, SIZES
from archs.layers.prefix_lm import build_prefix_lm
from harness.train import train
from tasks.data.gettext_catalogs import languages_with_catalogs

LANGS = ["de", "fr", "sv"]
needs_catalogs = pytest.mark.skipif(not set(LANGS) <= set(languages_with_catalogs("/usr/share/locale")),
                                    reason="needs the system's German, French and Swedish gettext catalogs")


def train_cfg(steps):
    return dict(batch_size=32, seq_len=64, max_steps=steps, max_tokens=None, max_seconds=None, lr=1e-2,
                min_lr_ratio=0.1, warmup_steps=2, weight_decay=0.0, betas=[0.9, 0.95], grad_clip=1.0, eval_every=0,
                eval_batches=1, progress=False)


class MeanBytes(NeuralModel):
    """A classifier defined here for the test: mean of token embeddings over the real tokens, then linear."""

    def __init__(self, vocab, classes):
        super().__init__()
        self.emb = nn.Embedding(vocab, 32)
        self.out = nn.Linear(32, classes)

    def forward(self, ids, mask):
        h = (self.emb(ids) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return self.out(h)

    def flops_per_token(self, seq_len):
        return 6 * self.out.weight.numel()


@pytest.fixture(scope="module")
def language_id(tmp_path_factory):
    return build_task(task_config("classification", tmp_path_factory.mktemp("c"), languages=LANGS, per_language=300))


@needs_catalogs
def test_builtin_language_id_set(language_id):
    task = language_id
    assert task.labels == sorted(LANGS)
    counts = {k: len(v) for k, v in task.splits.items()}
    assert counts["train"] > 4 * counts["test"] > 0  # the sample is independent of the split hash
    texts = [t for v in task.splits.values() for t, _ in v]
    assert len(texts) == len(set(texts)) == 900  # no text in two splits, none with two labels
    assert Counter(y for v in task.splits.values() for _, y in v) == {lang: 300 for lang in LANGS}
    spec = task.spec(64)
    assert spec.kind == "classify" and spec.num_classes == 3
    ids, mask, labels = task._batch("test", [0, 1])
    assert (ids[:, 0] == spec.bos_id).all()
    assert (ids[torch.arange(2), mask.sum(1) - 1] == spec.eos_id).all()  # bos + text + eos
    seqs, ys = task.labeled_sequences("train")
    assert len(seqs) == len(ys) == counts["train"]
    x, m, y = task._batch("train", [0, 1, 2])
    for i in range(3):  # what fitted models read is what forward sees, without the padding
        assert seqs[i].tolist() == x[i][m[i]].tolist() and ys[i] == int(y[i])
    assert len(set(ys[:30])) == 3  # a fixed shuffle: a token budget's first examples cover every class
    info = task.data_info()
    test_labels = [y for _, y in task.splits["test"]]
    top = Counter(y for _, y in task.splits["train"]).most_common(1)[0][0]
    majority = info["reference_rows"]["majority"]["metrics"]
    assert majority["accuracy"] == pytest.approx(100 * test_labels.count(top) / len(test_labels))


@needs_catalogs
def test_a_small_classifier_learns_language_id(language_id):
    task = language_id
    torch.manual_seed(0)
    spec = task.spec(64)
    model = MeanBytes(spec.vocab_size, spec.num_classes)
    tcfg = train_cfg(60)
    out = train(model, task, tcfg, Budget.from_config({"train": tcfg}), torch.device("cpu"), torch.float32,
                torch.Generator().manual_seed(0))
    assert out.status == "ok"
    metrics = task.evaluate(model, torch.device("cpu"), 64)
    majority = task.data_info()["reference_rows"]["majority"]["metrics"]["accuracy"]
    assert metrics["accuracy"] > majority + 20
    assert 0 < metrics["macro_f1"] <= 100 and metrics["test_examples"] == len(task.splits["test"])


@needs_catalogs
def test_prefix_lm_gpt_classifies(language_id):
    task = language_id
    torch.manual_seed(0)
    spec = task.spec(64)
    model = build_prefix_lm("classify", spec, lambda s: GPT(replace(
        SIZES["tiny"], n_layer=1, d_model=32, n_head=2, vocab_size=s.vocab_size, block_size=s.max_seq_len,
        attention="sdpa")))
    tcfg = train_cfg(2)
    out = train(model, task, tcfg, Budget.from_config({"train": tcfg}), torch.device("cpu"), torch.float32,
                torch.Generator().manual_seed(0))
    assert out.status == "ok"
    assert set(task.evaluate(model, torch.device("cpu"), 64)) >= {"accuracy", "macro_f1", "test_nll"}


@needs_catalogs
def test_a_capped_test_split_is_a_sample_of_every_language(tmp_path):
    task = build_task(task_config("classification", tmp_path, languages=LANGS, per_language=300,
                                  max_eval_examples=30))
    assert len(task.splits["test"]) == 30
    assert {y for _, y in task.splits["test"]} == set(LANGS)  # not the first language of a grouped list
    assert len(task.splits["train"]) > 700


def test_files_labels_and_bad_input(tmp_path):
    path = tmp_path / "labeled.jsonl"
    rows = [{"text": f"message number {i} " + ("good" if i % 3 else "bad"), "label": i % 3 == 0} for i in range(90)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = dict(source="files", path=str(path), valid_frac=0.1, test_frac=0.2)
    task = build_task(task_config("classification", tmp_path, **cfg))
    assert task.labels == ["False", "True"]
    with pytest.raises(UserError, match="no column 'category' \\(task.columns.label\\)"):
        build_task(task_config("classification", tmp_path, **cfg, columns__label="category"))
    one = tmp_path / "one.jsonl"
    one.write_text("".join(json.dumps({"text": f"t{i}", "label": "a"}) + "\n" for i in range(40)), encoding="utf-8")
    with pytest.raises(UserError, match="at least two labels"):
        build_task(task_config("classification", tmp_path, **{**cfg, "path": str(one)}))
    with pytest.raises(UserError, match="task.languages needs at least two languages"):
        build_task(task_config("classification", tmp_path, languages=["de"]))


def test_hf_class_labels_keep_their_names(tmp_path):
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "sentiment": datasets.ClassLabel(names=["negative", "positive"])})
    rows = {"sentence": [f"review {i} was {'great' if i % 2 else 'poor'}" for i in range(60)],
            "sentiment": [i % 2 for i in range(60)]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "reviews"))
    task = build_task(task_config("classification", tmp_path, source="hf", hf__name=str(tmp_path / "reviews"),
                                  columns__text="sentence", columns__label="sentiment", valid_frac=0.1, test_frac=0.2))
    assert task.labels == ["negative", "positive"]
    assert all((y == "positive") == ("great" in t) for v in task.splits.values() for t, y in v)
