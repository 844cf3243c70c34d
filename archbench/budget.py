"""One training budget: the limits a run is given, what a FLOP budget buys, and what was consumed.

The user's names are ``budget.tokens``, ``budget.flops``, ``budget.seconds`` and ``train.max_steps``
(``train.max_tokens`` / ``train.max_seconds`` are the engine's spellings of the first and third and
must agree with them). A run stops at the first limit it reaches. A FLOP budget becomes a token
limit per run with the arch's own FLOPs per token, ``floor(budget.flops / flops_per_token)``, so an
equal-FLOP comparison gives each arch the tokens it can afford. Gradient-trained and fitted models
read their limits from this one object.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from archbench.errors import UserError
from archbench.record import BudgetRecord, Consumed

FLOPS_FORMULA = "floor(budget.flops / flops_per_token(seq_len))"
# train.<engine name> that mirrors budget.<user name>: both may be set only to the same value
MIRRORS = {"tokens": "max_tokens", "seconds": "max_seconds"}
TYPES = {"tokens": int, "flops": float, "seconds": float}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Budget:
    steps: int | None = None
    tokens: int | None = None
    flops: float | None = None
    seconds: float | None = None
    tokens_from_flops: int | None = None  # set by for_model(): what the FLOP budget buys this arch

    @classmethod
    def from_config(cls, conf: Mapping[str, Any]) -> "Budget":
        """The budget of a composed run config; a bad or missing budget is a UserError."""
        user, train = conf.get("budget") or {}, conf["train"]
        for k, typ in TYPES.items():
            v = user.get(k)
            if v is None:
                continue
            if not (_is_int(v) if typ is int else _is_number(v)) or v <= 0:
                raise UserError(f"budget.{k} must be a positive {'integer' if typ is int else 'number'} or null, "
                                f"got {v!r}")
        for k, mirror in MIRRORS.items():
            a, b = user.get(k), train.get(mirror)
            if a is not None and b is not None and a != b:
                raise UserError(f"budget.{k}={a!r} and train.{mirror}={b!r} disagree; set only budget.{k} "
                                f"(train.{mirror} follows it)")
        for k, typ in (("max_steps", int), ("max_tokens", int), ("max_seconds", float)):
            v = train.get(k)
            if v is not None and (not (_is_int(v) if typ is int else _is_number(v)) or v <= 0):
                kind = "a positive integer" if typ is int else "a positive number"
                hint = "; to evaluate without training use train.mode=eval" if v == 0 else ""
                raise UserError(f"train.{k} must be {kind} or null, got {v!r}{hint}")
        budget = cls(steps=train.get("max_steps"), tokens=user.get("tokens") or train.get("max_tokens"),
                     flops=user.get("flops"), seconds=user.get("seconds") or train.get("max_seconds"))
        if budget.steps is None and budget.tokens is None and budget.seconds is None and budget.flops is None:
            raise UserError("no training budget: set at least one of budget.tokens, budget.flops, budget.seconds, "
                            "train.max_steps")
        return budget

    def for_model(self, flops_per_token: float | None) -> "Budget":
        """This budget with the FLOP limit turned into tokens for a model of this FLOPs per token."""
        if not self.flops:
            return self
        if not flops_per_token:
            raise UserError("budget.flops needs the arch's flops_per_token, which this model does not state; "
                            "use budget.tokens or budget.seconds")
        return dataclasses.replace(self, tokens_from_flops=max(1, int(self.flops // flops_per_token)))

    @property
    def token_limit(self) -> int | None:
        """The tighter of budget.tokens and what the FLOP budget buys (None: no token limit)."""
        limits = [int(t) for t in (self.tokens, self.tokens_from_flops) if t]
        return min(limits) if limits else None

    def horizon(self, tokens_per_step: int) -> tuple[int | None, str]:
        """The schedule's length in steps and the limit that sets it: max_steps, or the steps the
        token limit allows, whichever is fewer; (None, "max_seconds") with only a time limit."""
        limits = []
        if self.steps:
            limits.append((int(self.steps), "max_steps"))
        if self.token_limit:
            limits.append((math.ceil(self.token_limit / tokens_per_step), "max_tokens"))
        return min(limits) if limits else (None, "max_seconds")

    def fit_tokens(self, tokens_per_step: int) -> int | None:
        """Tokens a fitted model may read: the token limit, or max_steps x tokens_per_step (the
        tokens a gradient run with this budget processes), the smaller when both are set."""
        limits = [t for t in (self.token_limit, self.steps and int(self.steps) * tokens_per_step) if t]
        return min(limits) if limits else None

    def given(self) -> dict[str, Any]:
        return {"steps": self.steps, "tokens": self.tokens, "flops": self.flops, "seconds": self.seconds}

    def record(self, consumed: Consumed | None = None) -> BudgetRecord:
        return BudgetRecord(given=self.given(), token_limit=self.token_limit,
                            tokens_from_flops=self.tokens_from_flops,
                            tokens_from_flops_formula=FLOPS_FORMULA if self.tokens_from_flops else None,
                            consumed=consumed)


def consumed(steps: int, tokens: int, seconds: float | None, flops_per_token: float | None,
             counted_flops: float | None = None) -> Consumed:
    """What a run used. FLOPs: as counted batch by batch where the task counts them (seq2seq, from
    each pair's real lengths), else tokens x the arch's FLOPs per token (None where it states none)."""
    flops = counted_flops if counted_flops is not None else (flops_per_token * tokens if flops_per_token else None)
    return Consumed(steps=steps, tokens=tokens, seconds=seconds, flops=flops)
