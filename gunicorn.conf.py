"""gunicorn settings for the web process (Procfile `web`).

gevent workers: every connection is a greenlet, so a client that sends its body slowly, or
holds a connection open, costs a greenlet rather than one of a few threads. With gthread,
16 such clients took all 8 threads and no webhook was answered (docs/benchmarks.md). Per
process, WEB_THREADS requests at a time hold a Postgres connection (as many as gthread's
threads did), and a body still arriving WEB_BODY_TIMEOUT seconds into a request gets 408
(listener/serving.py). `timeout` (a heartbeat for gevent workers) stays under the 15 s fal
allows for a first delivery; so does the body deadline.
"""

import os
from typing import Any

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_connections = int(os.environ.get("WEB_CONNECTIONS", "1000"))
timeout = 15
graceful_timeout = 20
keepalive = 5
max_requests = 10000
max_requests_jitter = 1000
accesslog = "-"
# gunicorn's control socket has one default path per user ($HOME/.gunicorn/gunicorn.ctl):
# a second gunicorn on the machine (another app, a test run) would take it over. Nothing
# here uses gunicornc.
control_socket_disable = True

_db_connections = int(os.environ.get("WEB_THREADS", "4"))
_body_seconds = float(os.environ.get("WEB_BODY_TIMEOUT", "10"))


def post_worker_init(worker: Any) -> None:
    from listener.serving import configure

    configure(worker.wsgi, db_connections=_db_connections, body_seconds=_body_seconds)


# prometheus-client's multiprocess mode: each process writes its counters to files in one
# folder and /metrics adds them up. Set before the workers import prometheus_client.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    import tempfile

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="falback-metrics-")
    _own_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
else:
    _own_metrics_dir = None


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):  # type: ignore[no-untyped-def]
    if _own_metrics_dir:
        import shutil

        shutil.rmtree(_own_metrics_dir, ignore_errors=True)
