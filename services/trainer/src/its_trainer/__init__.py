"""ITS trainer: two-ticker environment, RecurrentPPO training, model bundles, backtests."""

__version__ = "0.1.0"
