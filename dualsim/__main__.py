"""``python -m dualsim``: the same as the ``dualsim`` console script."""

from dualsim.cli.app import main

main()
