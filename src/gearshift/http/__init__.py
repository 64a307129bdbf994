"""The HTTP listener: gearmand's HTTP job submission, Prometheus metrics, JSON API, dashboard.

Needs the ``http`` extra (aiohttp, prometheus-client); the server imports this package
only when the listener is enabled (``-r http`` or ``--http-port``).
"""

from gearshift.http.app import HttpService, build_app

__all__ = ["HttpService", "build_app"]
