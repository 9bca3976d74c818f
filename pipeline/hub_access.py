"""Whether published weights can be had here, without importing torch or timm (for
`validate`, which answers in well under a second): in the local Hugging Face hub cache, or
from the hub over the network. The run's preflight asks timm itself (training/modeling.py:
`pretrained_reachable`, which knows each architecture's exact hub id and asks `hub_answers`
here for the network); this answers for the config as written, before any of that is
imported."""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

TIMEOUT_S = 0.5  # one connection attempt: validate stays well under a second offline


def hub_cache() -> Path:
    """The hub cache folder huggingface_hub reads (HF_HUB_CACHE, else HF_HOME/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    return home / "hub"


def cached_timm_weights(arch: str) -> Path | None:
    """A cached timm repo of `arch` (timm/ARCH or timm/ARCH.TAG), or None."""
    root = hub_cache()
    if not root.is_dir():
        return None
    for folder in sorted(root.glob(f"models--timm--{arch}*")):
        name = folder.name.removeprefix(f"models--timm--{arch}")
        if name in ("",) or name.startswith("."):
            if any(folder.glob("snapshots/*/*.safetensors")) or any(folder.glob("snapshots/*/*.bin")):
                return folder
    return None


def hub_answers(timeout_s: float = TIMEOUT_S) -> tuple[bool, str]:
    """Whether the hub (HF_ENDPOINT, default huggingface.co) accepts a connection now, and why
    not; HF_HUB_OFFLINE says no without trying. One connection per host and process."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False, "HF_HUB_OFFLINE is set"
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    return _connects(host, timeout_s)


@functools.lru_cache(maxsize=4)
def _connects(host: str, timeout_s: float) -> tuple[bool, str]:
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError as e:
        return False, f"{host} cannot be reached ({e.strerror or e})"
    return True, f"{host} answers"


def timm_weights_problem(arch: str) -> str | None:
    """Why timm's published weights for `arch` cannot be had here, or None when they are in
    the hub cache or the hub answers."""
    if cached_timm_weights(arch) is not None:
        return None
    reachable, why = hub_answers()
    if reachable:
        return None
    return f"its weights are not in the local hub cache ({hub_cache()}) and {why}"
