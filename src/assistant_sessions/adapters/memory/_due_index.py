"""The in-memory adapter's sweep index: sessions of one state, ordered by their state clock."""

from __future__ import annotations

import heapq
from collections import OrderedDict
from datetime import datetime
from typing import Final

__all__ = ["DueIndex"]

# The stray heap is rebuilt when it holds this many more entries than live ones.
_COMPACT_SLACK: Final = 1024


class DueIndex:
    """Session ids of one state ordered by key (their state clock), oldest first.

    Keys almost always arrive in order -- a session changes *now*, and now only moves forward --
    so the index is an insertion-ordered ``OrderedDict``: a changed session moves to the end in
    O(1), and reading the oldest k costs O(k) however many sessions there are. A key older than
    the newest one (a clock that stepped back, or data written with old timestamps) goes to a
    small heap of strays instead, with lazy deletion; reads merge both.
    """

    __slots__ = ("_newest", "_order", "_stray", "_stray_keys")

    def __init__(self) -> None:
        self._order: OrderedDict[str, datetime] = OrderedDict()
        self._newest: datetime | None = None
        self._stray: list[tuple[datetime, str]] = []
        self._stray_keys: dict[str, datetime] = {}

    def __len__(self) -> int:
        return len(self._order) + len(self._stray_keys)

    def set(self, session_id: str, key: datetime) -> None:
        """Add the session, or move it to ``key``."""
        order = self._order
        newest = self._newest
        if newest is None or key >= newest:
            if session_id in order:
                order.move_to_end(session_id)
            elif self._stray_keys:
                self._stray_keys.pop(session_id, None)
            order[session_id] = key
            self._newest = key
            return
        order.pop(session_id, None)
        self._stray_keys[session_id] = key
        heapq.heappush(self._stray, (key, session_id))
        if len(self._stray) > 2 * len(self._stray_keys) + _COMPACT_SLACK:
            self._stray = [(k, s) for s, k in self._stray_keys.items()]
            heapq.heapify(self._stray)

    def discard(self, session_id: str) -> None:
        """Remove the session if present."""
        if self._order.pop(session_id, None) is None and self._stray_keys:
            self._stray_keys.pop(session_id, None)

    def oldest(
        self, before: datetime, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[str]:
        """Up to ``limit`` session ids with a key before ``before``, ordered by (key, id); with
        ``after``, only those whose (key, id) sorts after it.

        Paging with ``after`` steps over the entries before it, which costs in proportion to
        them: a sweep pages past only the candidates it could not change (the others left this
        index).
        """
        found: list[tuple[datetime, str]] = []
        for session_id, key in self._order.items():
            if key >= before:
                break
            if after is not None and (key, session_id) <= after:
                continue
            # Keys are in order here, ties in insertion order: take every tie of the last key.
            if len(found) >= limit and key != found[-1][0]:
                break
            found.append((key, session_id))
        if self._stray_keys:
            found.extend(self._strays(before, limit, after))
        found.sort()
        del found[limit:]
        return [session_id for _, session_id in found]

    def _strays(
        self, before: datetime, limit: int, after: tuple[datetime, str] | None
    ) -> list[tuple[datetime, str]]:
        heap, keys = self._stray, self._stray_keys
        valid: list[tuple[datetime, str]] = []
        passed: list[tuple[datetime, str]] = []
        while heap and len(valid) < limit and heap[0][0] < before:
            entry = heapq.heappop(heap)
            if keys.get(entry[1]) == entry[0]:
                (passed if after is not None and entry <= after else valid).append(entry)
        for entry in (*valid, *passed):  # reading must not consume: put the live ones back
            heapq.heappush(heap, entry)
        return valid
