"""Find a model's files without waiting on a network that cannot be used.

A local directory is read as is; a hub id is looked up in the local Hugging Face cache first, and
the hub is asked once, only when not offline and reachable (one short probe, no retries).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from bagofdims.embedded import EMBEDDED
from bagofdims.errors import ModelNotAvailable

__all__ = ["from_hub"]


def _offline() -> bool:
    flags = (os.environ.get(v, "") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    if any(f.strip().upper() in {"1", "ON", "YES", "TRUE"} for f in flags):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub_unreachable() -> str | None:
    """Why the hub cannot be reached (one short probe, no retries), or None if it may be."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # behind a proxy only the hub client can tell
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=3).close()
    except OSError as err:
        return f"{url.hostname}:{port}: {err}"
    return None


def _not_available(name: str, why: str, fix: str, err: BaseException | None) -> ModelNotAvailable:
    detail = f" ({type(err).__name__}: {str(err).splitlines()[0][:200]})" if err else ""
    return ModelNotAvailable(
        f"Could not load '{name}': it is not an embedded model ({', '.join(EMBEDDED)}), not a "
        f"local directory, and {why}. {fix}{detail}"
    )


def from_hub(name: str, source: Path | str, load):
    """``load(local_files_only)`` for a local source or the HF cache, then the hub once."""
    if isinstance(source, Path):
        try:
            return load(True)
        except OSError as err:
            raise ModelNotAvailable(
                f"Could not load the model directory '{source}' ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:200]}): it needs config.json, the weights and the "
                "tokenizer files that save_pretrained writes."
            ) from err
    try:
        return load(True)
    except OSError as err:
        cached_err = err
    if _offline():
        raise _not_available(
            name, "the Hugging Face cache does not hold it (HF_HUB_OFFLINE is set, so the hub "
            "was not asked)", "Pass a local model directory, or unset HF_HUB_OFFLINE on a "
            "machine with network to download it.", cached_err) from cached_err
    reason = _hub_unreachable()
    if reason:
        raise _not_available(
            name, f"the Hugging Face hub cannot be reached ({reason})", "Connect to the "
            "network, set HF_ENDPOINT to a mirror, or pass a local model directory.", None,
        ) from cached_err
    try:
        return load(False)
    except OSError as err:
        raise _not_available(
            name, "the Hugging Face hub could not provide it", "Check the id (gated or private "
            "repos need `hf auth login`), or pass a local model directory.", err) from err
