import json
import os

import pytest

from harness import records
from harness.run import run_one
from tests.helpers import FAST, compose_conf


def _record(key="k1", status="ok"):
    rec = {f: None for f in records.REQUIRED_FIELDS}
    rec.update(schema_version=1, run_key=key, status=status, metrics={}, budget={}, throughput={}, data={}, env={},
               overrides=[], config={})
    return rec


def test_run_key_ignores_where_and_how_loudly_but_not_what():
    a = compose_conf(f"results_dir=/tmp/a")
    b = compose_conf(f"results_dir=/tmp/b", "force=true", "train.progress=false", "report=false")
    c = compose_conf("seed=1")
    assert records.run_key(a) == records.run_key(b)
    assert records.run_key(a) != records.run_key(c)


def test_write_then_read_roundtrip(tmp_path):
    path = records.write_record(tmp_path, _record())
    assert path == tmp_path / "runs" / "k1.json"
    assert records.read_record(path)["status"] == "ok"
    assert [r["run_key"] for r in records.iter_records(tmp_path)] == ["k1"]


def test_interrupted_write_leaves_no_record_and_no_temp_file(tmp_path, monkeypatch):
    def interrupted(src, dst):
        raise KeyboardInterrupt  # killed between writing the temp file and the rename

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        records.write_record(tmp_path, _record())
    assert list((tmp_path / "runs").iterdir()) == []


def test_interrupted_overwrite_keeps_the_old_record_whole(tmp_path, monkeypatch):
    records.write_record(tmp_path, _record(status="failed"))
    monkeypatch.setattr(os, "replace", lambda s, d: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError):
        records.write_record(tmp_path, _record(status="ok"))
    assert json.loads((tmp_path / "runs" / "k1.json").read_text())["status"] == "failed"


def test_schema_is_enforced(tmp_path):
    bad = _record()
    del bad["metrics"]
    with pytest.raises(ValueError, match="lacks fields"):
        records.write_record(tmp_path, bad)
    with pytest.raises(ValueError, match="status"):
        records.write_record(tmp_path, _record(status="great"))


def test_record_has_every_contract_field(tmp_path):
    conf = compose_conf(f"results_dir={tmp_path}", *FAST)
    rec = run_one(conf)
    assert rec["status"] == "ok", rec["error"]
    for field in records.REQUIRED_FIELDS:
        assert field in rec
    assert len(rec["data"]["fingerprint"]) == 64
    assert rec["params"] > 0 and rec["flops_per_token"] > 0
    assert rec["tokens_seen"] == 12 * 4 * 32
    assert set(rec["throughput"]) >= {"tokens_per_s", "mfu", "peak_mem_bytes"}
    assert rec["env"]["torch"] and rec["env"]["threads"] >= 1 and "dirty" in rec["env"]["git"]
    assert rec["metrics"]["bits_per_byte"] > 0


def test_rerun_skips_an_ok_record_unless_forced(tmp_path, capsys):
    conf = compose_conf(f"results_dir={tmp_path}", *FAST, "arch=lstm")
    first = run_one(conf)
    capsys.readouterr()
    again = run_one(conf)
    out = capsys.readouterr().out
    assert again["created_at"] == first["created_at"]
    assert out.count("\n") == 1 and out.startswith("skip lstm/tiny") and "force=true" in out
    forced = run_one({**conf, "force": True})
    assert forced["created_at"] >= first["created_at"] and not capsys.readouterr().out.startswith("skip ")


def test_nan_loss_ends_the_run_as_diverged(tmp_path, monkeypatch):
    import torch

    from tasks.lm import LanguageModeling

    real_loss = LanguageModeling.loss

    def loss_nan_at_step_3(self, model, batch, device):
        loss, n = real_loss(self, model, batch, device)
        if loss.device.type == "meta":  # the memory planner's dry run
            return loss, n
        self._calls = getattr(self, "_calls", 0) + 1
        return (loss * torch.tensor(float("nan")) if self._calls == 3 else loss), n

    monkeypatch.setattr(LanguageModeling, "loss", loss_nan_at_step_3)
    rec = run_one(compose_conf(f"results_dir={tmp_path}", *FAST))
    assert rec["status"] == "diverged"
    assert "nan" in rec["error"] and rec["steps"] == 2
    assert records.read_record(tmp_path / "runs" / f"{rec['run_key']}.json")["status"] == "diverged"


def test_threads_key_sets_torch_threads_and_the_record_says_so(tmp_path):
    import torch

    before = torch.get_num_threads()
    want = 2 if before != 2 else 1
    try:
        rec = run_one(compose_conf(f"results_dir={tmp_path}", *FAST, f"threads={want}"))
        assert rec["status"] == "ok" and rec["env"]["threads"] == want
    finally:
        torch.set_num_threads(before)
