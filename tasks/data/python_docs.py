"""Builtin English corpus built at run time from text every Python install carries:
CPython's reference documentation topics (``pydoc_data.topics``) and the standard library's
module, class and function docstrings (read with ``ast``, nothing is imported or executed).
Nothing of it is committed to this repository."""
from __future__ import annotations

import ast
import functools
import os
import sysconfig

from archbench.errors import UserError

# Packages whose docstrings are test fixtures, demos or vendored code rather than documentation.
_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "turtledemo", "site-packages", "dist-packages",
              "__pycache__", "ensurepip", "venv"}
MIN_DOC_CHARS = 40


@functools.lru_cache(maxsize=2)
def stdlib_docstrings(stdlib: str | None = None) -> tuple[str, ...]:
    root = stdlib or sysconfig.get_paths()["stdlib"]
    docs: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for fname in sorted(filenames):
            if not fname.endswith(".py"):
                continue
            try:
                with open(os.path.join(dirpath, fname), encoding="utf-8") as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) >= MIN_DOC_CHARS:
                        docs.append(doc)
    return tuple(docs)


def reference_topics() -> list[str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:
        return []
    return [topics[k] for k in sorted(topics)]


@functools.lru_cache(maxsize=2)
def python_docs_corpus() -> tuple[str, ...]:
    """Documents in a fixed order: reference topics, then docstrings by file path."""
    docs = reference_topics() + list(stdlib_docstrings())
    if not docs:
        raise UserError(
            "builtin LM corpus is empty: found neither pydoc_data.topics nor standard-library docstrings "
            f"under {sysconfig.get_paths()['stdlib']}; point the task at your own text with "
            "task.source=files task.path=/path/to/text.txt"
        )
    return tuple(docs)


def docstring_summaries() -> list[tuple[str, str]]:
    """(body, summary line) of every stdlib docstring written the PEP 257 way: a one-line summary,
    a blank line, then the body that the summary line sums up."""
    pairs = []
    for doc in stdlib_docstrings():
        head, sep, body = doc.partition("\n\n")
        summary = head.strip()
        if sep and "\n" not in summary and body.strip():
            pairs.append((body.strip(), summary))
    if not pairs:
        raise UserError(
            "builtin summarization set is empty: found no standard-library docstrings with a summary line "
            f"under {sysconfig.get_paths()['stdlib']}; point the task at your own data with "
            "task.source=files task.path=/path/to/pairs.jsonl"
        )
    return pairs
