"""The ``qmc`` command: the app and its core commands (:mod:`.app`), shared console, progress and
error handling (:mod:`.common`), and one module of commands per feature (``*_cmds``).

The top layer: may import every other package; nothing imports it but ``qmc_edge.__main__``.
"""
