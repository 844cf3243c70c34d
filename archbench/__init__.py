"""archbench's public API: the contracts that architectures, tasks and plug-ins are written against.

A plug-in imports only this package::

    from archbench import register_arch, register_task, TaskSpec, Task, NeuralLM, UserError

This package imports nothing from archs/, tasks/ or harness/ (the floors above it).
"""
from archbench.arch import ARCHS, ArchSpec, build_model, get_arch, register_arch
from archbench.budget import Budget
from archbench.errors import UserError, fail, user_errors_exit
from archbench.model import (
    CONTRACTS, SEQ2SEQ_FLOPS_CONVENTION, Classifier, FittedModel, LanguageModel, MaskedLM, NeuralLM, NeuralModel,
    PlanningBlock, Seq2SeqModel, check_model, matmul_params, seq2seq_flops)
from archbench.recipe import Recipe
from archbench.record import SCHEMA_VERSION, RunRecord
from archbench.registry import Registry
from archbench.spec import KINDS, TaskSpec
from archbench.task import EVAL_BATCH, TASKS, Task, build_task, register_task, task_kind

__all__ = [
    "ARCHS", "ArchSpec", "build_model", "get_arch", "register_arch",
    "Budget", "UserError", "fail", "user_errors_exit",
    "CONTRACTS", "Classifier", "FittedModel", "LanguageModel", "MaskedLM", "NeuralLM", "NeuralModel",
    "PlanningBlock", "Seq2SeqModel", "check_model", "matmul_params", "SEQ2SEQ_FLOPS_CONVENTION", "seq2seq_flops",
    "Recipe", "SCHEMA_VERSION", "RunRecord", "Registry", "KINDS", "TaskSpec",
    "EVAL_BATCH", "TASKS", "Task", "build_task", "register_task", "task_kind",
]
