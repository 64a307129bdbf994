"""/metrics parsed by prometheus-client's own parser, values checked against a workload."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gearshift.protocol.codec import Decoder, Packet, encode_request
from gearshift.protocol.packets import PacketType as T
from gearshift.testing import ServerThread
from tests.ops.conftest import RawWorker, fail, reverse, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> tuple[Samples, dict[str, str]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as res:
        assert res.headers["Content-Type"].startswith("text/plain")
        text = res.read().decode()
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types


def submit(port: int, ptype: int, function: bytes, data: bytes, *, wait: bool) -> Packet:
    """Submit over the binary protocol; wait for the final WORK_* when ``wait``."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(encode_request(ptype, function, b"", data))
        decoder = Decoder()
        while True:
            data_in = s.recv(65536)
            assert data_in, "server closed the connection"
            for ev in decoder.feed(data_in):
                assert isinstance(ev, Packet)
                if ev.type == T.JOB_CREATED and not wait:
                    return ev
                if ev.type in (T.WORK_COMPLETE, T.WORK_FAIL, T.WORK_EXCEPTION):
                    return ev


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread(http=True, http_port=0) as srv:
        yield srv


def test_metrics_match_a_known_workload(server: ServerThread) -> None:
    assert server.server is not None
    http_port = server.server.http_addresses[0][1]
    worker = RawWorker(server.port, {"m.rev": reverse, "m.fail": fail})
    try:
        for i in range(5):
            assert submit(server.port, T.SUBMIT_JOB, b"m.rev", b"x%d" % i, wait=True).args[1]
        for i in range(2):
            assert submit(server.port, T.SUBMIT_JOB, b"m.fail", b"y%d" % i, wait=True).type == (
                T.WORK_FAIL
            )
        for i in range(3):
            submit(server.port, T.SUBMIT_JOB_BG, b"m.idle", b"z%d" % i, wait=False)
        wait_for(lambda: worker.done == 7)
        samples, types = scrape(http_port)
    finally:
        worker.close()

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("gearman_up") == 1
    assert (
        "gearman_version_info",
        (("server", "gearshift"), ("version", server.server.version)),
    ) in samples
    assert value("gearman_jobs", function="m.idle") == 3
    assert value("gearman_jobs_waiting", function="m.idle") == 3
    assert value("gearman_jobs_running", function="m.idle") == 0
    assert value("gearman_jobs", function="m.rev") == 0
    assert value("gearman_workers", function="m.rev") == 1
    assert value("gearman_workers", function="m.fail") == 1
    assert value("gearman_workers", function="m.idle") == 0
    assert value("gearman_jobs_submitted_total", function="m.rev") == 5
    assert value("gearman_jobs_submitted_total", function="m.fail") == 2
    assert value("gearman_jobs_submitted_total", function="m.idle") == 3
    assert value("gearman_jobs_finished_total", function="m.rev", result="complete") == 5
    assert value("gearman_jobs_finished_total", function="m.fail", result="fail") == 2
    assert (
        "gearman_jobs_finished_total",
        (("function", "m.idle"), ("result", "complete")),
    ) not in samples
    assert value("gearman_packets_total", command="SUBMIT_JOB") == 7
    assert value("gearman_packets_total", command="SUBMIT_JOB_BG") == 3
    assert value("gearman_packets_total", command="CAN_DO") == 2
    assert value("gearman_packets_total", command="WORK_COMPLETE") == 5
    assert value("gearman_packets_total", command="WORK_FAIL") == 2
    assert types["gearman_job_wait_seconds"] == "histogram"
    for name, count in (("gearman_job_wait_seconds", 5), ("gearman_job_run_seconds", 5)):
        assert value(name + "_count", function="m.rev") == count
        assert value(name + "_bucket", function="m.rev", le="+Inf") == count
        assert 0 <= value(name + "_sum", function="m.rev") < 20
        # Buckets are cumulative.
        assert value(name + "_bucket", function="m.rev", le="0.001") <= value(
            name + "_bucket", function="m.rev", le="10.0"
        )
    # Nothing ran for m.idle, so it has no run-time series.
    assert ("gearman_job_run_seconds_count", (("function", "m.idle"),)) not in samples
    assert value("gearman_job_wait_seconds_count", function="m.fail") == 2
    # Labels are the function only (plus result / command where named).
    for (name, labels), _ in samples.items():
        if name.startswith("gearman_job_") and name.endswith("_bucket"):
            assert {k for k, _ in labels} == {"function", "le"}


def test_store_commit_histogram_over_http_submission(tmp_path: object) -> None:
    import pathlib

    assert isinstance(tmp_path, pathlib.Path)
    db = tmp_path / "q.db"
    with ServerThread(http=True, http_port=0, queue_type=f"sqlite:///{db}") as srv:
        assert srv.server is not None
        http_port = srv.server.http_addresses[0][1]
        for i in range(4):
            req = urllib.request.Request(
                f"http://127.0.0.1:{http_port}/durable",
                data=b"p%d" % i,
                headers={"X-Gearman-Background": "true"},
                method="POST",
            )
            with urllib.request.urlopen(req, timeout=20) as res:
                assert res.headers["X-Gearman-Command"] == "JOB_CREATED"
        # The binary protocol's durable submits are timed too.
        for i in range(2):
            submit(srv.port, T.SUBMIT_JOB_BG, b"durable", b"b%d" % i, wait=False)
        samples, _ = scrape(http_port)
    key = ("gearman_store_commit_seconds_count", (("function", "durable"),))
    assert samples[key] == 6
    assert samples[("gearman_jobs_waiting", (("function", "durable"),))] == 6
