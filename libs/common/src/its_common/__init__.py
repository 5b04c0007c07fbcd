"""ITS shared library: what more than one component uses."""

__version__ = "0.1.0"
