"""Command-line tools that archs offer outside the harness: ``python -m archs TOOL [args]``.

A module under archs/ cannot be run with ``python -m archs.module`` without being imported twice
(the package imports every module to register it), so its command line is reached from here.
"""
from __future__ import annotations

import sys

TOOLS = {
    "ngram": ("archs.ngram.words", "word-level Kneser-Ney n-gram: estimate, ARPA in/out, perplexity"),
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] not in TOOLS and args[0] not in ("-h", "--help"):
        print(f"error: unknown tool '{args[0]}'; valid: {', '.join(TOOLS)} (python -m archs --help)", file=sys.stderr)
        return 2
    if not args or args[0] not in TOOLS:
        listing = "\n".join(f"  {name:8s} {about}" for name, (_, about) in TOOLS.items())
        print(f"usage: python -m archs TOOL [args]\ntools:\n{listing}", file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    import importlib

    return importlib.import_module(TOOLS[args[0]][0]).main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
