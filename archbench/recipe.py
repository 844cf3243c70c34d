"""A training recipe: the optimizer and schedule settings a size preset was trained (or tuned) with.

An arch attaches one ``Recipe`` per size preset (``register_arch(..., recipes={size: Recipe})``),
next to the preset it belongs to, with its provenance in ``source``. The engine fills every
``train.*`` key the user and the study leave null from the preset's recipe, then from the engine's
defaults (harness/recipes.py), and records where each value came from. A field left ``None`` here
means "this recipe says nothing about it" (the engine default applies).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

SCHEDULES = ("cosine", "inverse_sqrt")  # linear warmup, then cosine decay | Vaswani et al. (2017) eq. 3
# the train.* keys a recipe may set (betas as a two-element list in the config)
RECIPE_KEYS = ("lr", "schedule", "warmup_steps", "min_lr_ratio", "batch_size", "seq_len", "weight_decay",
               "betas", "grad_clip")


@dataclass(frozen=True)
class Recipe:
    source: str  # where the values come from: a paper and table, or "tuned by study=tune on ..."
    lr: float | None = None  # peak learning rate
    schedule: str | None = None  # one of SCHEDULES
    warmup_steps: int | None = None
    min_lr_ratio: float | None = None  # cosine floor as a fraction of the peak
    batch_size: int | None = None  # sequences per step
    seq_len: int | None = None  # tokens per sequence (batch in tokens = batch_size x seq_len)
    weight_decay: float | None = None
    betas: tuple[float, float] | None = None
    grad_clip: float | None = None
    published_batch_tokens: int | None = None  # the paper's batch in tokens, when it is not what runs here

    def __post_init__(self):
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ValueError(f"recipe schedule {self.schedule!r} not in {SCHEDULES}")

    def values(self) -> dict[str, Any]:
        """The train.* values this recipe sets (its None fields left out)."""
        out = {k: getattr(self, k) for k in RECIPE_KEYS if getattr(self, k) is not None}
        if "betas" in out:
            out["betas"] = list(out["betas"])
        return out

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def tuned(protocol: str, lr: float, validation_loss: float, **values: Any) -> Recipe:
    """A size preset's recipe whose lr the harness picked itself with ``study=tune`` (``protocol``:
    on what data, at what budget, over which grid); ``values``: the recipe's other settings."""
    return Recipe(source=f"tuned by study=tune on {protocol}: lr {lr:g}, validation loss {validation_loss}",
                  lr=lr, **values)
