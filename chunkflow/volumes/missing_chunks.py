"""Input chunks that are not in the store. Zarr reads a missing chunk as the fill value; for an
input that is how an incomplete copy or upload turns into wrong output marked done. So an
input's missing chunk is an error naming it, as cloud-volume's ``fill_missing=False``; with
``input.fill_missing: true`` it reads as the fill value and is counted (the done-marker records
how many a block read). Its own module so that zarr is imported only where a store is opened."""

from __future__ import annotations

import threading
from typing import Any

from zarr.storage import WrapperStore

from chunkflow.errors import VolumeError

# the zarr metadata documents: a missing one is how zarr tells formats apart, no missing chunk
METADATA = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}

_lock = threading.Lock()
_missing = 0


def missing_so_far() -> int:
    """How many missing input chunks this process has read as the fill value."""
    return _missing


def _count() -> None:
    global _missing
    with _lock:
        _missing += 1


class MissingChunkGuard(WrapperStore[Any]):
    """The zarr store ``store`` of the input at ``path``: a chunk it does not hold is a
    VolumeError naming it, or with ``fill_missing`` read as the fill value and counted."""

    def __init__(self, store: Any, path: str, fill_missing: bool) -> None:
        super().__init__(store)
        self.path, self.fill_missing = path.rstrip("/"), fill_missing

    def _with_store(self, store: Any) -> MissingChunkGuard:
        return type(self)(store, self.path, self.fill_missing)

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        value = await self._store.get(key, prototype, byte_range)
        if value is None and key.rsplit("/", 1)[-1] not in METADATA:
            self._missing(key)
        return value

    def _missing(self, key: str) -> None:
        if self.fill_missing:
            _count()
            return
        raise VolumeError(
            f"input chunk '{self.path}/{key}' is missing (an incomplete copy or upload?); "
            "complete the input, or set input.fill_missing: true to read missing chunks as the "
            "fill value (zarr-python 3 leaves out chunks that hold only the fill value)"
        )
