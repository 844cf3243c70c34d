"""Any archbench language model as an lm-eval (EleutherAI lm-evaluation-harness 0.4.x) model.

lm-eval's whole model contract is three methods (lm_eval/api/model.py); this adapter answers them
through the lm contract of archbench/model.py only, so every arch whose kinds include "lm" (neural or
count-based) is an lm-eval model with no per-arch code:

  loglikelihood          tasks/scoring/lm_scoring.continuation_scores (most-context windows; is_greedy
                         from ``next_token_logprobs``)
  loglikelihood_rolling  tasks/scoring/lm_scoring.rolling_nll over boundary + text: the very function our LM
                         evaluator uses, so bits per byte agrees with ours to the last digit
  generate_until         greedy (or sampled, when the task asks) decoding over the last ``seq_len``
                         tokens, stopping at the first ``until`` string or after ``max_gen_toks``

Texts go through the tokenizer of the run that trained the model. Registered with lm-eval as
``archbench`` (``model_args="checkpoint=PATH[,device=cpu,batch_size=32]"``). Importing this module
imports lm_eval (seconds): only harness/lmeval/evaluate.py imports it, lazily.
"""
from __future__ import annotations

import json
from typing import Any

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from archbench import ARCHS, build_task, get_arch
from tasks.data.given_splits import quiet_data_warnings
from archbench.errors import UserError
from harness.checkpoints import load_checkpoint, read_checkpoint
from tasks.lm import DOC_SEPARATOR
from tasks.scoring.lm_scoring import boundary_ids, continuation_scores, rolling_nll

DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's own default (HFLM)
GEN_KWARGS = ("until", "max_gen_toks", "max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "num_beams")


def load_lm_checkpoint(path, device: str | torch.device = "cpu"):
    """(model, payload, task) of a checkpointed run, refusing in one line anything that cannot score text."""
    payload = read_checkpoint(path)
    arch = get_arch(payload["arch"])
    if "lm" not in arch.kinds:
        why = arch.unsupported.get("lm", "it does not support task kind lm")
        can = ", ".join(sorted(a for a in ARCHS if "lm" in ARCHS[a].kinds))
        raise UserError(f"arch '{arch.name}' cannot score text for lm-eval ({why}); archs that can: {can}")
    if payload["kind"] != "lm":
        raise UserError(f"checkpoint '{path}' holds a '{payload['kind']}' model of arch '{arch.name}', not a language "
                        f"model; train arch={arch.name} on an lm task with checkpoint=true to evaluate it with lm-eval")
    model, payload = load_checkpoint(path, expect_arch=payload["arch"], device=device)
    if not callable(getattr(model, "target_logprobs", None)):
        raise UserError(f"arch '{arch.name}' cannot score text: its model has no target_logprobs(x, y) "
                        "(archbench/model.py, kind lm)")
    with quiet_data_warnings():  # said when the run read its data
        task = build_task(payload["task_config"])
    if getattr(task, "tokenizer", None) is None:
        raise UserError(f"task '{payload['task_config'].get('name')}' of checkpoint '{path}' has no tokenizer to "
                        "turn lm-eval's text into tokens")
    return model, payload, task


@register_model("archbench")
class ArchbenchLM(LM):
    """An archbench LM, its run's tokenizer and context length, as an lm-eval model."""

    def __init__(self, model, tokenizer, seq_len: int, device: str | torch.device = "cpu", batch_size: int = 32,
                 name: str = "archbench", boundary: str = DOC_SEPARATOR, seed: int = 0,
                 info: dict[str, Any] | None = None):
        super().__init__()
        if not callable(getattr(model, "target_logprobs", None)):
            raise UserError(f"{name} cannot score text: its model has no target_logprobs(x, y) (archbench/model.py)")
        if hasattr(model, "eval"):
            model.eval()
        self.model, self.tokenizer, self.seq_len = model, tokenizer, int(seq_len)
        self._device = torch.device(device)
        self.batch_size = int(batch_size)
        self.name, self.boundary, self.info = name, boundary, dict(info or {})
        self.generator = torch.Generator().manual_seed(seed)  # only for tasks that ask for sampling

    @classmethod
    def from_checkpoint(cls, checkpoint: str, device: str | torch.device = "cpu",
                        batch_size: int = 32) -> "ArchbenchLM":
        return cls.from_checkpoint_with_task(checkpoint, device, batch_size)[0]

    @classmethod
    def from_checkpoint_with_task(cls, checkpoint: str, device: str | torch.device = "cpu",
                                  batch_size: int = 32) -> tuple["ArchbenchLM", Any]:
        """The lm-eval model of a checkpointed run, and the run's task (its data and tokenizer)."""
        model, payload, task = load_lm_checkpoint(checkpoint, device)
        lm = cls(model, task.tokenizer, payload["task_spec"]["max_seq_len"], device, batch_size,
                 name=f"arch '{payload['arch']}'",
                 info={"arch": payload["arch"], "size": payload["size"], "run_key": payload["run_key"]})
        return lm, task

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "ArchbenchLM":
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> "ArchbenchLM":
        args = {**{k: v for k, v in (additional_config or {}).items() if v is not None}, **arg_dict}
        if "checkpoint" not in args:
            raise UserError("model archbench needs model_args checkpoint=PATH (a results_dir/checkpoints/*.pt file)")
        device = args.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        batch_size = str(args.get("batch_size") or "")
        return cls.from_checkpoint(args["checkpoint"], device, int(batch_size) if batch_size.isdigit() else 32)

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name

    def get_model_info(self) -> dict[str, Any]:
        return {"archbench": {**self.info, "seq_len": self.seq_len, "tokenizer": self.tokenizer.name}}

    # ---- the three lm-eval calls -------------------------------------------------------------------

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        self._need_distribution("loglikelihood (is_greedy)")
        scored = continuation_scores(self.model, [self._context_continuation(*r.args) for r in requests],
                                     self.seq_len, self._device, self.batch_size)
        for r, res in zip(requests, scored):
            self.cache_hook.add_partial("loglikelihood", r.args, res)
        return scored

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        for r in requests:
            (text,) = r.args
            ids, n_context = boundary_ids(self.tokenizer, text, self.boundary)
            nll, _ = rolling_nll(self.model, ids, n_context, self.seq_len, self._device, self.batch_size)
            out.append(-nll)
            self.cache_hook.add_partial("loglikelihood_rolling", r.args, -nll)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        self._need_distribution("generate_until")
        out: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}  # requests with the same generation settings decode together
        for i, r in enumerate(requests):
            groups.setdefault(json.dumps(r.args[1], sort_keys=True, default=str), []).append(i)
        for members in groups.values():
            settings = self._generation_settings(requests[members[0]].args[1])
            for b in range(0, len(members), self.batch_size):
                batch = members[b:b + self.batch_size]
                texts = self._generate([requests[i].args[0] for i in batch], **settings)
                for i, text in zip(batch, texts):
                    out[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return out

    # ---- helpers -----------------------------------------------------------------------------------

    def _need_distribution(self, what: str) -> None:
        if not callable(getattr(self.model, "next_token_logprobs", None)):
            raise UserError(f"{self.name} gives no next-token distribution (next_token_logprobs, archbench/model.py), "
                            f"which lm-eval's {what} needs; it can run loglikelihood_rolling tasks only "
                            "(e.g. the default archbench_lm)")

    def _context_ids(self, context: str) -> list[int]:
        """An empty context is the document boundary, as for rolling scoring (HFLM uses its EOT token)."""
        ids = self.tokenizer.encode(context) if context else self.tokenizer.encode(self.boundary)
        return [int(i) for i in ids]

    def _context_continuation(self, context: str, continuation: str) -> tuple[torch.Tensor, int]:
        """Tokens of context + continuation, split where the context ends.

        As HFLM does: trailing whitespace of the context moves to the continuation, and the pair is
        encoded as one string, so a subword tokenizer sees the words it would see in running text.
        """
        if not context:
            ctx = self._context_ids("")
            return torch.tensor(ctx + [int(i) for i in self.tokenizer.encode(continuation)]), len(ctx)
        stripped = context.rstrip()
        continuation = context[len(stripped):] + continuation
        whole = [int(i) for i in self.tokenizer.encode(stripped + continuation)]
        n_context = len(self.tokenizer.encode(stripped))
        if n_context == 0:  # the context was only whitespace
            ctx = self._context_ids("")
            return torch.tensor(ctx + whole), len(ctx)
        return torch.tensor(whole), n_context

    def _generation_settings(self, gen_kwargs: dict[str, Any]) -> dict[str, Any]:
        kw = dict(gen_kwargs or {})
        unknown = sorted(set(kw) - set(GEN_KWARGS))
        if unknown:
            raise UserError(f"generate_until: generation option(s) {', '.join(unknown)} not supported by the archbench "
                            f"adapter; supported: {', '.join(GEN_KWARGS)}")
        until = kw.get("until") or []
        until = [until] if isinstance(until, str) else [u for u in until if u]
        if int(kw.get("num_beams") or 1) > 1:
            raise UserError(f"generate_until: num_beams={kw['num_beams']} asks for beam search, which the archbench "
                            "adapter does not do (greedy or sampling only)")
        max_gen_toks = int(kw.get("max_gen_toks") or kw.get("max_new_tokens") or DEFAULT_MAX_GEN_TOKS)
        temperature = float(kw["temperature"]) if kw.get("temperature") is not None else 1.0
        sample = bool(kw.get("do_sample", False)) and temperature > 0  # HFLM: temperature 0 means greedy
        top_p = float(kw["top_p"]) if kw.get("top_p") is not None else 1.0
        return {"until": until, "max_gen_toks": max_gen_toks, "sample": sample, "temperature": temperature,
                "top_k": int(kw.get("top_k") or 0), "top_p": top_p}

    @torch.no_grad()
    def _generate(self, contexts: list[str], *, until: list[str], max_gen_toks: int, sample: bool,
                  temperature: float, top_k: int, top_p: float) -> list[str]:
        """Decode the batch token by token; each row reads its own last ``seq_len`` tokens (right-padded)."""
        rows = [self._context_ids(c) for c in contexts]
        generated: list[list[int]] = [[] for _ in rows]
        texts = [""] * len(rows)
        active = list(range(len(rows)))
        for _ in range(max_gen_toks):
            if not active:
                break
            windows = [rows[i][-self.seq_len:] for i in active]
            x = torch.zeros(len(windows), max(map(len, windows)), dtype=torch.long)
            for j, w in enumerate(windows):
                x[j, :len(w)] = torch.tensor(w)
            lp = self.model.next_token_logprobs(x.to(self._device))
            last = lp[torch.arange(len(windows)), torch.tensor([len(w) - 1 for w in windows])].float().cpu()
            nxt = self._pick(last, sample, temperature, top_k, top_p)
            still = []
            for j, i in enumerate(active):
                tok = int(nxt[j])
                rows[i].append(tok)
                generated[i].append(tok)
                text = self.tokenizer.decode(generated[i])
                cut = min((text.find(u) for u in until if u in text), default=-1)
                if cut >= 0:
                    texts[i] = text[:cut]
                else:
                    texts[i] = text
                    still.append(i)
            active = still
        return texts

    def _pick(self, logprobs: torch.Tensor, sample: bool, temperature: float, top_k: int, top_p: float):
        if not sample:
            return logprobs.argmax(-1)
        logits = logprobs / temperature
        if top_k > 0:
            kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_p < 1.0:  # nucleus: keep the smallest set of tokens whose probability reaches top_p
            sorted_logits, idx = logits.sort(dim=-1, descending=True)
            cum = sorted_logits.softmax(-1).cumsum(-1)
            drop = cum - sorted_logits.softmax(-1) >= top_p
            logits = logits.masked_fill(drop.scatter(-1, idx, drop), float("-inf"))
        return torch.multinomial(logits.softmax(-1), 1, generator=self.generator).squeeze(-1)
