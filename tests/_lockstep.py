"""Real worker processes released in lock step, so that their calls race for real.

A worker prints ``ready`` once it is set up, then, for every ``go`` line it reads, does one
round of work and prints a one-line JSON report. Starting them all before releasing any keeps
process start-up out of the race.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

__all__ = ["run_in_lockstep"]

#: The longest report line a worker may print.
_MAX_LINE = 1 << 22


async def _read_line(stream: BufferedByteReceiveStream) -> str:
    return (await stream.receive_until(b"\n", _MAX_LINE)).decode()


async def run_in_lockstep(commands: list[list[str]], rounds: int = 1) -> list[list[Any]]:
    """Start one worker per command and release them together ``rounds`` times.

    Returns each worker's reports, in order. Every worker must exit with status 0; workers
    still running when this fails are killed.
    """
    processes: list[Process] = []
    try:
        for command in commands:
            processes.append(await anyio.open_process(command, stderr=None))
        outputs = []
        for process in processes:
            assert process.stdout is not None
            outputs.append(BufferedByteReceiveStream(process.stdout))
        for output in outputs:
            assert await _read_line(output) == "ready"
        reports: list[list[Any]] = [[] for _ in processes]
        for _ in range(rounds):
            # All are waiting: let them go at the same moment.
            for process in processes:
                assert process.stdin is not None
                await process.stdin.send(b"go\n")
            for report, output in zip(reports, outputs, strict=True):
                report.append(json.loads(await _read_line(output)))
        for process in processes:
            assert await process.wait() == 0
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await process.aclose()
    return reports
