"""``python -m qmc_edge``: the ``qmc`` command."""

from qmc_edge.cli.app import main

if __name__ == "__main__":
    main()
