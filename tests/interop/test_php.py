"""PHP's gearman extension (php-gearman on libgearman): a client and a worker script.

The scripts are written to temporary files and run with ``php``.  Both servers get the
same expectations.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.interop.peers import (
    admin_command,
    background,
    finish,
    require_php_gearman,
    run,
    status,
    wait_status,
    wait_workers,
)

pytestmark = pytest.mark.interop

WORKER = r"""<?php
$port = (int)$argv[1]; $count = (int)$argv[2];
$w = new GearmanWorker();
$w->addServer('127.0.0.1', $port);
$w->setId('php-worker');
$done = 0;
$w->addFunction('reverse', function (GearmanJob $job) use (&$done) {
    $done++;
    $job->sendStatus(1, 2);
    $job->sendData('partial');
    $job->sendWarning('careful');
    return strrev($job->workload());
});
$w->addFunction('fail', function (GearmanJob $job) use (&$done) {
    $done++;
    echo "job fail\n";
    $job->setReturn(GEARMAN_WORK_FAIL);
    return '';
});
$w->addFunction('whoami', function (GearmanJob $job) use (&$done) {
    $done++;
    echo "job ", $job->unique(), " ", $job->workload(), "\n";
    return $job->unique() . '|' . $job->functionName() . '|' . $job->workload();
});
// registered with a timeout: libgearman sends CAN_DO_TIMEOUT
$w->addFunction('timed', function (GearmanJob $job) use (&$done) {
    $done++;
    return 'timed:' . $job->workload();
}, null, 5);
// work() also returns after a failed job or a NOOP, so count the jobs themselves
while ($done < $count) {
    $w->work();
}
echo "worker done\n";
"""

CLIENT = r"""<?php
$port = (int)$argv[1];
$c = new GearmanClient();
$c->addServer('127.0.0.1', $port);
$c->setTimeout(20000);
$c->setStatusCallback(function ($t) {
    echo "status ", $t->functionName(), " ", $t->taskNumerator(), "/", $t->taskDenominator(), "\n";
});
$c->setDataCallback(function ($t) { echo "data ", $t->functionName(), " ", $t->data(), "\n"; });
$c->setWarningCallback(function ($t) {
    echo "warning ", $t->functionName(), " ", $t->data(), "\n";
});
$c->setCompleteCallback(function ($t) {
    echo "complete ", $t->functionName(), " ", $t->data(), "\n";
});
$c->setFailCallback(function ($t) { echo "fail ", $t->functionName(), "\n"; });
$c->addTask('reverse', 'hello');
$c->runTasks();
$c->addTask('fail', 'x');
$c->runTasks();
foreach (['doNormal', 'doHigh', 'doLow'] as $m) {
    $r = $c->$m('whoami', "via-$m", "u-$m");
    echo "$m ", $r, " rc=", $c->returnCode(), "\n";
}
$h = $c->doBackground('whoami', 'bg', 'u-bg');
echo "bg ", preg_replace('/^H:.*:\d+$/', 'HANDLE', $h), " rc=", $c->returnCode(), "\n";
echo "jobStatus ", json_encode($c->jobStatus($h)), "\n";
$c->doLowBackground('whoami', 'bgl', 'u-bgl');
$c->doHighBackground('whoami', 'bgh', 'u-bgh');
$c->doBackground('whoami', 'dup', 'u-bg');
echo "jobStatus-unknown ", json_encode($c->jobStatus('H:nosuch:1')), "\n";
echo "ping ", var_export($c->ping('pingdata'), true), "\n";
"""


@pytest.fixture
def scripts(tmp_path: Path) -> tuple[Path, Path]:
    worker, client = tmp_path / "worker.php", tmp_path / "client.php"
    worker.write_text(WORKER)
    client.write_text(CLIENT)
    return worker, client


def test_php_client_and_worker(make_any_server: ServerFactory, scripts: tuple[Path, Path]) -> None:
    php = require_php_gearman()
    srv = make_any_server()
    worker, client = scripts
    # five foreground jobs: reverse, fail, doNormal, doHigh, doLow
    with background([php, str(worker), str(srv.port), "5"]) as w:
        wait_workers(srv, "whoami")
        rows = admin_command(srv, "workers")
        assert any(b" php-worker : reverse fail whoami timed\n" in r for r in rows), rows
        assert status(srv)["timed"] == (0, 0, 1)
        res = run([php, str(client), str(srv.port)])
        assert res.stderr == b""
        assert res.stdout.decode().splitlines() == [
            "status reverse 1/2",
            "data reverse partial",
            "warning reverse careful",
            "complete reverse olleh",
            "fail fail",
            "doNormal u-doNormal|whoami|via-doNormal rc=0",
            "doHigh u-doHigh|whoami|via-doHigh rc=0",
            "doLow u-doLow|whoami|via-doLow rc=0",
            "bg HANDLE rc=0",
            "jobStatus [true,false,0,0]",
            "jobStatus-unknown [false,false,0,0]",
            "ping true",
        ]
        rc, out, _err = finish(w)
    assert rc == 0
    assert out.decode().splitlines() == [
        "job fail",
        "job u-doNormal via-doNormal",
        "job u-doHigh via-doHigh",
        "job u-doLow via-doLow",
        "worker done",
    ]
    # the background jobs wait (the duplicate unique coalesced): high, normal, low
    wait_status(srv, "whoami", (3, 0, 0))
    with background([php, str(worker), str(srv.port), "3"]) as w2:
        rc, out, _err = finish(w2)
    assert rc == 0
    assert out.decode().splitlines() == [
        "job u-bgh bgh",
        "job u-bg bg",
        "job u-bgl bgl",
        "worker done",
    ]
    wait_status(srv, "whoami", (0, 0, 0))


def test_php_ping_and_timeout(make_any_server: ServerFactory) -> None:
    php = require_php_gearman()
    srv = make_any_server()
    res = run([php, "-r", _NO_WORKER.replace("PORT", str(srv.port))])
    assert res.stdout == b"ping true\nrc 47\n"  # GEARMAN_TIMEOUT
    assert status(srv)["nobody"][0] == 1


_NO_WORKER = (
    "$c = new GearmanClient(); $c->addServer('127.0.0.1', PORT); $c->setTimeout(500);"
    " echo 'ping ', var_export($c->ping('x'), true), \"\\n\";"
    " @$c->doNormal('nobody', 'x'); echo 'rc ', $c->returnCode(), \"\\n\";"
)
