"""The JSON API, the event stream, and the HTTP gateway beyond gearmand's plugin."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gearshift.protocol.codec import encode_request
from gearshift.protocol.packets import PacketType as T
from gearshift.testing import ServerThread
from tests.ops.conftest import RawWorker, admin, http_raw, reverse, wait_for


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread(http=True, http_port=0, handle_prefix="A") as srv:
        yield srv


def http_port(server: ServerThread) -> int:
    assert server.server is not None
    return server.server.http_addresses[0][1]


def get_json(server: ServerThread, path: str) -> Any:
    reply = http_raw(http_port(server), "GET", path)
    assert reply.status == 200, reply
    assert reply.header("Content-Type") == "application/json; charset=utf-8"
    return json.loads(reply.body)


def test_status_workers_jobs(server: ServerThread) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
        s.sendall(encode_request(T.SUBMIT_JOB_HIGH_BG, b"api.f", b"u1", b"payload"))
        assert s.recv(4096).startswith(b"\0RES")
        s.sendall(
            encode_request(
                T.SUBMIT_JOB_EPOCH, b"api.f", b"u2", b"%d" % (time.time() + 3600), b"later"
            )
        )
        assert s.recv(4096).startswith(b"\0RES")
    status = get_json(server, "/api/status")
    assert isinstance(status, dict)
    assert status["server"]["jobs"] == 2
    (row,) = [f for f in status["functions"] if f["name"] == "api.f"]
    assert (row["queued"], row["running"], row["workers"], row["high"], row["normal"]) == (
        2,
        0,
        0,
        1,
        1,
    )
    assert status["counters"]["submitted"] == 2

    jobs = get_json(server, "/api/jobs?function=api.f")
    assert isinstance(jobs, list)
    assert [(j["handle"], j["state"], j["priority"], j["unique"]) for j in jobs] == [
        ("A:1", "queued", "high", "u1"),
        ("A:2", "scheduled", "normal", "u2"),
    ]
    assert get_json(server, "/api/jobs?function=nothing") == []
    one = get_json(server, "/api/jobs/A:1")
    assert isinstance(one, dict) and one["size"] == len(b"payload") and one["background"]
    assert http_raw(http_port(server), "GET", "/api/jobs/A:99").status == 404
    assert http_raw(http_port(server), "GET", "/api/jobs?limit=x").status == 400

    worker = RawWorker(server.port, {"api.g": reverse})
    try:
        wait_for(lambda: any("api.g" in w["functions"] for w in get_json(server, "/api/workers")))
        rows = get_json(server, "/api/workers")
        assert isinstance(rows, list) and len(rows) == 1 and rows[0]["host"] == "127.0.0.1"
        everyone = get_json(server, "/api/workers?all=1")
        assert isinstance(everyone, list) and len(everyone) >= 1
    finally:
        worker.close()


def test_event_stream_sends_frames(server: ServerThread) -> None:
    admin(server.port, "create function sse.f")
    with socket.create_connection(("127.0.0.1", http_port(server)), timeout=20) as s:
        s.sendall(b"GET /api/events?interval=0.2 HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = b""
        while buf.count(b"event: frame") < 2:
            chunk = s.recv(65536)
            assert chunk
            buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    assert b"text/event-stream" in head
    data = next(line for line in body.split(b"\n") if line.startswith(b"data: "))
    frame = json.loads(data[6:])
    assert {"server", "functions", "workers", "jobs", "counters"} <= set(frame)
    assert any(f["name"] == "sse.f" for f in frame["functions"])
    assert frame["workers_total"] == 0 and frame["workers"] == []


def test_dashboard_files_served(server: ServerThread) -> None:
    page = http_raw(http_port(server), "GET", "/")
    assert page.status == 200 and b"/api/events" in page.body
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        reply = http_raw(http_port(server), "GET", f"/dashboard/{name}")
        assert reply.status == 200 and kind in (reply.header("Content-Type") or "")
    assert http_raw(http_port(server), "GET", "/dashboard/..%2Fhttp%2Fapp.js").status == 404
    assert http_raw(http_port(server), "GET", "/dashboard/index.html").status == 404
    assert http_raw(http_port(server), "GET", "/favicon.ico").status == 204
    assert http_raw(http_port(server), "GET", "/api/nope").status == 404
    assert "api/nope" not in admin(server.port, "status")


def data_then_complete(data: bytes) -> tuple[int, bytes]:
    return T.WORK_COMPLETE, b"!"


def test_gateway_delivers_work_data_exceptions_and_refusals(server: ServerThread) -> None:
    port = http_port(server)
    # A worker that sends WORK_DATA chunks before completing, and one that raises.
    import threading

    from gearshift.protocol.codec import Decoder, Packet

    def chunky_worker(stop: threading.Event) -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as w:
            w.sendall(encode_request(T.CAN_DO, b"gw.chunks") + encode_request(T.CAN_DO, b"gw.exc"))
            decoder = Decoder()
            w.settimeout(0.2)
            while not stop.is_set():
                w.sendall(encode_request(T.GRAB_JOB))
                got = None
                while got is None and not stop.is_set():
                    try:
                        data = w.recv(65536)
                    except TimeoutError:
                        continue
                    for ev in decoder.feed(data):
                        if isinstance(ev, Packet):
                            got = ev
                if got is None or got.type != T.JOB_ASSIGN:
                    time.sleep(0.05)
                    continue
                handle, function, _ = got.args
                if function == b"gw.chunks":
                    w.sendall(encode_request(T.WORK_DATA, handle, b"one,"))
                    w.sendall(encode_request(T.WORK_STATUS, handle, b"1", b"2"))
                    w.sendall(encode_request(T.WORK_DATA, handle, b"two,"))
                    w.sendall(encode_request(T.WORK_COMPLETE, handle, b"three"))
                else:
                    w.sendall(encode_request(T.WORK_EXCEPTION, handle, b"ValueError: bad"))

    stop = threading.Event()
    thread = threading.Thread(target=chunky_worker, args=(stop,), daemon=True)
    thread.start()
    try:
        reply = http_raw(port, "POST", "/gw.chunks", b"x", version="HTTP/1.1")
        assert (reply.status, reply.body) == (200, b"one,two,three")
        reply = http_raw(port, "POST", "/gw.exc", b"y")
        assert (reply.status, reply.header("X-Gearman-Command"), reply.body) == (
            200, "WORK_EXCEPTION", b"ValueError: bad",
        )  # fmt: skip
    finally:
        stop.set()
        thread.join(5)
    # Refusals are HTTP errors: a unique id over 64 bytes, a full queue.
    reply = http_raw(port, "POST", "/gw.x", b"z", {"X-Gearman-Unique": "u" * 65})
    assert (reply.status, reply.header("X-Gearman-Command")) == (400, "ERROR")
    assert reply.body.startswith(b"ARGUMENT_TOO_LARGE")
    assert admin(server.port, "create function gw.full").startswith("OK")
    assert admin(server.port, "maxqueue gw.full 1").startswith("OK")
    bg = {"X-Gearman-Background": "true"}
    assert http_raw(port, "POST", "/gw.full", b"1", bg).status == 200
    reply = http_raw(port, "POST", "/gw.full", b"2", bg)
    assert reply.status == 503 and reply.body.startswith(b"QUEUE_ERROR")
    # HEAD never submits.
    assert http_raw(port, "HEAD", "/gw.head").status == 405
    assert "gw.head" not in admin(server.port, "status")


def test_client_hanging_up_leaves_job_ignored(server: ServerThread) -> None:
    port = http_port(server)
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(b"POST /gw.wait HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nq")
    wait_for(lambda: "gw.wait\t1\t0\t0" in admin(server.port, "status"))
    s.close()
    # Nobody waits any more: the job is flagged ignore (gearmand's lazy deletion).
    wait_for(lambda: "\t0\t1\t0" in admin(server.port, "show jobs"))


def test_keep_alive_serves_several_requests(server: ServerThread) -> None:
    worker = RawWorker(server.port, {"ka": reverse})
    try:
        with socket.create_connection(("127.0.0.1", http_port(server)), timeout=20) as s:
            for word in (b"abc", b"hello"):
                s.sendall(
                    b"POST /ka HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(word), word)
                )
                buf = b""
                while not buf.endswith(word[::-1]):
                    chunk = s.recv(65536)
                    assert chunk
                    buf += chunk
                assert buf.startswith(b"HTTP/1.1 200")
    finally:
        worker.close()


def test_debug_log_line_per_state_change(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gearshift.server.observe")
    logging.getLogger("gearshift").setLevel(logging.DEBUG)
    try:
        with ServerThread(handle_prefix="L") as srv:
            worker = RawWorker(srv.port, {"log.f": reverse})
            try:
                with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as s:
                    s.sendall(encode_request(T.SUBMIT_JOB, b"log.f", b"", b"abc"))
                    buf = b""
                    while b"cba" not in buf:
                        buf += s.recv(4096)
                    s.sendall(encode_request(T.SUBMIT_JOB_BG, b"log.idle", b"", b"x"))
                    s.recv(4096)
                assert admin(srv.port, "cancel job L:2").startswith("OK")
            finally:
                worker.close()
    finally:
        logging.getLogger("gearshift").setLevel(logging.NOTSET)
    lines = [r.getMessage() for r in caplog.records if r.name == "gearshift.server.observe"]
    assert any(m.startswith("job created handle=L:1 function=log.f") for m in lines), lines
    assert any(m.startswith("job started handle=L:1 function=log.f") for m in lines), lines
    assert "job finished handle=L:1 function=log.f result=complete" in lines
    assert "job cancelled handle=L:2 function=log.idle" in lines
