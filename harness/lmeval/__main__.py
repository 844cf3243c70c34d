import sys

from harness.lmeval.cli import main

sys.exit(main())
