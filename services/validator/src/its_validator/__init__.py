"""ITS price validator: the feed's last trade price against the broker's price."""

__version__ = "0.1.0"
