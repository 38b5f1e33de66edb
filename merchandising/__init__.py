"""Business rules of the marketers (``config/rules.yaml``): parsed and compiled once, applied by a pure engine.

:mod:`merchandising.rules` is the file's format and its validation, :mod:`merchandising.engine` applies the rules
in force to one list of candidates (no I/O), :mod:`merchandising.source` re-reads the file when it changes.
See docs/rules.md.
"""
