"""``python -m bgserve`` runs the CLI."""

from bgserve.cli.app import main

main()
