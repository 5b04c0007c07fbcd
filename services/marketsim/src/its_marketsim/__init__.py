"""ITS market simulator: a Polygon-compatible WebSocket and REST server.

A deterministic synthetic market (or a replay of recorded trades) served over Polygon's stocks
WebSocket protocol and its REST endpoints, with faults that can be injected at run time.
"""

__version__ = "0.1.0"
