"""ITS feed router: the system's front door from Polygon (or the simulator) to Redis Streams."""

__version__ = "0.1.0"
