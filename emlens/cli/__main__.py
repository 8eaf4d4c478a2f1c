"""``python -m emlens.cli``: the ``emlens`` command (as ``accelerate launch -m`` runs it)."""

from emlens.cli import main

main()
