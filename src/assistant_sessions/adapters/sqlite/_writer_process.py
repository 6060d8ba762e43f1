"""The parent's side of the SQLite writer process (``writer="process"``).

:class:`WriterProcess` starts the child (:mod:`._writer_child`),
sends it groups of user commits and turns its answers back into results and
:class:`~assistant_sessions.AdapterError`. One request is in flight at a time (the writer's
batcher runs one batch at a time), so a request and its answer need no tag.

Why a process: the event loop, the reader thread and a writer thread share one interpreter
lock, so under load the three take turns; a child has its own lock, and its work overlaps
theirs. The same statements and the same group commit run there, on the child's own
connection. The price: opening starts a Python interpreter (about 0.4 s, some 30 MB).

The child runs the interpreter that runs this process (``sys.executable``, so not a frozen
application) with this process's import path, so it imports this very library. It ends when
the adapter closes, or when this process exits or is killed (at the end of its input, after
the transaction it is writing); it ignores SIGINT and SIGTERM, so a signal to the whole process
group leaves closing to this process. If it exits (killed, out of memory) while it has a
request, that write fails with an ``AdapterError`` (whether it was applied is then unknown, as
after any storage failure); the next write starts a new child, as does a write that finds it
gone. Closing sends an explicit end before closing the pipe: a process forked from this one
without exec holds a copy of the pipe, and the child would not see its end of input while that
copy lives (after a crash of this process, the child then ends when the forks have ended).
A ``sqlite3`` error in the child is raised as in the writer thread: an ``AdapterError`` whose
cause is a ``sqlite3`` exception of the same class, message and error code.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sqlite3
import sys
from collections.abc import Sequence
from typing import Any, Final, final

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from ...errors import AdapterError
from ..base import Rejection
from ._errors import translate
from ._frames import HEADER, ErrorTuple, pack
from ._writes import EncodedCommit

__all__ = ["Outcome", "WriterProcess", "rebuild"]

#: One group's outcome: its results and how many of its rows were touches, or its error.
Outcome = tuple[list[Rejection | None], int] | AdapterError

#: How long a closing child may take to finish its transaction before it is killed, seconds.
CLOSE_TIMEOUT: Final = 30.0

_CHILD_CODE: Final = (
    "import sys; sys.path[:0] = {path!r}; "
    "from assistant_sessions.adapters.sqlite._writer_child import main; main()"
)

#: Errors of a pipe to a child that has gone.
_GONE: Final = (
    anyio.EndOfStream,
    anyio.IncompleteRead,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)


def rebuild(error: ErrorTuple, what: str) -> AdapterError:
    """The :class:`AdapterError` of an error the child described; a ``sqlite3`` error
    becomes its cause, as in the writer thread."""
    name, message, code, code_name = error
    kind = getattr(sqlite3, name, None)
    if not (isinstance(kind, type) and issubclass(kind, sqlite3.Error)):
        return AdapterError(f"{what}: {name}: {message}")
    cause = kind(message)
    if code is not None and code_name is not None:
        cause.sqlite_errorcode, cause.sqlite_errorname = code, code_name
    return translate(cause, what)


@final
class WriterProcess:
    """The writer child of one open SQLite adapter; create and use it inside the event loop."""

    def __init__(self, path: str, synchronous: str, busy_timeout: float) -> None:
        # Absolute: a child started again later must open the same file whatever the
        # working directory is by then.
        self._opening = (os.path.abspath(path), synchronous, busy_timeout)
        self._path = path
        self._process: anyio.abc.Process | None = None
        self._replies: BufferedByteReceiveStream | None = None
        #: The child's process id, once started (for diagnostics and tests).
        self.pid: int | None = None
        #: Children started so far.
        self.starts = 0

    async def start(self) -> None:
        """Start the child and wait until its connection is open.

        Raises:
            AdapterError: The child could not start or could not open the file.
        """
        command = [sys.executable, "-c", _CHILD_CODE.format(path=list(sys.path))]
        what = f"the writer process for {self._path} could not start"
        try:
            process = await anyio.open_process(command, stderr=None)
        except OSError as exc:
            raise _caused(f"{what}: cannot run {sys.executable}", exc) from exc
        self._process = process
        assert process.stdout is not None
        self._replies = BufferedByteReceiveStream(process.stdout)
        self.starts += 1
        reply = await self._ask(self._opening, what)
        if reply[0] != "ready":
            await self._end(kill=True)
            raise rebuild(reply[1], f"the writer process cannot open {self._path}")
        self.pid = reply[1]

    async def write(self, groups: Sequence[Sequence[EncodedCommit]]) -> list[Outcome]:
        """Write each group in its own transaction; one outcome per group, in order.

        A child that has exited since the last write is replaced first.

        Raises:
            AdapterError: The child exited while it had the request (the outcome of every
                group is unknown), or could not be started again (nothing was applied).
        """
        if self._process is not None and self._process.returncode is not None:
            await self._end(kill=True)  # died idle: nothing of this write reached it
        if self._process is None:
            await self.start()
        what = f"writing to {self._path} failed: the writer process exited"
        answers = await self._ask([list(group) for group in groups], what)
        outcomes: list[Outcome] = []
        for answer in answers:
            if answer[0] == "ok":
                outcomes.append((answer[1], answer[2]))
            elif answer[0] == "error":
                outcomes.append(rebuild(answer[1], f"writing to {self._path} failed"))
            else:
                outcomes.append(
                    AdapterError(f"the writer process of {self._path} failed:\n{answer[1]}")
                )
        if len(outcomes) != len(groups):
            raise AdapterError(
                f"the writer process of {self._path} answered {len(outcomes)} groups "
                f"for {len(groups)}"
            )
        return outcomes

    async def aclose(self) -> None:
        """End the child after its transaction, if any (it is killed after
        :data:`CLOSE_TIMEOUT` seconds, or at once when this is cancelled)."""
        await self._end(kill=False)

    async def _ask(self, request: object, what: str) -> Any:
        """Send ``request`` and return the answer. Whatever interrupts this (the child
        exiting, an exception, a cancellation that was not shielded) ends the child, so that a
        later request never reads an answer meant for this one."""
        process, replies = self._process, self._replies
        assert process is not None
        assert process.stdin is not None
        assert replies is not None
        frame = pack(request)
        try:
            await process.stdin.send(frame)
            (length,) = HEADER.unpack(await replies.receive_exactly(HEADER.size))
            return pickle.loads(await replies.receive_exactly(length))
        except _GONE as exc:
            with anyio.CancelScope(shield=True):
                status = await self._end(kill=True)
            raise _caused(f"{what} (status {status})", exc) from exc
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._end(kill=True)
            raise

    async def _end(self, *, kill: bool) -> int | None:
        process, self._process, self._replies = self._process, None, None
        if process is None:
            return None
        try:
            if not kill:
                assert process.stdin is not None
                with contextlib.suppress(*_GONE):
                    # An explicit end, then end of input: a process forked from this one
                    # (without exec) may hold the pipe open.
                    await process.stdin.send(pack(None))
                    await process.stdin.aclose()
                with anyio.move_on_after(CLOSE_TIMEOUT):
                    return await process.wait()
            _kill(process)
            return await process.wait()
        except BaseException:
            _kill(process)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await process.aclose()


def _kill(process: anyio.abc.Process) -> None:
    if process.returncode is None:
        # It may have exited since: asyncio then refuses to signal it.
        with contextlib.suppress(ProcessLookupError):
            process.kill()


def _caused(message: str, exc: BaseException) -> AdapterError:
    error = AdapterError(message)
    error.__cause__ = exc
    return error
