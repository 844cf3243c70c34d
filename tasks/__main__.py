"""Command-line tools that the task data offers outside the harness: ``python -m tasks TOOL [args]``.

  word-corpus OUT_DIR   the builtin English corpus as word-level train.txt / test.txt (for KenLM,
                        ``python -m archs ngram``)
"""
from __future__ import annotations

import os
import sys

from archbench.errors import UserError, user_errors_exit

USAGE = "usage: python -m tasks word-corpus OUT_DIR"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "word-corpus":
        print(USAGE, file=sys.stderr)
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    from tasks.data.word_corpus import write_builtin_corpus

    with user_errors_exit():
        if os.path.exists(args[1]) and not os.path.isdir(args[1]):  # before the corpus is built (seconds)
            raise UserError(f"cannot write the word corpus into '{args[1]}': it is a file; give a folder")
        try:
            train, test = write_builtin_corpus(args[1])
        except OSError as e:
            raise UserError(f"cannot write the word corpus into '{args[1]}' ({e.strerror or e}); "
                            "give a folder that can be created and written") from None
    print(f"wrote {train} and {test}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
