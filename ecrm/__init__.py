"""eCRM engine: the command-line tool, settings and the local (embedded) runtime."""

__version__ = "0.1.0"
