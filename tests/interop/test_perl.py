"""Perl's Gearman::Client and Gearman::Worker (CPAN's pure-Perl library) against both servers.

The scripts are written to temporary files and run with ``perl``.  The Perl library
speaks the protocol itself (GRAB_JOB, PRE_SLEEP, OPTION_REQ exceptions, WORK_STATUS,
Storable-encoded exceptions), so it exercises a different client stack than libgearman.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.interop.peers import (
    admin_command,
    background,
    finish,
    require_perl_gearman,
    run,
    status,
    wait_status,
    wait_workers,
)

pytestmark = pytest.mark.interop

WORKER = r"""
use strict;
use warnings;
use Gearman::Worker;
$| = 1;
my ($port, $count) = @ARGV;
my $w = Gearman::Worker->new(job_servers => ["127.0.0.1:$port"], client_id => "perl-worker");
my $done = 0;
$w->register_function(reverse => sub {
    my $job = shift; $done++;
    $job->set_status(1, 2);
    return scalar reverse $job->arg;
});
$w->register_function(fail => sub { $done++; print "job fail\n"; return undef; });
$w->register_function(boom => sub { $done++; print "job boom\n"; die "kaboom\n"; });
$w->register_function(whoami => sub {
    my $job = shift; $done++;
    print "job ", $job->arg, "\n";
    return ($job->handle =~ /^H:[^:]+:\d+$/ ? "ok " : "bad ") . $job->arg;
});
$w->work(stop_if => sub { $done >= $count });
print "worker done\n";
"""

CLIENT = r"""
use strict;
use warnings;
use Gearman::Client;
$| = 1;
my ($port, $phase) = @ARGV;
my $c = Gearman::Client->new(job_servers => ["127.0.0.1:$port"], exceptions => 1);
if ($phase eq "boom") {
    my $ts = $c->new_task_set;
    $ts->add_task(boom => "x", {
        on_exception => sub { print "exception ", length($_[0]) > 0 ? "blob" : "empty", "\n" },
        on_fail => sub { print "fail boom\n" },
    });
    $ts->wait;
    exit 0;
}
my $r = $c->do_task(reverse => "hello");
print "reverse ", $$r, "\n";
my $ts = $c->new_task_set;
$ts->add_task(reverse => "abc", {
    on_status => sub { print "status $_[0]/$_[1]\n" },
    on_complete => sub { print "complete ${$_[0]}\n" },
});
$ts->wait;
$ts = $c->new_task_set;
$ts->add_task(fail => "x", {
    on_fail => sub { print "fail\n" }, on_complete => sub { print "complete?\n" },
});
$ts->wait;
for my $p (qw(high normal low)) {
    my $r = $c->do_task(whoami => "fg-$p", { priority => $p });
    print "$p ", $$r, "\n";
}
my $h = $c->dispatch_background(whoami => "bg", { uniq => "u-bg" });
print "bg ", ($h =~ m{^127\.0\.0\.1:\d+//H:[^:]+:\d+$} ? "HANDLE" : $h), "\n";
my $st = $c->get_status($h);
print "get_status known=", ($st->known ? 1 : 0), " running=", ($st->running ? 1 : 0), "\n";
$c->dispatch_background(whoami => "bgl", { uniq => "u-bgl", priority => "low" });
$c->dispatch_background(whoami => "bgh", { uniq => "u-bgh", priority => "high" });
$c->dispatch_background(whoami => "dup", { uniq => "u-bg" });
my $status = $c->get_job_server_status;
my ($server) = values %$status;
print "server status whoami queued=$server->{whoami}{queued} running=$server->{whoami}{running}\n";
"""


@pytest.fixture
def scripts(tmp_path: Path) -> tuple[Path, Path]:
    worker, client = tmp_path / "worker.pl", tmp_path / "client.pl"
    worker.write_text(WORKER)
    client.write_text(CLIENT)
    return worker, client


def test_perl_client_and_worker(make_any_server: ServerFactory, scripts: tuple[Path, Path]) -> None:
    perl = require_perl_gearman()
    srv = make_any_server()
    worker, client = scripts
    port = str(srv.port)
    # six foreground jobs: reverse x2, fail, whoami x3
    with background([perl, str(worker), port, "6"]) as w:
        wait_workers(srv, "whoami")
        rows = admin_command(srv, "workers")
        assert any(b" perl-worker : " in r for r in rows), rows
        res = run([perl, str(client), port, "main"])
        assert (res.returncode, res.stderr) == (0, b"")
        assert res.stdout.decode().splitlines() == [
            "reverse olleh",
            "status 1/2",
            "complete cba",
            "fail",
            "high ok fg-high",
            "normal ok fg-normal",
            "low ok fg-low",
            "bg HANDLE",
            "get_status known=1 running=0",
            "server status whoami queued=3 running=0",
        ]
        rc, out, err = finish(w)
    assert (rc, err) == (0, b"")
    assert out.decode().splitlines() == [
        "job fail",
        "job fg-high",
        "job fg-normal",
        "job fg-low",
        "worker done",
    ]
    # the queued background jobs (the duplicate unique coalesced) run high, normal, low
    with background([perl, str(worker), port, "3"]) as w2:
        rc, out, err = finish(w2)
    assert (rc, err) == (0, b"")
    assert out.decode().splitlines() == ["job bgh", "job bg", "job bgl", "worker done"]
    wait_status(srv, "whoami", (0, 0, 0))


def test_perl_worker_exception(make_any_server: ServerFactory, scripts: tuple[Path, Path]) -> None:
    perl = require_perl_gearman()
    srv = make_any_server()
    worker, client = scripts
    # asks for two jobs so it keeps reading after the first and sees the server's reply
    with background([perl, str(worker), str(srv.port), "2"]) as w:
        wait_workers(srv, "boom")
        res = run([perl, str(client), str(srv.port), "boom"])
        # The client asked for exceptions (OPTION_REQ), so it gets WORK_EXCEPTION, which
        # ends the job: the worker's WORK_FAIL that follows is refused (below).
        assert res.stdout.decode().splitlines() == ["exception blob"]
        rc, out, err = finish(w)
    assert out == b"job boom\n"
    # Gearman::Worker follows WORK_EXCEPTION with WORK_FAIL; the job is already over, so
    # both servers answer ERROR JOB_NOT_FOUND, which this library treats as fatal.
    assert rc != 0
    assert b"JOB_NOT_FOUND -- Job given in work result not found" in err
    assert status(srv)["boom"][0] == 0
