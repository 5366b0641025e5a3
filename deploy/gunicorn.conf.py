"""gunicorn settings shared by every service's api process (overridable by GUNICORN_* env)."""

import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8080")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 10
keepalive = 5
# Request lines are logged by the app as JSON without query strings (no personal data in logs).
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "warning")

# Prometheus multi-process mode: every gunicorn worker writes its counters to files in one directory
# and /metrics adds them up, so a scrape answers the same whichever worker serves it. Set before any
# worker imports prometheus_client (the app is loaded after the fork); a private directory when the
# operator gives none. On Kubernetes/Compose it lives on the /tmp tmpfs.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    import tempfile

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="recept-metrics-")


def on_starting(server):
    """A fresh master starts with empty counters: files of an earlier run would be added in."""
    import glob

    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.unlink(path)


def child_exit(server, worker):
    """A worker that exited: its live gauges go, its counters stay in the sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
