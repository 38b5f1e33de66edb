"""Implementations of the ``ecrm`` subcommands, one module per role."""
