"""Finding the bundle to serve: a bundle directory itself, the newest bundle of a directory of
bundles, or a pinned one. Loading and every compatibility check (feature spec hash, observation
size, action map) are :func:`its_trainer.bundle.load_bundle`'s: one implementation."""

from __future__ import annotations

import logging
from pathlib import Path

from its_trainer.bundle import Bundle, BundleError, load_bundle, read_meta
from its_trainer.train import META_FILE

log = logging.getLogger("its.inference.bundles")

__all__ = ["Bundle", "BundleError", "find_bundle", "is_demo", "load", "version_of"]


def _candidates(root: Path) -> list[Path]:
    if (root / META_FILE).is_file():
        return [root]
    if not root.is_dir():
        raise BundleError(f"bundle directory {root} does not exist")
    return [p for p in root.iterdir() if p.is_dir() and (p / META_FILE).is_file()]


def find_bundle(root: Path, pinned: str = "") -> Path:
    """The bundle to use: ``root/pinned`` when pinned (or ``root`` itself when it is that bundle);
    else ``root`` when it holds a bundle; else the newest bundle under it (bundle.json
    ``created_at``, then name)."""
    if pinned:
        if (root / META_FILE).is_file() and (root.name == pinned or _name(root) == pinned):
            return root
        path = root / pinned
        if not (path / META_FILE).is_file():
            raise BundleError(f"pinned bundle {pinned!r} not found in {root}")
        return path
    found = _candidates(root)
    if not found:
        raise BundleError(f"no model bundle (a directory with {META_FILE}) in {root}")
    return max(found, key=_order)


def _name(path: Path) -> str:
    try:
        return str(read_meta(path).get("name") or path.name)
    except (BundleError, ValueError, OSError):
        return path.name


def _order(path: Path) -> tuple[str, str]:
    try:
        created = str(read_meta(path).get("created_at", ""))
    except (BundleError, ValueError, OSError):
        created = ""
    return created, path.name


def version_of(bundle: Bundle) -> str:
    """The model version written with every decision: the bundle's name."""
    return str(bundle.meta.get("name") or bundle.path.name)


def is_demo(bundle: Bundle) -> bool:
    return bool(bundle.meta.get("demo", False))


def load(root: Path, pinned: str = "") -> Bundle:
    """Find and load (with every check); :class:`BundleError` says why a bundle is refused."""
    bundle = load_bundle(find_bundle(root, pinned))
    if is_demo(bundle):
        log.warning(
            "DEMO MODEL %s loaded: trained on simulator data, not for real trading",
            version_of(bundle),
        )
    else:
        log.info("model bundle %s loaded from %s", version_of(bundle), bundle.path)
    return bundle
