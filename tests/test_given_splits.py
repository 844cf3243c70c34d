"""A data set's own splits are used as given: the test set scored is exactly the given test split."""
from __future__ import annotations

import pytest

from archbench import build_task
from archbench.errors import UserError
from tests.taskcfg import task_config

DOC_SEP_BYTES = 2  # documents of a split are joined by a blank line (tasks/lm.py DOC_SEPARATOR)


def _docs(prefix: str, n: int) -> list[str]:
    return [f"{prefix} document {i}: " + " ".join(f"w{(i * 7 + j) % 31}" for j in range(12 + i % 5)) for i in range(n)]


def _wikitext_folder(root, splits=("train", "valid", "test")):
    """A WikiText-style folder: one text file per split, documents separated by blank lines."""
    data = {"train": _docs("train", 40), "valid": _docs("valid", 6), "test": _docs("test", 9)}
    root.mkdir(parents=True, exist_ok=True)
    for name in splits:
        (root / f"wiki.{name}.txt").write_text("\n\n".join(data[name]) + "\n", encoding="utf-8")
    return data


def _expected_bytes(docs: list[str]) -> int:
    return sum(len(d.encode()) for d in docs) + DOC_SEP_BYTES * (len(docs) - 1)


def test_lm_on_a_wikitext_style_folder_scores_exactly_the_given_test_file(tmp_path):
    data = _wikitext_folder(tmp_path / "wiki")
    task = build_task(task_config("lm", tmp_path, source="files", splits__train=str(tmp_path / "wiki/wiki.train.txt"),
                                  splits__validation=str(tmp_path / "wiki/wiki.valid.txt"),
                                  splits__test=str(tmp_path / "wiki/*.test.txt")))
    assert task.split_docs == {"train": 40, "validation": 6, "test": 9}
    assert task.splits["test"] == data["test"]  # in order, never re-split
    assert task.test_bytes == _expected_bytes(data["test"])
    assert task.data_info()["splits"] == "given"


def test_lm_on_an_hf_datasetdict_saved_to_disk_uses_its_splits(tmp_path):
    import datasets  # a declared dependency (task.source=hf)
    data = {"train": _docs("train", 30), "validation": _docs("valid", 4), "test": _docs("test", 7)}
    dd = datasets.DatasetDict({k: datasets.Dataset.from_dict({"text": v}) for k, v in data.items()})
    dd.save_to_disk(str(tmp_path / "dd"))
    task = build_task(task_config("lm", tmp_path, source="hf", hf__name=str(tmp_path / "dd"), splits__train="train",
                                  splits__validation="validation", splits__test="test"))
    assert task.splits["test"] == data["test"] and task.split_docs["train"] == 30
    assert task.test_bytes == _expected_bytes(data["test"])


def test_without_validation_it_is_carved_from_train_and_test_stays_whole(tmp_path):
    data = _wikitext_folder(tmp_path / "wiki", splits=("train", "test"))
    task = build_task(task_config("lm", tmp_path, source="files", valid_frac=0.2,
                                  splits__train=str(tmp_path / "wiki/wiki.train.txt"),
                                  splits__test=str(tmp_path / "wiki/wiki.test.txt")))
    assert task.splits["test"] == data["test"]
    assert task.split_docs["train"] + task.split_docs["validation"] == 40 and task.split_docs["validation"] > 0
    assert task.data_info()["splits"].startswith("given (validation carved")


def test_a_folder_is_every_data_file_in_it(tmp_path):
    (tmp_path / "train").mkdir()
    for i in range(3):
        (tmp_path / "train" / f"part{i}.txt").write_text("\n\n".join(_docs(f"p{i}", 5)), encoding="utf-8")
    (tmp_path / "test.txt").write_text("\n\n".join(_docs("test", 4)), encoding="utf-8")
    task = build_task(task_config("lm", tmp_path, source="files", splits__train=str(tmp_path / "train"),
                                  splits__test=str(tmp_path / "test.txt"), valid_frac=0.1))
    assert task.split_docs["train"] + task.split_docs["validation"] == 15 and task.split_docs["test"] == 4


@pytest.mark.parametrize("splits, message", [
    ({"splits__train": "/nonexistent/train.txt", "splits__test": "/nonexistent/test.txt"}, "does not exist"),
    ({"splits__train": "/nonexistent/*.txt", "splits__test": "/nonexistent/test.txt"}, "matches no file"),
    ({"splits__train": "TRAIN"}, "but not test"),
])
def test_bad_splits_are_one_clear_line(tmp_path, splits, message):
    with pytest.raises(UserError, match=message):
        build_task(task_config("lm", tmp_path, source="files", **splits))


def test_splits_need_a_files_or_hf_source(tmp_path):
    with pytest.raises(UserError, match="task.splits needs task.source=files or hf"):
        build_task(task_config("lm", tmp_path, splits__train="a.txt", splits__test="b.txt"))


def test_mt_reads_fairseq_parallel_files_per_split(tmp_path):
    for split, n in (("train", 30), ("valid", 4), ("test", 5)):
        (tmp_path / f"{split}.en").write_text("\n".join(f"the {split} sentence {i}" for i in range(n)) + "\n")
        (tmp_path / f"{split}.de").write_text("\n".join(f"der {split} satz {i}" for i in range(n)) + "\n")
    task = build_task(task_config("mt", tmp_path, source="files", source_lang="en", target_lang="de",
                                  splits__train=str(tmp_path / "train"), splits__validation=str(tmp_path / "valid"),
                                  splits__test=str(tmp_path / "test")))
    assert task.splits["test"] == [(f"the test sentence {i}", f"der test satz {i}") for i in range(5)]
    assert task.data_info()["splits"] == "given"


def test_mt_reads_hf_translation_dict_columns(tmp_path):
    import datasets  # a declared dependency (task.source=hf)
    rows = {k: [{"en": f"{k} hello {i}", "de": f"{k} hallo {i}"} for i in range(n)]
            for k, n in (("train", 20), ("validation", 3), ("test", 4))}
    datasets.DatasetDict({k: datasets.Dataset.from_dict({"translation": v}) for k, v in rows.items()}) \
        .save_to_disk(str(tmp_path / "wmt"))
    task = build_task(task_config("mt", tmp_path, source="hf", hf__name=str(tmp_path / "wmt"),
                                  columns__source="translation.en", columns__target="translation.de",
                                  splits__train="train", splits__validation="validation", splits__test="test"))
    assert task.splits["test"] == [(r["en"], r["de"]) for r in rows["test"]]


def test_classification_tsv_splits_are_used_as_given(tmp_path):
    def tsv(name, n):
        lines = ["label\ttext"] + [f"{'pos' if i % 2 else 'neg'}\t{name} example {i} " + "x" * (i % 7) for i in range(n)]
        (tmp_path / f"{name}.tsv").write_text("\n".join(lines) + "\n")

    tsv("train", 40)
    tsv("test", 10)
    task = build_task(task_config("classification", tmp_path, source="files", splits__train=str(tmp_path / "train.tsv"),
                                  splits__test=str(tmp_path / "test.tsv"), max_eval_examples=None, valid_frac=0.25))
    assert len(task.splits["test"]) == 10 and len(task.splits["train"]) + len(task.splits["validation"]) == 40


def test_a_run_on_given_splits_records_them_and_the_report_shows_what_was_kept(tmp_path, capsys):
    from harness.report import build_report
    from harness.run import run_one
    from tests.helpers import FAST, compose_conf

    _wikitext_folder(tmp_path / "wiki")
    w = tmp_path / "wiki"
    rec = run_one(compose_conf(*FAST, f"results_dir={tmp_path / 'r'}", "task.source=files", "task.max_bytes=1500",
                               f"task.splits.train={w}/wiki.train.txt", f"task.splits.validation={w}/wiki.valid.txt",
                               f"task.splits.test={w}/wiki.test.txt", "train.max_steps=3")).to_dict()
    assert rec["status"] == "ok", rec["error"]
    assert rec["data"]["splits"] == "given" and rec["data"]["documents_kept_of_given"]["train"][1] == 40
    assert "warning: task lm: task.max_bytes=1500 keeps train" in capsys.readouterr().err
    report = build_report(tmp_path / "r").read_text()
    assert "## Data" in report and "| given |" in report and "train " in report


def test_bert_pretrained_on_mlm_finetunes_on_builtin_classification(tmp_path):
    """The README's pretrain -> finetune path on the builtin data with the default tokenizer: the MLM
    checkpoint's vocabulary (byte + [PAD] [CLS] [SEP] [MASK]) is the classifier's (byte + <pad> <bos>
    <eos> <mask>), so every backbone tensor loads."""
    from harness.run import run_one
    from tests.helpers import compose_conf

    common = ["arch=bert", "size=tiny", "arch.n_layer=1", "arch.d_model=32", "arch.n_head=2", "arch.d_ff=64",
              "train.max_steps=2", "train.batch_size=4", "train.eval_every=0", "train.eval_batches=1",
              "train.progress=false", "report=false", f"results_dir={tmp_path}"]
    pre = run_one(compose_conf(*common, "task=mlm", "train.seq_len=32", "task.max_bytes=20000",
                               "checkpoint=true")).to_dict()
    assert pre["status"] == "ok", pre["error"]
    fine = run_one(compose_conf(*common, "task=classification", "train.seq_len=64", "task.per_language=60",
                                "task.max_eval_examples=40", f"init_from={pre['checkpoint']}")).to_dict()
    assert fine["status"] == "ok", fine["error"]
    assert fine["data"]["vocab_size"] == pre["data"]["vocab_size"] == 260
    loaded = fine["init_from"]
    assert loaded["loaded"] > 0 and not any("emb" in name for name in loaded["not_in_checkpoint"])
