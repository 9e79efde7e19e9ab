"""`python -m engine.cli ...`: the same as `orchestrator ...`."""
import sys

from engine.cli import main

sys.exit(main())
