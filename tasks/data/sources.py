"""Examples from local files or from Hugging Face datasets, by column name.

A task names the roles it needs (``text``; ``source``/``target``; ``text``/``label``...) and the config
maps each role to a column (``task.columns.<role>``). Each row comes back as ``{role: text}``.
Every way the user can get this wrong (no such file or column, a line that is not JSON, a dataset
that cannot be reached offline) ends in one UserError line naming the value and the fix.
"""
from __future__ import annotations

import csv
import glob
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from archbench.errors import UserError
from tasks.data.given_splits import SETTING

FILE_FORMATS = (".jsonl", ".tsv", ".txt")
Rows = list[dict[str, str]]


def column_names(cfg: Mapping[str, Any], roles: Sequence[str], task: str) -> dict[str, str]:
    """role -> column name from ``task.columns``, every role set."""
    columns = cfg.get("columns") or {}
    out = {}
    for role in roles:
        col = columns.get(role)
        if not isinstance(col, str) or not col:
            raise UserError(f"task {task} reads column task.columns.{role}, which is not set; "
                            f"set it to the column that holds the {role}")
        out[role] = col
    return out


def read_rows(cfg: Mapping[str, Any], roles: Sequence[str], task: str) -> tuple[Rows, str]:
    """Rows from ``task.source`` = files | hf, and a one-line description of where they came from."""
    columns = column_names(cfg, roles, task)
    if cfg["source"] == "files":
        return read_file_rows(cfg.get("path"), columns, task, cfg.get(SETTING, "task.path"))
    if cfg["source"] == "hf":
        return read_hf_rows(cfg.get("hf") or {}, columns, task)
    raise UserError(f"task {task}: read_rows serves source files or hf, not '{cfg['source']}'")


_MISSING = object()


def _lookup(obj: Mapping[str, Any], column: str) -> Any:
    """obj[column], or for a dotted name a nested field: ``translation.de`` reads obj["translation"]["de"]
    (the layout of HF translation data sets)."""
    if column in obj:
        return obj[column]
    head, dot, rest = column.partition(".")
    if dot and isinstance(obj.get(head), Mapping):
        return _lookup(obj[head], rest)
    return _MISSING


def _as_text(value: Any, where: str, column: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):  # numeric labels
        return str(value)
    kind = "null" if value is None else type(value).__name__
    raise UserError(f"{where}: column '{column}' holds {kind}, expected text")


# ---------------------------------------------------------------------------------------- files

def expand_paths(path: str, what: str = "task.path") -> list[Path]:
    """The data files a path names: a file, a folder (its files of a readable format, recursively,
    sorted) or a glob pattern (sorted matches). Nothing found is a UserError."""
    if any(c in path for c in "*?["):
        files = sorted(Path(m) for m in glob.glob(path, recursive=True) if Path(m).is_file())
        if not files:
            raise UserError(f"{what} '{path}' is a pattern that matches no file")
        return files
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in FILE_FORMATS)
        if not files:
            raise UserError(f"{what} '{path}' is a folder with no {', '.join(FILE_FORMATS)} file in it")
        return files
    if not p.is_file():
        raise UserError(f"{what} '{path}' does not exist; give a file, a folder or a glob pattern")
    return [p]


def read_file_rows(path: str | None, columns: Mapping[str, str], task: str,
                   what: str = "task.path") -> tuple[Rows, str]:
    """Rows of every file ``path`` names (a file, a folder or a glob), in order."""
    if not path:
        raise UserError(f"task.source=files needs {what}=/path/to/data (one of {', '.join(FILE_FORMATS)}, "
                        "a folder of them or a glob)")
    files = expand_paths(str(path), what)
    rows: Rows = []
    for p in files:
        rows += _read_one_file(p, columns, task, what)
    if not rows:
        raise UserError(f"{what} '{path}' holds no examples")
    where = f"files:{files[0].resolve()}" if len(files) == 1 else f"files:{path} ({len(files)} files)"
    return rows, where


def _read_one_file(p: Path, columns: Mapping[str, str], task: str, what: str) -> Rows:
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(p, columns)
    if suffix == ".tsv":
        return _read_tsv(p, columns)
    if suffix == ".txt" and set(columns) == {"text"}:
        return [{"text": d.strip()} for d in _read_text(p).split("\n\n") if d.strip()]  # blank-line documents
    kinds = ".jsonl, .tsv" + (", .txt" if set(columns) == {"text"} else "")
    raise UserError(f"{what} '{p}': task {task} reads {kinds} files, not '{suffix or p.name}'")


def parallel_files(prefix: str, source_lang: str, target_lang: str) -> bool:
    """True when ``prefix.<source_lang>`` and ``prefix.<target_lang>`` exist (fairseq's layout:
    train.en / train.de, one sentence a line, line i of one translating line i of the other)."""
    return Path(f"{prefix}.{source_lang}").is_file() and Path(f"{prefix}.{target_lang}").is_file()


def read_parallel(prefix: str, source_lang: str, target_lang: str) -> tuple[list[tuple[str, str]], str]:
    src = _read_text(Path(f"{prefix}.{source_lang}")).splitlines()
    tgt = _read_text(Path(f"{prefix}.{target_lang}")).splitlines()
    if len(src) != len(tgt):
        raise UserError(f"parallel files {prefix}.{source_lang} ({len(src)} lines) and {prefix}.{target_lang} "
                        f"({len(tgt)} lines) differ in length; line i of one must translate line i of the other")
    return list(zip(src, tgt)), f"files:{Path(prefix).resolve()}.{{{source_lang},{target_lang}}}"


def _read_text(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"task.path '{p}' is not UTF-8 text (byte {e.start})") from None


def _read_jsonl(p: Path, columns: Mapping[str, str]) -> Rows:
    rows: Rows = []
    for lineno, line in enumerate(_read_text(p).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{p}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); "
                            "a .jsonl file holds one JSON object per line") from None
        if not isinstance(obj, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        row = {}
        for role, col in columns.items():
            value = _lookup(obj, col)
            if value is _MISSING:
                raise UserError(f"{where}: no column '{col}' (task.columns.{role}); "
                                f"this line has: {', '.join(map(str, obj)) or 'nothing'}")
            row[role] = _as_text(value, where, col)
        rows.append(row)
    return rows


def _read_tsv(p: Path, columns: Mapping[str, str]) -> Rows:
    lines = _read_text(p).splitlines()
    if not lines:
        return []
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader)
    missing = [(role, col) for role, col in columns.items() if col not in header]
    if missing:
        role, col = missing[0]
        raise UserError(f"{p}: no column '{col}' (task.columns.{role}); the header has: {', '.join(header)}")
    index = {role: header.index(col) for role, col in columns.items()}
    rows: Rows = []
    for lineno, fields in enumerate(reader, start=2):
        if not fields:
            continue
        if len(fields) != len(header):
            raise UserError(f"{p}:{lineno}: {len(fields)} tab-separated fields, the header has {len(header)}")
        rows.append({role: fields[i] for role, i in index.items()})
    return rows


# ------------------------------------------------------------------------------ Hugging Face

def read_hf_rows(hf: Mapping[str, Any], columns: Mapping[str, str], task: str) -> tuple[Rows, str]:
    """``datasets.load_dataset(name, config, split=split)``, or ``load_from_disk`` for a folder written
    by ``save_to_disk``. The rows are split by hash afterwards like every other source."""
    name = hf.get("name")
    if not name:
        raise UserError("task.source=hf needs task.hf.name=<dataset on the hub, or a local dataset folder>")
    config, split = hf.get("config"), hf.get("split") or "train"
    ds = _load_hf(str(name), config, str(split))
    missing = [(role, col) for role, col in columns.items() if col.split(".")[0] not in ds.column_names]
    if missing:
        role, col = missing[0]
        raise UserError(f"hf dataset '{name}' has no column '{col}' (task.columns.{role}); "
                        f"its columns: {', '.join(ds.column_names)}")
    data = {}
    for role, col in columns.items():
        head = col.split(".")[0]
        feature, values = ds.features[head], ds[head]
        if col != head:  # a field of a dict column, e.g. translation.de
            values = [_lookup(v, col[len(head) + 1:]) if isinstance(v, Mapping) else _MISSING for v in values]
            if any(v is _MISSING for v in values):
                raise UserError(f"hf dataset '{name}': column '{head}' has no field '{col[len(head) + 1:]}' "
                                f"(task.columns.{role})")
        elif hasattr(feature, "int2str"):  # ClassLabel: keep the label's name, not its index
            values = [feature.int2str(v) for v in values]
        data[role] = [_as_text(v, f"hf dataset '{name}' row {i}", col) for i, v in enumerate(values)]
    rows = [dict(zip(data, vals)) for vals in zip(*data.values())]
    if not rows:
        raise UserError(f"hf dataset '{name}' split '{split}' holds no rows")
    return rows, f"hf:{name}" + (f"/{config}" if config else "") + f":{split}"


def _load_hf(name: str, config: str | None, split: str):
    import datasets  # lazy: only the hf source needs it

    folder = Path(name)
    try:
        if folder.is_dir() and ((folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file()):
            ds = datasets.load_from_disk(str(folder))
            if isinstance(ds, datasets.DatasetDict):
                parts = split.split("+")
                unknown = [s for s in parts if s not in ds]
                if unknown:
                    raise UserError(f"hf dataset folder '{name}' has no split '{unknown[0]}'; "
                                    f"its splits: {', '.join(ds)}")
                ds = datasets.concatenate_datasets([ds[s] for s in parts])
            return ds
        return datasets.load_dataset(name, config, split=split)
    except UserError:
        raise
    except Exception as e:  # hub unreachable, unknown name/config/split: all the user's to fix
        first = (str(e).strip().splitlines() or [""])[0]
        raise UserError(f"hf dataset '{name}'" + (f" config '{config}'" if config else "") + f" split '{split}' "
                        f"could not be loaded ({type(e).__name__}: {first}); offline only a local cache or a "
                        "folder written by Dataset.save_to_disk works, or use task.source=files") from None
