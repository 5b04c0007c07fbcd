"""ITS ibsim: a local IB Gateway simulator speaking the TWS API wire protocol."""

__version__ = "0.1.0"
