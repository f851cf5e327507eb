"""Transient object-store errors (500, 502, 503, 504, 429, timeouts, dropped connections, bodies
cut short) retried with exponential backoff and jitter, and counted: a block job records how
many retries its I/O needed (``io_retries`` in the done-marker). Any other error, and a
transient one that outlasts the retries, fails the request: a read never half-succeeds silently.

``CHUNKFLOW_IO_RETRIES`` (default 10) sets how many times one request is retried; the waits
grow from 0.1 s, doubling, to at most 15 s (at most about a minute before a request fails).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from chunkflow.errors import ConfigError, first_line

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_WAIT_S = 0.1
LONGEST_WAIT_S = 15.0
DEFAULT_RETRIES = 10
# how a store's error message says that the request may succeed when sent again
_TRANSIENT = re.compile(
    r"status code: (500|502|503|504|429)|error sending request|body error|timed out|"
    r"connection (reset|refused|closed)|broken pipe",
    re.IGNORECASE,
)

_lock = threading.Lock()
_retries = 0


def retries_so_far() -> int:
    """How many requests this process has sent again after a transient error."""
    return _retries


def max_retries() -> int:
    """``CHUNKFLOW_IO_RETRIES``: how often one request is retried (a ConfigError if not a count)."""
    text = os.environ.get("CHUNKFLOW_IO_RETRIES", str(DEFAULT_RETRIES))
    if not text.isdigit():
        raise ConfigError(f"CHUNKFLOW_IO_RETRIES is '{text}'; set it to a count such as 10")
    return int(text)


def is_transient(err: BaseException) -> bool:
    """Whether ``err`` is a failure that the same request may not meet again."""
    if isinstance(err, FileNotFoundError | PermissionError):
        return False
    if isinstance(err, TimeoutError | ConnectionError):
        return True
    from obstore.exceptions import GenericError

    # obstore's message, then its debug dump (which names settings such as retry_timeout)
    message = str(err).split("Debug source:")[0]
    return isinstance(err, GenericError) and _TRANSIENT.search(message) is not None


def _wait_s(attempt: int) -> float:
    """The wait before retry ``attempt`` (1, 2, …): doubling, capped, then jittered (half to
    all of it, so that many jobs retrying at once spread out)."""
    return random.uniform(0.5, 1.0) * min(LONGEST_WAIT_S, FIRST_WAIT_S * 2 ** (attempt - 1))


def _retry_wait(err: Exception, attempt: int, limit: int, what: str) -> float | None:
    """The seconds to wait before sending ``what`` again after ``err`` on ``attempt`` (1, 2,
    …), the retry counted and logged; None when ``err`` is not transient or ``limit`` is
    reached."""
    global _retries
    if attempt > limit or not is_transient(err):
        return None
    with _lock:
        _retries += 1
    log.warning("retrying to %s (retry %d) after: %s", what, attempt, first_line(err)[:200])
    return _wait_s(attempt)


def with_retries(call: Callable[[], T], what: str) -> T:
    """``call()``, sent again after a transient error (``is_transient``), at most
    ``max_retries()`` times."""
    limit = max_retries()
    for attempt in range(1, limit + 2):
        try:
            return call()
        except Exception as err:
            wait = _retry_wait(err, attempt, limit, what)
            if wait is None:
                raise
            time.sleep(wait)
    raise AssertionError("unreachable")


async def with_retries_async(call: Callable[[], Awaitable[T]], what: str) -> T:
    """``with_retries`` for a coroutine function."""
    limit = max_retries()
    for attempt in range(1, limit + 2):
        try:
            return await call()
        except Exception as err:
            wait = _retry_wait(err, attempt, limit, what)
            if wait is None:
                raise
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")
