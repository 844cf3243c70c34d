import dataclasses
import json
import os

import pytest

from archbench import record as records
from harness.run import run_one
from tests.helpers import FAST, ROOT, compose_conf

GOLDEN = ROOT / "tests" / "data" / "golden"


def _record(key="k1", status="ok"):
    return records.RunRecord(run_key=key, status=status, arch="gpt", size="tiny", task="lm", seed=0)


def test_run_key_ignores_where_and_how_loudly_but_not_what():
    a = compose_conf(f"results_dir=/tmp/a")
    b = compose_conf(f"results_dir=/tmp/b", "force=true", "train.progress=false", "report=false")
    c = compose_conf("seed=1")
    assert records.run_key(a) == records.run_key(b)
    assert records.run_key(a) != records.run_key(c)


def test_write_then_read_roundtrip(tmp_path):
    rec = _record()
    rec.throughput.tokens_per_s = 123.5
    rec.data = records.DataInfo(source="builtin", fingerprint="f" * 64, details={"documents": {"test": 3}})
    path = records.write_record(tmp_path, rec)
    assert path == tmp_path / "runs" / "k1.json"
    back = records.read_record(path)
    assert back == rec  # every typed part survives JSON
    assert json.loads(path.read_text())["data"]["documents"] == {"test": 3}  # task keys sit beside the named ones
    assert [r.run_key for r in records.iter_records(tmp_path)] == ["k1"]


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
    with pytest.raises(ValueError, match="status"):
        records.write_record(tmp_path, _record(status="great"))
    with pytest.raises(ValueError, match="run_key"):
        records.write_record(tmp_path, _record(key=""))
    newer = _record().to_dict() | {"schema_version": records.SCHEMA_VERSION + 1}
    with pytest.raises(ValueError, match="newer"):
        records.RunRecord.from_dict(newer)


@pytest.mark.parametrize("name", ["gpt_tiny_lm_v1", "ngram_tiny_lm_v1"])
def test_schema_1_records_are_read_and_upgraded(name):
    old = json.loads((GOLDEN / f"{name}.json").read_text())
    assert old["schema_version"] == 1
    rec = records.RunRecord.from_dict(old)
    assert rec.schema_version == records.SCHEMA_VERSION
    assert rec.budget.given == {k: old["budget"][k] for k in ("steps", "tokens", "flops", "seconds")}
    assert rec.budget.consumed.tokens == old["budget"]["consumed"]["tokens"] == old["tokens_seen"]
    assert rec.metrics == old["metrics"] and rec.throughput.tokens_per_s == old["throughput"]["tokens_per_s"]
    assert rec.data.fingerprint == old["data"]["fingerprint"] and rec.env.git == old["env"]["git"]


def test_record_has_every_contract_field(tmp_path):
    conf = compose_conf(f"results_dir={tmp_path}", *FAST)
    rec = run_one(conf).to_dict()
    assert rec["status"] == "ok", rec["error"]
    assert set(rec) == {f.name for f in dataclasses.fields(records.RunRecord)}
    assert len(rec["data"]["fingerprint"]) == 64
    assert rec["params"] > 0 and rec["flops_per_token"] > 0
    assert rec["tokens_seen"] == 12 * 4 * 32
    assert set(rec["throughput"]) >= {"tokens_per_s", "mfu", "peak_mem_bytes"}
    assert rec["env"]["torch"] and rec["env"]["threads"] >= 1 and "dirty" in rec["env"]["git"]
    assert rec["metrics"]["bits_per_byte"] > 0


def test_rerun_skips_an_ok_record_unless_forced(tmp_path, capsys):
    conf = compose_conf(f"results_dir={tmp_path}", *FAST, "arch=lstm")
    first = run_one(conf).to_dict()
    capsys.readouterr()
    again = run_one(conf).to_dict()
    out = capsys.readouterr().out
    assert again["created_at"] == first["created_at"]
    assert out.count("\n") == 1 and out.startswith("skip lstm/tiny") and "force=true" in out
    forced = run_one({**conf, "force": True}).to_dict()
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
    rec = run_one(compose_conf(f"results_dir={tmp_path}", *FAST)).to_dict()
    assert rec["status"] == "diverged"
    assert "nan" in rec["error"] and rec["steps"] == 2
    assert records.read_record(tmp_path / "runs" / f"{rec['run_key']}.json").status == "diverged"


def test_threads_key_sets_torch_threads_and_the_record_says_so(tmp_path):
    import torch

    before = torch.get_num_threads()
    want = 2 if before != 2 else 1
    try:
        rec = run_one(compose_conf(f"results_dir={tmp_path}", *FAST, f"threads={want}")).to_dict()
        assert rec["status"] == "ok" and rec["env"]["threads"] == want
    finally:
        torch.set_num_threads(before)


GOLDEN_OVERRIDES = ["threads=1", "train.max_steps=12", "train.batch_size=4", "train.seq_len=32", "train.eval_every=6",
                    "train.eval_batches=1", "train.warmup_steps=2", "train.progress=false", "task.max_bytes=60000",
                    "report=false"]


@pytest.mark.parametrize("name", ["gpt_tiny_lm_v1", "ngram_tiny_lm_v1"])
def test_same_config_and_seed_give_the_golden_numbers(tmp_path, name):
    """Records written before the API-floor redesign (schema 1) hold the numbers this code must
    still produce for the same config and seed: metrics, learning curve, params, tokens."""
    old = json.loads((GOLDEN / f"{name}.json").read_text())
    # the settings in force when the golden records were written (before recipes and RoPE for tiny)
    then = ["arch.positions=learned", "train.lr=3e-3"] if old["arch"] == "gpt" else []
    rec = run_one(compose_conf(f"arch={old['arch']}", *GOLDEN_OVERRIDES, *then,
                               f"results_dir={tmp_path}")).to_dict()
    assert rec["status"] == "ok", rec["error"]
    assert (rec["params"], rec["tokens_seen"], rec["flops_per_token"]) == \
        (old["params"], old["tokens_seen"], old["flops_per_token"])
    assert rec["data"]["fingerprint"] == old["data"]["fingerprint"]
    for key, value in old["metrics"].items():
        assert rec["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert [p["step"] for p in rec["curve"]] == [p["step"] for p in old["curve"]]
    for new_point, old_point in zip(rec["curve"], old["curve"]):
        assert new_point["val_loss"] == pytest.approx(old_point["val_loss"], rel=1e-6)
