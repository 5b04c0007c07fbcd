"""Wire structs for the fast path: byte-identical to ``its_common.events`` on encode.

``Trade`` and ``Quote`` here skip garbage-collector tracking (``gc=False``), which makes building
millions of them per second cheap; their JSON is the same as the shared structs' (same field
order, same wire names, same omitted defaults). Tests decode what the server sends with the
shared codec, so any drift shows.
"""

from __future__ import annotations

import msgspec

encoder = msgspec.json.Encoder()


class WireTrade(msgspec.Struct, tag_field="ev", tag="T", omit_defaults=True, gc=False):
    sym: str
    x: int
    i: str
    z: int
    p: float
    s: int
    t: int
    q: int
    c: tuple[int, ...] = ()
    trfi: int | None = None
    trft: int | None = None


class WireQuote(msgspec.Struct, tag_field="ev", tag="Q", omit_defaults=True, gc=False):
    sym: str
    bx: int
    bp: float
    bs: int
    ax: int
    ap: float
    as_: int = msgspec.field(name="as")
    t: int = 0
    q: int = 0
    z: int = 0
