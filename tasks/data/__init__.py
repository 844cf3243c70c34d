"""Where task data comes from: builtin corpora, files, HF datasets; deterministic splits."""
