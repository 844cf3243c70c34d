"""Machine translation: message pairs translated with the shared search, scored with sacrebleu.

Builtin data: the system's gettext catalogs (English -> German by default; any two languages with
catalogs, English being the catalogs' message ids). Pairs are split by source sentence, so a test
source never appears in training; pairs longer than the byte caps are left out, not cut (a cut
translation no longer matches its source). Reference row: copy-source (the output is the input),
the score a model gets for learning nothing but copying; placeholders and names make it non-zero.
"""
from __future__ import annotations

from typing import Any, Mapping

from archbench import register_task
from archbench.errors import UserError
from tasks.data.examples import positive_int_or_none
from tasks.data.given_splits import warn
from tasks.data.gettext_catalogs import translation_pairs
from tasks.data.sources import parallel_files, read_parallel, read_rows
from tasks.scoring.metrics import translation_scores
from tasks.seq2seq import Seq2SeqTask

SOURCES = ("builtin", "hf", "files")


def _pairs(cfg: Mapping[str, Any]) -> tuple[list[tuple[str, str]], str, dict]:
    source = cfg["source"]
    if source == "builtin":
        pairs, info = translation_pairs(str(cfg["locale_dir"]), str(cfg["source_lang"]), str(cfg["target_lang"]))
        return pairs, f"builtin:gettext-catalogs {info['pair']}", info
    if source == "files" and cfg.get("path") and parallel_files(str(cfg["path"]), cfg["source_lang"], cfg["target_lang"]):
        pairs, where = read_parallel(str(cfg["path"]), str(cfg["source_lang"]), str(cfg["target_lang"]))
        return pairs, where, {}
    if source in ("hf", "files"):
        rows, where = read_rows(cfg, ("source", "target"), "mt")
        return [(r["source"], r["target"]) for r in rows], where, {}
    raise UserError(f"unknown task.source '{source}' for task mt; valid: {', '.join(SOURCES)}")


@register_task("mt")
class Translation(Seq2SeqTask):
    name = "mt"
    primary_metric = "bleu"
    lower_is_better = False

    def __init__(self, cfg: Mapping[str, Any]):
        max_src = positive_int_or_none(cfg, "max_source_bytes")
        max_tgt = positive_int_or_none(cfg, "max_target_bytes")
        info = {"pairs_read": 0, "pairs_within_caps": 0}

        def read(c):
            pairs, source, extra = _pairs(c)
            kept = [(s, t) for s, t in pairs if s.strip() and t.strip()
                    and (max_src is None or len(s.encode("utf-8")) <= max_src)
                    and (max_tgt is None or len(t.encode("utf-8")) <= max_tgt)]
            if not kept:
                raise UserError(f"task mt: none of the {len(pairs)} pairs from {source} is within "
                                f"task.max_source_bytes={max_src} / task.max_target_bytes={max_tgt}")
            if len(kept) < len(pairs):
                warn(f"task mt: {len(pairs) - len(kept):,} of {len(pairs):,} pairs from {source} are empty or over "
                     f"task.max_source_bytes={max_src} / task.max_target_bytes={max_tgt} and were dropped")
            info.update(extra)
            info["pairs_read"] += len(pairs)
            info["pairs_within_caps"] += len(kept)
            return kept, source

        super().__init__(cfg, read, info)

    def score(self, hypotheses, references, sources):
        return translation_scores(hypotheses, references)

    def reference_rows(self):
        sources = [s for s, _ in self.splits["test"]]
        references = [t for _, t in self.splits["test"]]
        return {"copy-source": {"metrics": translation_scores(sources, references),
                                "about": "the source sentence given as its own translation (no training)"}}
