"""A zarr store whose requests are retried after transient errors (``chunkflow.volumes.retries``)
and whose failures are one-line VolumeErrors naming the object; its own module so that zarr is
imported only where a zarr store is opened."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from zarr.storage import WrapperStore

from chunkflow.errors import VolumeError, first_line
from chunkflow.volumes.retries import max_retries, with_retries_async

T = TypeVar("T")


class RetryingStore(WrapperStore[Any]):
    """The zarr store ``store`` of the object-store URL ``url``, its reads, writes and
    existence checks retried (``with_retries_async``)."""

    def __init__(self, store: Any, url: str = "") -> None:
        super().__init__(store)
        self.url = url.rstrip("/")

    def _with_store(self, store: Any) -> RetryingStore:
        return type(self)(store, self.url)

    async def _retried(self, call: Callable[[], Awaitable[T]], action: str, key: str) -> T:
        what = f"{action} '{self.url}/{key}'"
        try:
            return await with_retries_async(call, what)
        except (VolumeError, FileNotFoundError):
            raise
        except Exception as err:  # the store's own error types: one line, the object named
            raise VolumeError(
                f"cannot {what} ({first_line(err)}; retried up to {max_retries()} times, "
                "CHUNKFLOW_IO_RETRIES)"
            ) from None

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        return await self._retried(lambda: self._store.get(key, prototype, byte_range), "read", key)

    async def get_partial_values(
        self, prototype: Any, key_ranges: Iterable[tuple[str, Any]]
    ) -> list[Any]:
        key_ranges = list(key_ranges)
        keys = sorted({key for key, _ in key_ranges})
        return await self._retried(
            lambda: self._store.get_partial_values(prototype, key_ranges),
            "read",
            keys[0] if len(keys) == 1 else f"{{{len(keys)} objects}}",
        )

    async def exists(self, key: str) -> bool:
        return await self._retried(lambda: self._store.exists(key), "look for", key)

    async def set(self, key: str, value: Any) -> None:
        await self._retried(lambda: self._store.set(key, value), "write", key)

    async def delete(self, key: str) -> None:
        await self._retried(lambda: self._store.delete(key), "delete", key)
