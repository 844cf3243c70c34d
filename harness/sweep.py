"""Entry point: ``python -m harness.sweep [overrides]`` runs one job, or a Hydra multirun with -m or a
study preset (``study=compare``), then rebuilds the report from the records on disk.

Before Hydra starts, every job of the sweep is composed and checked (keys, group choices, sizes,
types, a writable results folder), so a mistake ends in one line and exit 2, before any run or
record. Aggregation reads the records afterwards rather than trusting Hydra's multirun callbacks,
which are skipped when a job fails.
"""
from __future__ import annotations

import itertools
import sys
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from archbench.errors import UserError, fail
from archbench.record import read_record, record_path, run_key
from harness import plugins, tune
from harness.config import compose, compose_dict, group_options, validate  # noqa: F401  (group_options: public)

# Hydra's own flags: with these the user asks Hydra about the config, no job runs.
INFO_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc",
              "--resolve", "--version"}
MULTIRUN_FLAGS = {"-m", "--multirun"}
MAX_PREFLIGHT_JOBS = 512

_state: dict[str, Any] = {"results_dirs": set(), "user_errors": []}


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
    return [plain + list(c) for c in combos] or [plain]


def preflight(args: list[str], multirun: bool) -> list[dict]:
    """Compose and validate every job; returns their resolved configs."""
    plugins.load_from_overrides(args)  # before composing: a plug-in may add an arch or task
    jobs = _jobs(args)
    multirun = multirun or len(jobs) > 1
    confs = []
    for overrides in jobs:
        conf = compose_dict(overrides)
        validate(conf, check_kind=not multirun)
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
        sys.argv = [sys.argv[0], *args]
        for v in _state.values():
            v.clear()
        _hydra_job()
    except UserError as e:
        fail(str(e))
    dirs = _state["results_dirs"] or {confs[0]["results_dir"]}
    if tune.MARK in overrides:  # the tuning protocol: pick each arch's lr for the next studies
        for d in sorted(dirs):
            tune.write_tuned(d)
    if confs[0]["report"]:
        from harness.report import build_report

        for d in sorted(dirs):
            path = build_report(d)
            print(f"report: {path}")
    if _state["user_errors"]:
        return UserError.exit_code
    # read outcomes from disk: with a process-pool launcher (joblib, submitit) jobs share no memory
    records = [read_record(record_path(c["results_dir"], run_key(c))) for c in confs]
    statuses = [r.status if r else None for r in records]
    return 1 if "failed" in statuses or None in statuses else 0


if __name__ == "__main__":
    sys.exit(main())
