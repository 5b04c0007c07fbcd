"""ITS inference: live decisions of a RecurrentPPO model bundle."""

__version__ = "0.1.0"
