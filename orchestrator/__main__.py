"""`python -m orchestrator ...` is the same as the `fwbench` console script."""

from orchestrator.cli import main

main()
