"""``python -m aevos``: the same command as the ``aevos`` console script."""

from .cli import main

main()
