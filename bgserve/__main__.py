"""``python -m bgserve`` runs the CLI."""

from bgserve.cli import main

main()
