"""ITS synthetic market: a deterministic function of (seed, symbols, anchor day, day).

The generator (:mod:`.market`), its configuration (:mod:`.config`), one day's columnar data and
bar aggregation (:mod:`.daydata`), trading windows (:mod:`.sessions`) and the fast wire structs
(:mod:`.wire`). The market simulator serves it; the trainer builds simulator bars from it.
"""

__version__ = "0.1.0"
