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

# The app is loaded once in the master, then the workers are forked from it: they share its imported
# code and the data made at start (copy-on-write) instead of each importing everything again
# (issue 19, docs/operations.md "Processes and memory"). What the load opens is fork-safe: the
# master closes its database connections before forking (when_ready) and a forked child never
# touches an inherited pooled connection (shared/db.py); the broker is only reached from requests,
# tracing restarts its export thread in the child. GUNICORN_PRELOAD=0 loads the app per worker.
preload_app = os.environ.get("GUNICORN_PRELOAD", "1").lower() not in ("0", "false", "no")

# Prometheus multi-process mode: every gunicorn worker writes its counters to files in one directory
# and /metrics adds them up, so a scrape answers the same whichever worker serves it. Set before
# prometheus_client is imported (the preloaded app imports it in the master; its values are kept per
# pid, so each worker writes its own files); a private directory when the operator gives none. On Kubernetes/Compose it lives on the /tmp tmpfs.
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


def when_ready(server):
    """The master, app loaded, about to fork its workers: drop the connections the load opened (the
    erasure replay reads the database), and freeze what exists now out of the cyclic garbage
    collector, whose passes would otherwise write to every shared object and unshare its page."""
    import gc

    if server.cfg.preload_app:
        from shared.db import close_pooled_connections

        close_pooled_connections()
        gc.collect()
        gc.freeze()
