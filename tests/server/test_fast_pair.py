"""The client-side sans-IO cores talking to a Scheduler in memory, bytes only.

Like h11's ConnectionPair: a ``ClientProtocol`` or ``WorkerProtocol`` on one side, a
``Peer`` of the scheduler on the other, read with the server's own ``PacketReader``
dispatching to the scheduler's table; no sockets, no event loop.  Both ends of the
protocol are the real code, so a disagreement between them fails here first.
"""

from __future__ import annotations

from typing import Any

from gearshift.protocol.client import (
    ClientProtocol,
    EchoReply,
    JobCreated,
    OptionAccepted,
    StatusReply,
    WorkUpdate,
)
from gearshift.protocol.codec import PacketReader
from gearshift.protocol.packets import PacketType as T
from gearshift.protocol.packets import Priority
from gearshift.protocol.worker import JobAssigned, Noop, WorkerProtocol
from gearshift.server.model import Peer
from gearshift.server.scheduler import ERR_MAGIC, Scheduler
from tests.server.fakes import make


class Side:
    """One connection: a sans-IO core and the scheduler's peer for it."""

    def __init__(self, sched: Scheduler, proto: Any) -> None:
        self.sched = sched
        self.proto = proto
        self.peer = Peer("127.0.0.1", fd=len(sched.peers) + 10)
        sched.connect(self.peer)
        self.reader = PacketReader()
        self.reader.dispatch_to(
            self.peer,
            sched.dispatch,
            [lambda p, a: sched.send(p, ERR_MAGIC)] * 43,
            lambda line: None,
        )

    def send(self, data: bytes) -> None:
        """What the core wrote, as the server reads it (byte by byte: splits are free)."""
        for i in range(len(data)):
            self.reader.feed(data[i : i + 1])
        self.sched.flush()

    def events(self) -> list[Any]:
        """What the server wrote to this side, as the core reads it."""
        data = b"".join(self.peer.out)
        self.peer.out.clear()
        return list(self.proto.receive_data(data))


def pair(sched: Scheduler) -> tuple[Side, Side]:
    return Side(sched, ClientProtocol()), Side(sched, WorkerProtocol())


def _job(worker: Side, function: bytes = b"rev") -> JobAssigned:
    worker.send(worker.proto.grab())
    (assigned,) = worker.events()
    assert isinstance(assigned, JobAssigned) and assigned.function == function
    return assigned


def test_submit_grab_complete_round_trip() -> None:
    sched, _ = make()
    client, worker = pair(sched)
    worker.send(worker.proto.can_do(b"rev"))
    client.send(client.proto.submit(b"rev", b"abc", unique=b"u1", tag="t"))
    (created,) = client.events()
    assert created == JobCreated("t", created.handle, False)
    assigned = _job(worker)
    assert (assigned.handle, assigned.unique, assigned.data) == (created.handle, b"u1", b"abc")
    worker.send(worker.proto.work_complete(assigned.handle, b"cba"))
    (done,) = client.events()
    assert done == WorkUpdate(T.WORK_COMPLETE, created.handle, b"cba") and done.final
    assert not sched.handles and client.proto.idle


def test_status_while_running_and_after() -> None:
    sched, _ = make()
    client, worker = pair(sched)
    worker.send(worker.proto.can_do(b"rev"))
    client.send(client.proto.submit(b"rev", b"x"))
    (created,) = client.events()
    client.send(client.proto.get_status(created.handle, tag=1))
    (queued,) = client.events()
    assert isinstance(queued, StatusReply) and queued.status.known and not queued.status.running
    assigned = _job(worker)
    worker.send(worker.proto.work_status(assigned.handle, 3, 4))
    (update,) = client.events()
    assert (update.type, update.numerator, update.denominator) == (T.WORK_STATUS, 3, 4)
    client.send(client.proto.get_status(created.handle, tag=2))
    (running,) = client.events()
    assert running.tag == 2 and running.status.running
    assert (running.status.numerator, running.status.denominator) == (3, 4)
    worker.send(worker.proto.work_complete(assigned.handle, b""))
    client.events()
    client.send(client.proto.get_status(created.handle, tag=3))
    (gone,) = client.events()
    assert not gone.status.known


def test_coalescing_two_clients_share_one_job() -> None:
    sched, _ = make()
    first, worker = pair(sched)
    second = Side(sched, ClientProtocol())
    worker.send(worker.proto.can_do(b"rev"))
    first.send(first.proto.submit(b"rev", b"one", unique=b"same"))
    second.send(second.proto.submit(b"rev", b"two", unique=b"same"))
    (a,) = first.events()
    (b,) = second.events()
    assert a.handle == b.handle and len(sched.handles) == 1
    second.send(second.proto.get_status_unique(b"same", tag="u"))
    (status,) = second.events()
    assert status.status.waiting == 2
    assigned = _job(worker)
    assert assigned.data == b"one"  # the first submit's payload runs
    worker.send(worker.proto.work_complete(assigned.handle, b"res"))
    assert first.events() == second.events() == [WorkUpdate(T.WORK_COMPLETE, a.handle, b"res")]


def test_data_warning_and_exception_with_and_without_the_option() -> None:
    sched, _ = make()
    plain, worker = pair(sched)
    wants = Side(sched, ClientProtocol())
    wants.send(wants.proto.option(b"exceptions", tag="o"))
    assert wants.events() == [OptionAccepted("o", b"exceptions")]
    worker.send(worker.proto.can_do(b"rev"))
    plain.send(plain.proto.submit(b"rev", b"p", unique=b"k"))
    wants.send(wants.proto.submit(b"rev", b"p", unique=b"k"))
    (created,) = plain.events()
    wants.events()
    assigned = _job(worker)
    worker.send(worker.proto.work_data(assigned.handle, b"chunk"))
    worker.send(worker.proto.work_warning(assigned.handle, b"careful"))
    for side in (plain, wants):
        assert side.events() == [
            WorkUpdate(T.WORK_DATA, created.handle, b"chunk"),
            WorkUpdate(T.WORK_WARNING, created.handle, b"careful"),
        ]
    worker.send(worker.proto.work_exception(assigned.handle, b"boom"))
    assert wants.events() == [WorkUpdate(T.WORK_EXCEPTION, created.handle, b"boom")]
    # gearmand's quirk: without the option, a WORK_FAIL (the core strips its NUL).
    assert plain.events() == [WorkUpdate(T.WORK_FAIL, created.handle)]


def test_sleeping_worker_is_woken_for_a_background_job() -> None:
    sched, _ = make()
    client, worker = pair(sched)
    worker.send(worker.proto.can_do(b"rev"))
    worker.send(worker.proto.pre_sleep())
    assert worker.events() == []
    client.send(client.proto.submit(b"rev", b"bg", background=True, priority=Priority.HIGH))
    (created,) = client.events()
    assert created.background
    assert worker.events() == [Noop()]
    assert _job(worker).data == b"bg"
    client.send(client.proto.echo(b"ping", tag="e"))
    assert client.events() == [EchoReply("e", b"ping")]
