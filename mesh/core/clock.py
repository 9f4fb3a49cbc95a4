"""The wall clock in milliseconds, the one unit the placement table speaks.

Records in etcd (last-used times, failure times, registration times) and the
rules that read them (failure expiry, eviction order) all count milliseconds
since the epoch. Every caller asks this one helper, so a test or a reader has
one place to look for "now".
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """The wall clock, in whole milliseconds since the Unix epoch."""
    return int(time.time() * 1000)
