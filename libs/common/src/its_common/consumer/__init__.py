"""One stream-consumer framework for every reader of ITS' Redis Streams.

``StreamConsumer(redis, handler, ConsumerConfig(stream=..., group=..., consumer=...), stopping,
registry=ctx.registry).run()``: see :mod:`its_common.consumer.loop` for the rules and
docs/architecture.md ("Redis Streams") for the contract.
"""

from .config import DEFAULT_TRANSIENT_ERRORS, TRANSIENT_REDIS_ERRORS, ConsumerConfig
from .lag import Lag
from .liveness import liveness_key
from .loop import StopRequestedError, StreamConsumer, consumer_counters
from .metrics import ConsumerMetrics
from .model import Delivery, EntryHandler, Handler, PoisonError
from .records import TRIMMED_REASON

__all__ = [
    "DEFAULT_TRANSIENT_ERRORS",
    "TRANSIENT_REDIS_ERRORS",
    "TRIMMED_REASON",
    "ConsumerConfig",
    "ConsumerMetrics",
    "Delivery",
    "EntryHandler",
    "Handler",
    "Lag",
    "PoisonError",
    "StopRequestedError",
    "StreamConsumer",
    "consumer_counters",
    "liveness_key",
]
