"""`python -m pabench` runs the CLI."""

from pabench.cli import main

main()
