"""The bundle to serve: found by :func:`its_common.model.locate.find_bundle`, loaded with every
compatibility check (feature spec hash, observation size, action map, network) by
:func:`its_common.model.bundle.load_bundle`: one implementation, shared with the trainer."""

from __future__ import annotations

import logging
from pathlib import Path

from its_common.model.bundle import Bundle, BundleError, load_bundle
from its_common.model.locate import find_bundle

log = logging.getLogger("its.inference.bundles")

__all__ = ["Bundle", "BundleError", "find_bundle", "is_demo", "load", "version_of"]


def version_of(bundle: Bundle) -> str:
    """The model version written with every decision: the bundle's name."""
    return bundle.version


def is_demo(bundle: Bundle) -> bool:
    return bundle.demo


def load(root: Path, pinned: str = "") -> Bundle:
    """Find and load (with every check); :class:`BundleError` says why a bundle is refused."""
    bundle = load_bundle(find_bundle(root, pinned))
    if bundle.demo:
        market = f" ({bundle.demo_market})" if bundle.demo_market else ""
        log.warning(
            "DEMO MODEL %s loaded: trained on simulator data%s, not for real trading",
            bundle.version,
            market,
        )
    else:
        log.info("model bundle %s loaded from %s", bundle.version, bundle.path)
    return bundle
