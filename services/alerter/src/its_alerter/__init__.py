"""ITS alerter: rules over Redis state, the database and events; Slack, e-mail and log notifiers."""

__version__ = "0.1.0"
