"""The lifetime of a durable adapter's open resources, shared by the stores that use it.

One adapter may serve several stores at once (the contract's *Lifetime*): each ``open`` is
matched by one ``aclose``, in any order, and the resources (a SQLite database's connections,
PostgreSQL's lanes) are made by the first ``open`` and released by the last ``aclose``.
:class:`Shared` keeps that count for the SQLite and PostgreSQL adapters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar, final

import anyio
import anyio.lowlevel

__all__ = ["Shared"]

R = TypeVar("R")


@final
class Shared(Generic[R]):
    """A resource opened by the first of its users and given back by the last."""

    def __init__(self) -> None:
        #: The open resource, or ``None`` while closed.
        self.value: R | None = None
        self._users = 0
        self._opening: anyio.Event | None = None

    async def open(
        self, make: Callable[[], Awaitable[R]], close: Callable[[R], Awaitable[object]]
    ) -> None:
        """Count one more user, making the resource with ``make`` if it is closed.

        Opening at once waits for the first to finish. ``make`` runs shielded; if this call
        is cancelled meanwhile, the resource is closed again with ``close`` and the
        cancellation follows, so a cancelled ``open`` leaves nothing open.

        Raises:
            Exception: Whatever ``make`` raised (nothing is then open).
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        while self._opening is not None:
            await self._opening.wait()
        if self.value is not None:
            self._users += 1
            return
        opening = self._opening = anyio.Event()
        try:
            with anyio.CancelScope(shield=True):
                value = await make()
            try:
                await anyio.lowlevel.checkpoint_if_cancelled()
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await close(value)
                raise
            self.value = value
            self._users = 1
        finally:
            self._opening = None
            opening.set()

    async def release(self) -> R | None:
        """Count one user less: the resource if that was the last one (the caller closes it),
        else ``None``. Releasing a closed resource does nothing."""
        value = self.value
        if value is None or self._users > 1:
            self._users = max(0, self._users - 1)
            await anyio.lowlevel.checkpoint()
            return None
        self._users = 0
        self.value = None
        return value
