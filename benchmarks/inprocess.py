"""The server's per-job Python cost, without sockets: ``python -m benchmarks.inprocess``.

Real ``Connection`` objects and a real ``Scheduler`` are fed real packets through
``data_received``; their transports only keep the last write. One client submits a
foreground job (SUBMIT_JOB, 36-byte unique, 100-byte payload), one worker answers each
JOB_ASSIGN with WORK_COMPLETE + GRAB_JOB in one read, as busy workers do. That is the
server's Python work per job in scenario b (parse, schedule, build replies, flush) minus
the event loop's callbacks and the system calls. Prints the best of ``--rounds``.

Use it to tell whether a change to the hot path moves the Python cost at all before
running the noisier socket benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from typing import Any

from gearshift.protocol.codec import encode_request
from gearshift.protocol.packets import PacketType as T
from gearshift.server.config import ServerConfig
from gearshift.server.connection import Connection
from gearshift.server.server import GearmanServer


class _Transport:
    """Just enough of an asyncio transport for ``Connection``."""

    def __init__(self) -> None:
        self.last = b""

    def write(self, data: bytes) -> None:
        self.last = data

    def writelines(self, parts: list[bytes]) -> None:
        self.last = b"".join(parts)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_reading(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _handle(assign: bytes) -> bytes:
    return assign[12 : assign.index(b"\0", 12)]


async def measure(jobs: int, rounds: int) -> tuple[float, float]:
    """(best us per job, us per job the loop itself spends encoding the worker's reply)."""
    server = GearmanServer(ServerConfig(port=0, queue_type="builtin"))
    await server.start()
    try:
        client, worker = Connection(server), Connection(server)
        client.connection_made(_Transport())  # type: ignore[arg-type]
        worker.connection_made(_Transport())  # type: ignore[arg-type]
        wt = worker.transport
        assert isinstance(wt, _Transport)
        worker.data_received(encode_request(T.CAN_DO, b"f"))
        payload = b"p" * 100
        result = b"r" * 100
        grab = encode_request(T.GRAB_JOB)
        submits = [
            encode_request(T.SUBMIT_JOB, b"f", b"%036d" % i, payload) for i in range(jobs * rounds)
        ]
        client.data_received(submits[0])
        worker.data_received(grab)
        gc.collect()
        gc.freeze()
        best = float("inf")
        n = 1
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(jobs):
                client.data_received(submits[n % len(submits)])
                n += 1
                reply = encode_request(T.WORK_COMPLETE, _handle(wt.last), result) + grab
                worker.data_received(reply)
            best = min(best, (time.perf_counter() - started) / jobs * 1e6)
        last = wt.last
        started = time.perf_counter()
        for _ in range(jobs):
            encode_request(T.WORK_COMPLETE, _handle(last), result) + grab
        overhead = (time.perf_counter() - started) / jobs * 1e6
        return best, overhead
    finally:
        await server.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--jobs", type=int, default=100_000, help="jobs per round")
    parser.add_argument("-r", "--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    best, overhead = asyncio.run(measure(args.jobs, args.rounds))
    print(
        f"server Python per fg job: {best - overhead:.2f} us "
        f"(loop {best:.2f} us minus {overhead:.2f} us of test-side encoding; best of {args.rounds})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
