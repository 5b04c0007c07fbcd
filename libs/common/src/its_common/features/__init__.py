"""Per-symbol minute-bar features: one specification, a batch form and an incremental form.

See :mod:`its_common.features.spec` (and ``docs/features.md``) for every definition.
"""

from its_common.features.batch import batch_features, grid_features
from its_common.features.grid import BarArrays, Grid, align
from its_common.features.incremental import Bar, FeatureState, SymbolFeatures
from its_common.features.spec import (
    FEATURE_NAMES,
    FEATURE_SPEC,
    FEATURE_SPEC_HASH,
    N_FEATURES,
    spec_hash,
)

__all__ = [
    "FEATURE_NAMES",
    "FEATURE_SPEC",
    "FEATURE_SPEC_HASH",
    "N_FEATURES",
    "Bar",
    "BarArrays",
    "FeatureState",
    "Grid",
    "SymbolFeatures",
    "align",
    "batch_features",
    "grid_features",
    "spec_hash",
]
