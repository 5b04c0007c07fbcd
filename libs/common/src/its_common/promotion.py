"""The promoted model bundle: the contract between ``its-ops promote`` and inference.

In a cluster ``its-ops promote NAME`` writes NAME into the ConfigMap ``<release>-model`` (key
``bundle``, with the earlier promotions in ``history``, newest last); the chart mounts that
ConfigMap into inference (optional: absent until the first promotion) and points
``ITS_INFERENCE_BUNDLE_VERSION_FILE`` at the ``bundle`` file. Inference reads the file on every
bundle check and stages the promoted bundle; the switch happens at the next session boundary,
as for any new bundle. Outside a cluster the file is written directly (``its-ops promote
--file``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

BUNDLE_KEY: Final = "bundle"
HISTORY_KEY: Final = "history"
MOUNT_DIR: Final = "/etc/its/model"


def model_configmap(release: str) -> str:
    return f"{release}-model"


def read_pinned(path: str, default: str = "") -> str:
    """The promoted bundle's name from the file, else ``default`` (no file or an empty one)."""
    if not path:
        return default
    try:
        name = Path(path).read_text("utf-8").strip()
    except FileNotFoundError:
        return default
    return name or default


def encode_history(names: list[str]) -> str:
    return json.dumps(names)


def decode_history(text: str | None) -> list[str]:
    if not text:
        return []
    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("the promotion history is not a JSON list of bundle names")
    return list(value)
