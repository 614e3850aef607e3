"""steiner_lib: the tested library behind the Steiner executable paper's notebooks."""

__version__ = "0.1.0"
