"""Loading litellm and tiktoken lazily, ready to work offline.

``import baton_dramatiq.llm`` imports neither: litellm takes seconds to import and
starts native threads that do not survive a fork, so it loads on the first call, in
the worker process. tiktoken downloads its encodings on first use unless pointed at the
copies litellm bundles (cl100k_base, o200k_base, p50k_base); `prepare_tiktoken` does
that before any encoding loads.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from types import ModuleType

from ..errors import ConfigurationError

INSTALL_HINT = "The LLM toolkit needs litellm and tiktoken: pip install 'baton_dramatiq[llm]'"

_lock = threading.Lock()
_litellm: ModuleType | None = None


def bundled_encodings_dir() -> Path | None:
    """Where litellm keeps its copies of tiktoken's encodings; None without litellm."""
    spec = importlib.util.find_spec("litellm")  # finds the package without importing it
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
    return path if path.is_dir() else None


def prepare_tiktoken() -> None:
    """Point tiktoken at litellm's bundled encodings, unless the user chose a cache.

    litellm overwrites ``TIKTOKEN_CACHE_DIR`` on import unless
    ``CUSTOM_TIKTOKEN_CACHE_DIR`` is set, so both are set, to the same directory.
    """
    chosen = os.environ.get("CUSTOM_TIKTOKEN_CACHE_DIR") or os.environ.get("TIKTOKEN_CACHE_DIR")
    if not chosen:
        bundled = bundled_encodings_dir()
        if bundled is None:
            return
        chosen = str(bundled)
    os.environ["TIKTOKEN_CACHE_DIR"] = chosen
    os.environ["CUSTOM_TIKTOKEN_CACHE_DIR"] = chosen


def litellm() -> ModuleType:
    """The litellm module, imported on first use.

    Raises:
      ConfigurationError: litellm is not installed.
    """
    global _litellm
    if _litellm is None:
        with _lock:
            if _litellm is None:
                prepare_tiktoken()
                try:
                    import litellm as module
                except ImportError as exc:
                    raise ConfigurationError(INSTALL_HINT) from exc
                _litellm = module
    return _litellm


def tiktoken() -> ModuleType:
    """The tiktoken module, with its cache pointed at the bundled encodings."""
    prepare_tiktoken()
    try:
        import tiktoken as module
    except ImportError as exc:
        raise ConfigurationError(INSTALL_HINT) from exc
    return module
