"""The command-line layer: one module per command group, each with ``add_commands(subparsers)``.

These modules sit above every other layer (they call the public API of ``spaces`` …
``report``) and import nothing heavy at module level, so that ``trilemma COMMAND --help``
answers without importing torch. :mod:`trilemma.cli` imports only the module of the
command being run.
"""
