"""A seeded protocol fuzzer for a running Gearman server.

Each *batch* opens a number of connections that send a stream of generated input:
well-formed packets of every type with hostile arguments (huge numbers, uniques one
byte too long, unknown handles, NULs), mutated and truncated packets, headers that
announce large bodies and never send them, response-magic packets, admin lines with
random arguments, overlong lines and plain garbage, cut into random pieces, some
connections dropped mid-stream.  After every batch the campaign checks that the server

* is still running and logged no traceback,
* answers an echo, an admin ``status`` and a full submit -> worker -> result round
  trip on fresh connections,
* has not grown: its RSS stays within a budget of what it was after the first batch.

Everything a batch does follows from ``(seed, batch number)``, so a failure can be
replayed exactly.  ``make fuzz`` runs a longer campaign:

    python -m tests.hostile.fuzz --minutes 5 [--seed N] [--server gearmand]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from gearshift.protocol.packets import ARGC, PacketType

REQ = b"\0REQ"
RES = b"\0RES"
T = PacketType

#: Function names the fuzzer uses, so that the jobs it queues can be cleaned up.
FUNCTIONS = [b"fz%d" % i for i in range(6)]
ODD_FUNCTIONS = [
    b"",
    b"fz\xff\xfe",
    b"fz with space",
    b"fz\r\n",
    *(b"fz" + b"n" * n for n in (98, 998, 8000)),
]
ADMIN_WORDS = [
    b"status",
    b"workers",
    b"version",
    b"getpid",
    b"verbose",
    b"maxqueue",
    b"show",
    b"jobs",
    b"unique",
    b"cancel",
    b"job",
    b"drop",
    b"create",
    b"function",
    b"prioritystatus",
    b"show stored jobs",
    b"cluster",
]
#: Admin commands that would stop or reshape the server under test: never sent.
FORBIDDEN_ADMIN = (b"shutdown",)


def pack(ptype: int, args: list[bytes], magic: bytes = REQ) -> bytes:
    body = b"\0".join(args)
    return magic + struct.pack(">II", ptype, len(body)) + body


@dataclass
class Generator:
    """Hostile input from one ``random.Random``."""

    rng: random.Random
    handles: list[bytes] = field(default_factory=lambda: [b"H:x:1"])

    def number(self) -> bytes:
        r = self.rng
        return r.choice(
            [
                str(r.randint(-5, 100)).encode(),
                str(r.randint(0, 2**32)).encode(),
                str(r.choice([2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1])).encode(),
                b"9" * r.randint(19, 40),
                b"-" + b"9" * r.randint(19, 30),
                b"",
                b"abc",
                b" 12junk",
            ]
        )

    def name(self) -> bytes:
        r = self.rng
        roll = r.random()
        if roll < 0.85:
            return r.choice(FUNCTIONS)
        return r.choice(ODD_FUNCTIONS)

    def unique(self) -> bytes:
        r = self.rng
        return r.choice(
            [b"", b"", b"-", b"u%d" % r.randint(0, 20), b"u" * 64, b"u" * 65, r.randbytes(8)]
        ).replace(b"\0", b"")

    def handle(self) -> bytes:
        # (A GET_STATUS handle of 64 bytes or more is dropped, as by gearmand: fatal.)
        r = self.rng
        return r.choice([r.choice(self.handles), b"H:nope:%d" % r.randint(0, 9), b"", b"h" * 63])

    def data(self) -> bytes:
        r = self.rng
        n = r.choice([0, 1, 10, 100, r.randint(0, 3000)])
        return r.randbytes(n)

    def epoch(self) -> bytes:
        """Past, due now, soon, or out of 64 bits (refused); never far in the future,
        which would queue a legitimate job that nothing cleans up."""
        r = self.rng
        now = int(time.time())
        return r.choice(
            [
                str(now + r.randint(-1000, 1)).encode(),
                b"0",
                b"-5",
                b"abc",
                str(2**63 + r.randint(0, 10**6)).encode(),
                b"9" * r.randint(20, 40),
            ]
        )

    def arg(self, kind: str) -> bytes:
        if kind in ("function", "reducer", "aggregator"):
            return self.name()
        if kind == "unique":
            return self.unique()
        if kind == "handle":
            return self.handle()
        if kind in ("data", "text", "code"):
            return self.data()
        if kind == "epoch":
            return self.epoch()
        if kind in ("option", "client_id"):
            return self.rng.choice([b"exceptions", b"EXCEPTIONS", b"bogus", b"c" * 300])
        return self.number()

    def packet(self) -> bytes:
        """A well-formed packet of any type, with hostile arguments."""
        r = self.rng
        ptype = r.choice([r.randint(1, 42), *[int(t) for t in _FAVOURITES]])
        names = _ARG_NAMES[ptype]
        args = [self.arg(kind) for kind in names]
        if names and names[-1] != "data":
            args[-1] = args[-1].replace(b"\0", b"")[:8000]
        for i, a in enumerate(args[:-1]):
            args[i] = a.replace(b"\0", b"")
        magic = RES if r.random() < 0.05 else REQ
        return pack(ptype, args, magic)

    def broken_packet(self) -> bytes:
        """Too few or too many arguments, or a name beyond the 8 KiB limit."""
        r = self.rng
        ptype = r.choice(_FAVOURITES)
        names = _ARG_NAMES[ptype]
        args = [self.arg(kind).replace(b"\0", b"") for kind in names]
        roll = r.random()
        if roll < 0.1:
            return pack(T.GET_STATUS, [b"h" * r.randint(64, 8000)])
        if roll < 0.4 and len(args) > 1:
            args = args[: r.randint(0, len(args) - 1)]
        elif roll < 0.7 and args:
            args[0] = b"x" * r.randint(8192, 9000)
        else:
            args.append(self.data())
        return pack(ptype, args)

    def mutate(self, raw: bytes) -> bytes:
        r = self.rng
        data = bytearray(raw)
        for _ in range(r.randint(1, 4)):
            op = r.random()
            if op < 0.4 and data:
                data[r.randrange(len(data))] = r.randrange(256)
            elif op < 0.7:
                data.insert(r.randrange(len(data) + 1), r.randrange(256))
            elif data:
                del data[r.randrange(len(data))]
        return bytes(data)

    def claim(self) -> bytes:
        """A header announcing a large body, with at most a little of it."""
        r = self.rng
        ptype = r.choice([1, 7, 18, 16, 13, 15, 22, r.randint(1, 42)])
        size = r.choice([9000, 300_000, 2**20, 2**30, 2**32 - 1])
        body = b""
        if ptype in (7, 18) and r.random() < 0.5:
            body = r.choice(FUNCTIONS) + b"\0\0" + r.randbytes(r.randint(0, 1000))
        return REQ + struct.pack(">II", ptype, size) + body

    def admin(self) -> bytes:
        r = self.rng
        words = [r.choice(ADMIN_WORDS) for _ in range(r.randint(1, 4))]
        if r.random() < 0.5:
            words += [r.choice([*FUNCTIONS, self.number(), self.handle()])]
        # gearmand drops a connection for more than five tokens: keep to five here.
        line = b" ".join(b" ".join(words).replace(b"\n", b"").split()[:5])
        if any(line.lower().startswith(f) for f in FORBIDDEN_ADMIN):
            line = b"status"
        if r.random() < 0.03:
            line = b"x" * r.randint(7000, 8100)  # near the 8 KiB line limit
        return line + r.choice([b"\n", b"\r\n"])

    def garbage(self) -> bytes:
        r = self.rng
        raw = r.randbytes(r.randint(1, 200))
        return raw if raw[:1] != b"\0" else raw[1:] + b"\n"

    def benign(self) -> bytes:
        """Input a server must answer and keep the connection for."""
        return self.packet() if self.rng.random() < 0.8 else self.admin()

    def fatal(self) -> bytes:
        """Input a server may drop the connection for (gearmand does)."""
        roll = self.rng.random()
        if roll < 0.3:
            return self.mutate(self.packet())
        if roll < 0.5:
            return self.broken_packet()
        if roll < 0.7:
            return self.garbage()
        if roll < 0.8:
            return b"x" * self.rng.randint(8193, 9000) + b"\n"  # admin line too long
        return self.claim()

    def stream(self, messages: int) -> bytes:
        """``messages`` benign messages, half the time followed by a fatal one."""
        parts = [self.benign() for _ in range(messages)]
        if self.rng.random() < 0.5:
            parts.insert(self.rng.randint(len(parts) // 2, len(parts)), self.fatal())
        return b"".join(parts)


_ARG_NAMES: dict[int, tuple[str, ...]] = {}
for _t in range(1, 43):
    from gearshift.protocol.packets import PACKET_ARGS

    _ARG_NAMES[_t] = PACKET_ARGS[PacketType(_t)]
    assert len(_ARG_NAMES[_t]) == ARGC[_t]
_FAVOURITES = (
    T.SUBMIT_JOB,
    T.SUBMIT_JOB_BG,
    T.SUBMIT_JOB_EPOCH,
    T.SUBMIT_REDUCE_JOB_BACKGROUND,
    T.CAN_DO,
    T.CAN_DO_TIMEOUT,
    T.CANT_DO,
    T.PRE_SLEEP,
    T.GRAB_JOB,
    T.GRAB_JOB_ALL,
    T.WORK_COMPLETE,
    T.WORK_STATUS,
    T.WORK_FAIL,
    T.WORK_EXCEPTION,
    T.GET_STATUS,
    T.GET_STATUS_UNIQUE,
    T.OPTION_REQ,
)


# ---------------------------------------------------------------------- driving


async def _drain_replies(reader: asyncio.StreamReader, seen: list[bytes]) -> None:
    """Read (and keep the job handles of) whatever the server sends, until EOF."""
    buf = b""
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            buf = (buf + chunk)[-4096:]
            at = buf.find(b"H:")
            if at >= 0 and len(seen) < 1000:
                end = at + 2
                while end < len(buf) and buf[end] not in b"\0\n\r\t " and end - at < 64:
                    end += 1
                seen.append(buf[at:end])
    except (ConnectionError, OSError):
        return


async def _one_connection(port: int, gen: Generator, messages: int) -> None:
    rng = gen.rng
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    seen: list[bytes] = []
    replies = asyncio.ensure_future(_drain_replies(reader, seen))
    try:
        stream = gen.stream(messages)
        cut_at = len(stream) if rng.random() < 0.8 else rng.randrange(len(stream) + 1)
        pos = 0
        while pos < cut_at:
            step = rng.choice([1, 7, 64, 512, 4096, 65536])
            writer.write(stream[pos : min(pos + step, cut_at)])
            pos += step
            if rng.random() < 0.3:
                await asyncio.sleep(0)
            if writer.is_closing():
                break
        await asyncio.sleep(rng.choice([0, 0.01, 0.05]))
        gen.handles.extend(seen[:50])
    finally:
        if rng.random() < 0.5:
            writer.transport.abort()
        else:
            writer.close()
        replies.cancel()
        await asyncio.gather(replies, return_exceptions=True)


async def run_batch(port: int, seed: int, batch: int, connections: int, messages: int) -> None:
    rng = random.Random(f"{seed}/{batch}")
    gens = [Generator(random.Random(rng.random())) for _ in range(connections)]
    await asyncio.gather(*(_one_connection(port, g, messages) for g in gens))


# ---------------------------------------------------------------------- health


class Unhealthy(AssertionError):
    pass


async def _packet(reader: asyncio.StreamReader, within: float) -> tuple[int, bytes]:
    header = await asyncio.wait_for(reader.readexactly(12), within)
    _, ptype, size = struct.unpack(">4sII", header)
    body = await asyncio.wait_for(reader.readexactly(size), within) if size else b""
    return ptype, body


async def health(port: int, within: float = 5.0) -> float:
    """A normal echo, ``status`` and job round trip; returns the round trip's seconds."""
    started = time.monotonic()
    # A large limit: the fuzzer's own function names make long ``status`` replies.
    cr, cw = await asyncio.open_connection("127.0.0.1", port, limit=64 * 1024 * 1024)
    wr, ww = await asyncio.open_connection("127.0.0.1", port)
    try:
        cw.write(pack(T.ECHO_REQ, [b"alive"]))
        if await _packet(cr, within) != (T.ECHO_RES, b"alive"):
            raise Unhealthy("echo")
        cw.write(b"status\n")
        line = await asyncio.wait_for(cr.readuntil(b".\n"), within)
        if not line.endswith(b".\n"):
            raise Unhealthy("status")
        fn = b"fuzz.health"
        ww.write(pack(T.CAN_DO, [fn]))
        cw.write(pack(T.SUBMIT_JOB, [fn, b"", b"ping"]))
        ptype, handle = await _packet(cr, within)
        if ptype != T.JOB_CREATED:
            raise Unhealthy(f"submit answered {ptype}: {handle!r}")
        ww.write(pack(T.GRAB_JOB, []))
        ptype, body = await _packet(wr, within)
        while ptype == T.NOOP:
            ptype, body = await _packet(wr, within)
        if ptype != T.JOB_ASSIGN or not body.startswith(handle + b"\0"):
            raise Unhealthy(f"grab answered {ptype}: {body[:80]!r}")
        ww.write(pack(T.WORK_COMPLETE, [handle, b"pong"]))
        if await _packet(cr, within) != (T.WORK_COMPLETE, handle + b"\0pong"):
            raise Unhealthy("result")
    finally:
        for w in (cw, ww):
            w.transport.abort()
    return time.monotonic() - started


async def clean_up(port: int) -> None:
    """Run (complete) every job the fuzzer queued, so that memory can be compared."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        for fn in FUNCTIONS + ODD_FUNCTIONS:
            w.write(pack(T.CAN_DO, [fn]))
        for _ in range(100_000):
            w.write(pack(T.GRAB_JOB, []))
            ptype, body = await _packet(r, 10)
            while ptype == T.NOOP:
                ptype, body = await _packet(r, 10)
            if ptype == T.NO_JOB:
                break
            if ptype == T.JOB_ASSIGN:
                w.write(pack(T.WORK_COMPLETE, [body.split(b"\0", 1)[0], b""]))
    finally:
        w.transport.abort()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Report:
    batches: int = 0
    messages: int = 0
    rss_first_kib: int = 0
    rss_last_kib: int = 0
    rss_max_kib: int = 0
    slowest_health: float = 0.0
    seconds: float = 0.0


async def campaign(
    port: int,
    pid: int,
    log: Path | None,
    *,
    seed: int,
    batches: int | None = None,
    minutes: float | None = None,
    connections: int = 8,
    messages: int = 200,
    rss_budget_kib: int = 32 * 1024,
    progress: bool = False,
) -> Report:
    """Run batches until ``batches`` or ``minutes`` is reached; raise on the first fault."""
    report = Report()
    started = time.monotonic()
    batch = 0
    while True:
        if batches is not None and batch >= batches:
            break
        if minutes is not None and time.monotonic() - started > minutes * 60:
            break
        await run_batch(port, seed, batch, connections, messages)
        report.messages += connections * messages
        try:
            await clean_up(port)
            took = await health(port)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            raise Unhealthy(f"seed {seed} batch {batch}: server unreachable: {exc!r}") from exc
        report.slowest_health = max(report.slowest_health, took)
        if log is not None:
            text = await asyncio.to_thread(log.read_text, errors="replace")
            if "Traceback" in text or "Fatal error" in text:
                raise Unhealthy(f"seed {seed} batch {batch}: the server logged:\n{text[-3000:]}")
        rss = rss_kib(pid)
        if batch == 0:
            report.rss_first_kib = rss
        report.rss_last_kib = rss
        report.rss_max_kib = max(report.rss_max_kib, rss)
        if rss > report.rss_first_kib + rss_budget_kib:
            raise Unhealthy(
                f"seed {seed} batch {batch}: RSS grew from {report.rss_first_kib} KiB to {rss} KiB"
            )
        batch += 1
        report.batches = batch
        if progress:
            print(
                f"batch {batch}: rss {rss} KiB, health round trip {took * 1000:.1f} ms",
                file=sys.stderr,
            )
    report.seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    from tests.procs import Gearmand, Gearshift, ServerProcess

    p = argparse.ArgumentParser(prog="python -m tests.hostile.fuzz", description=__doc__)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--messages", type=int, default=400)
    p.add_argument("--server", choices=("gearshift", "gearmand"), default="gearshift")
    p.add_argument("--queue", default="builtin", help="gearshift's --queue (default: memory)")
    ns = p.parse_args(argv)
    seed = ns.seed if ns.seed is not None else random.randrange(2**32)
    srv: ServerProcess
    if ns.server == "gearmand":
        srv = Gearmand()
        log = None
    else:
        srv = Gearshift(["--queue", ns.queue])
        log = srv.log
    srv.start()
    assert srv.proc is not None
    print(f"fuzzing {ns.server} on port {srv.port}, seed {seed}", file=sys.stderr)
    try:
        report = asyncio.run(
            campaign(
                srv.port,
                srv.proc.pid,
                log,
                seed=seed,
                minutes=ns.minutes,
                connections=ns.connections,
                messages=ns.messages,
                progress=True,
            )
        )
    except Unhealthy as exc:
        print(f"FAILED: {exc}\nreplay with --seed {seed}", file=sys.stderr)
        return 1
    finally:
        srv.close()
    print(
        f"seed {seed}: {report.batches} batches, {report.messages} messages in"
        f" {report.seconds:.0f}s; RSS {report.rss_first_kib} -> {report.rss_last_kib} KiB"
        f" (max {report.rss_max_kib}); slowest health round trip"
        f" {report.slowest_health * 1000:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
