"""Every supported arch x task cell of the capability matrix runs end to end at tiny size, through the
one run path (harness.run.run_one), on small slices of each task's data."""
import math

import pytest

from harness.report.capabilities import capability_matrix
from harness.run import run_one
from harness.config import compose as _compose_cfg
from omegaconf import OmegaConf

SMALL_DATA = {
    "lm": ["task.source=synthetic-hmm", "task.hmm.total_bytes=20000"],
    "mt": ["task.max_train_examples=200", "task.max_eval_examples=4", "task.decode.max_len_a=0.5"],
    "classification": ["task.languages=[de,fr]", "task.per_language=80", "task.max_eval_examples=8"],
    "summarization": ["task.max_train_examples=200", "task.max_eval_examples=3", "task.decode.max_len_b=16"],
    "mlm": ["task.max_bytes=60000"],
}
# arch=hf has no model until arch.path names one: tests/test_arch_hf.py runs it on a tiny saved model
CELLS = [(r.arch, r.task) for r in capability_matrix().itertuples() if r.supported and r.arch != "hf"]


@pytest.mark.parametrize("arch,task", CELLS)
def test_supported_cell_trains_and_evaluates(arch, task, tmp_path):
    overrides = [f"arch={arch}", f"task={task}", f"results_dir={tmp_path}", "report=false", "train.max_steps=2",
                 "train.batch_size=4", "train.seq_len=32", "train.warmup_steps=1", "train.eval_every=0",
                 "train.eval_batches=1", "train.progress=false", *SMALL_DATA[task]]
    conf = OmegaConf.to_container(_compose_cfg(overrides), resolve=True)
    rec = run_one(conf, overrides).to_dict()
    assert rec["status"] == "ok", rec.get("traceback") or rec["error"]
    assert math.isfinite(rec["metrics"][rec["primary_metric"]])
    assert len(rec["data"]["fingerprint"]) == 64
