"""``python -m sef`` runs the ``sef`` command line."""

from sef.cli import main

main()
