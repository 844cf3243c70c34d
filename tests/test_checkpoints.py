import pytest
import torch

from archbench.errors import UserError
from harness.checkpoints import load_checkpoint, read_checkpoint
from harness.run import run_one
from tests.helpers import FAST, compose_conf


def test_checkpoint_roundtrip_gives_the_same_model(tmp_path):
    rec = run_one(compose_conf(f"results_dir={tmp_path}", *FAST, "checkpoint=true")).to_dict()
    assert rec["status"] == "ok"
    model, payload = load_checkpoint(rec["checkpoint"], expect_arch="gpt")
    assert payload["run_key"] == rec["run_key"] and payload["hparams"]["attention"] == rec["attention_backend"]
    from archbench import build_task

    task = build_task(rec["config"]["task"])
    again = task.evaluate(model, torch.device("cpu"), rec["config"]["train"]["seq_len"])
    assert again["bits_per_byte"] == pytest.approx(rec["metrics"]["bits_per_byte"], rel=1e-6)


def test_missing_or_mismatched_checkpoint_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")
    rec = run_one(compose_conf(f"results_dir={tmp_path}", *FAST, "arch=lstm", "checkpoint=true")).to_dict()
    with pytest.raises(UserError, match="holds a 'lstm' model, but this run's arch is 'gpt'"):
        load_checkpoint(rec["checkpoint"], expect_arch="gpt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be read"):
        read_checkpoint(junk)
