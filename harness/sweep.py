"""Entry point: ``python -m harness.sweep [overrides]`` runs one job, or a Hydra multirun with -m or a
study preset (``study=compare``), then rebuilds the report from the records on disk.

Before Hydra starts, every job of the sweep is composed and checked (keys, group choices, sizes,
types, a writable results folder), so a mistake ends in one line and exit 2, before any run or
record. Aggregation reads the records afterwards rather than trusting Hydra's multirun callbacks,
which are skipped when a job fails.
"""
from __future__ import annotations

import datetime as _dt
import itertools
import os
import secrets
import sys
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from archbench.errors import UserError, fail
from archbench.files import remove_orphans
from archbench.record import iter_records, read_record, record_path, runs_dir
from harness import plugins
from harness.distributed import env_rank
from harness.resume import Interrupted
from harness import tune
from harness.config import compose, compose_dict, group_options, validate  # noqa: F401  (group_options: public)
from harness.identity import key_of
from harness.overrides import check_override_keys

# Hydra's own flags: with these the user asks Hydra about the config, no job runs.
INFO_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc",
              "--resolve", "--version"}
MULTIRUN_FLAGS = {"-m", "--multirun"}
MAX_PREFLIGHT_JOBS = 512
SWEEP_ID_ENV = "ARCHBENCH_SWEEP_ID"  # names this sweep's Hydra folder (sweeps/config.yaml hydra.*.dir)
FAILED_EXIT = 3  # some run diverged or failed (or left no record); the report is still built
DONE = ("ok", "planned", "skipped")

_state: dict[str, Any] = {"results_dirs": set(), "user_errors": [], "interrupted": []}


def _jobs(args: list[str]) -> list[list[str]]:
    """Every job's override list, expanding command-line sweeps and a study's sweeper params."""
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides=args)
    except OverrideParseException as e:
        raise UserError(f"cannot parse overrides: {' '.join(str(e).split())}") from None
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    sweeps = {o.get_key_element(): [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
              for o in parsed if o.is_sweep_override()}
    base = compose([o for o in fixed if not o.startswith("hydra")], hydra_cfg=True)
    params = OmegaConf.select(base, "hydra.sweeper.params") or {}
    for key, value in params.items():
        if key in sweeps or any(o.input_line.split("=")[0].lstrip("+~") == key for o in parsed):
            continue  # the command line wins over the study file
        ov = parser.parse_override(f"{key}={value}")
        sweeps[key] = ([f"{key}={v}" for v in ov.sweep_string_iterator()] if ov.is_sweep_override()
                       else [f"{key}={value}"])
    combos = list(itertools.islice(itertools.product(*sweeps.values()), MAX_PREFLIGHT_JOBS))
    plain = [o for o in fixed if not o.startswith("hydra")]
    launcher = base if not any(o.startswith("hydra/launcher") for o in fixed) else \
        compose([o for o in fixed if not o.startswith("hydra.")], hydra_cfg=True)
    _state["remote"] = str(OmegaConf.select(launcher, "hydra.launcher._target_") or "").endswith(".SlurmLauncher")
    return [plain + list(c) for c in combos] or [plain]


def preflight(args: list[str], multirun: bool) -> list[dict]:
    """Compose and validate every job; returns their resolved configs."""
    plugins.load_from_overrides(args)  # before composing: a plug-in may add an arch or task
    check_override_keys(args)
    jobs = _jobs(args)
    multirun = multirun or len(jobs) > 1
    confs = []
    for overrides in jobs:
        conf = compose_dict(overrides)
        # a job that runs on Slurm checks its device there, not on the login node that submits it
        validate(conf, check_kind=not multirun, local=not _state.get("remote"))
        confs.append(conf)
    return confs


@hydra.main(version_base="1.3", config_path="pkg://sweeps", config_name="config")
def _hydra_job(cfg: DictConfig) -> None:
    from harness.run import run_one

    conf = OmegaConf.to_container(cfg, resolve=True)
    try:
        hc = HydraConfig.get()
        overrides = list(hc.overrides.task)
        single = hc.mode.name == "RUN"
    except ValueError:
        overrides, single = [], True
    _state["results_dirs"].add(conf["results_dir"])
    try:
        run_one(conf, overrides, single=single)
    except UserError as e:  # found only once the job reads its data: no record, one line
        print(f"error: {e}", file=sys.stderr)
        _state["user_errors"].append(str(e))
    except Interrupted as e:  # SIGTERM/SIGUSR1: a checkpoint was saved; a rerun resumes from it
        print(str(e), file=sys.stderr)
        _state["interrupted"].append(e.signum)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in INFO_FLAGS or a.split("=")[0] in INFO_FLAGS for a in args):
        sys.argv = [sys.argv[0], *args]
        _hydra_job()
        return 0
    multirun = any(a in MULTIRUN_FLAGS for a in args)
    overrides = [a for a in args if a not in MULTIRUN_FLAGS]
    try:
        confs = preflight(overrides, multirun)
        tidy(sorted({c["results_dir"] for c in confs}))
        # time + a random id: two sweeps started in the same second get their own Hydra folders
        os.environ[SWEEP_ID_ENV] = f"{_dt.datetime.now():%Y-%m-%d_%H-%M-%S}_{secrets.token_hex(3)}"
        sys.argv = [sys.argv[0], *args]
        for k in ("results_dirs", "user_errors", "interrupted"):
            _state[k].clear()
        _hydra_job()
    except UserError as e:
        fail(str(e))
    if _state["interrupted"]:
        return 128 + _state["interrupted"][0]  # the shell's convention for "ended by this signal"
    dirs = _state["results_dirs"] or {confs[0]["results_dir"]}
    if tune.MARK in overrides and env_rank() == 0:  # the tuning protocol: pick each arch's lr for the next studies
        for d in sorted(dirs):
            tune.write_tuned(d)
    if confs[0]["report"] and env_rank() == 0:
        from harness.report import build_report

        for d in sorted(dirs):
            path = build_report(d)
            print(f"report: {path}")
    if _state["user_errors"]:
        return UserError.exit_code
    if env_rank() != 0:  # rank 0 writes the records and reports the outcome
        return 0
    # read outcomes from disk: with a process-pool launcher (joblib, submitit) jobs share no memory
    records = [read_record(record_path(c["results_dir"], key_of(c))) for c in confs]
    statuses = [r.status if r else None for r in records]
    bad = [s or "no record" for s in statuses if s not in DONE]
    if bad:
        print(f"{len(bad)} of {len(statuses)} runs did not finish ok ({', '.join(sorted(set(bad)))}); exit {FAILED_EXIT}",
              file=sys.stderr)
        return FAILED_EXIT
    return 0


def tidy(results_dirs: list[str]) -> None:
    """Before any run: remove the temp files of killed writers, quarantine files that are not records."""
    for d in results_dirs:
        remove_orphans(d, runs_dir(d), runs_dir(d) / "superseded", *(os.path.join(d, sub) for sub in
                       ("checkpoints", "lmeval_tasks", ".cache")))
        list(iter_records(d))  # reading every record moves the files that are not one to runs/quarantine/


if __name__ == "__main__":
    sys.exit(main())
