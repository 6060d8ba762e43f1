"""SessionPages: every session matching a query, read page by page with a keyset cursor."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Self, final

import attrs

from .model import Session, SessionQuery

__all__ = ["SessionPages"]


@final
class SessionPages:
    """Async iterator over every session matching a query, fetched page by page."""

    def __init__(
        self, read: Callable[[SessionQuery], Awaitable[list[Session]]], query: SessionQuery
    ) -> None:
        self._read = read
        self._query = query
        self._page: list[Session] = []
        self._done = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Session:
        if not self._page:
            if self._done:
                raise StopAsyncIteration
            page = await self._read(self._query)
            if len(page) < self._query.limit:
                self._done = True
            if not page:
                raise StopAsyncIteration
            last = page[-1]
            self._query = attrs.evolve(self._query, after=(last.last_activity_at, last.id))
            page.reverse()
            self._page = page
        return self._page.pop()
