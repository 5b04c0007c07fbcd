"""Finding the bundle to serve: a bundle directory itself, the newest bundle of a directory of
bundles, or a pinned one (loading and its checks are
:func:`its_common.model.bundle.load_bundle`'s)."""

from __future__ import annotations

from pathlib import Path

from its_common.model.bundle import META_FILE, BundleError, read_meta


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
    # An unreadable bundle.json only loses its name here; loading it reports the error.
    try:
        return str(read_meta(path).get("name") or path.name)
    except (BundleError, OSError):
        return path.name


def _order(path: Path) -> tuple[str, str]:
    try:
        created = str(read_meta(path).get("created_at", ""))
    except (BundleError, OSError):
        created = ""
    return created, path.name
