"""``python -m harness.report [results_dir]``: rebuild the report from the records on disk."""
import sys

from harness.report.cli import main

sys.exit(main())
