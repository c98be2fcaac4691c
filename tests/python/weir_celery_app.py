"""The smallest Celery application, for tests/python/test_celery.py.

The worker is started as `celery -A weir_celery_app worker` with this directory on PYTHONPATH,
so the broker address comes from the environment (WEIR_CELERY_BROKER_URL); the test process
imports the same module and points it at the same broker. Results travel over AMQP too
(`rpc://`: a reply queue per client), so Weir is the only moving part.
"""
import os

from celery import Celery

app = Celery(
    "weir_celery_app",
    broker=os.environ.get("WEIR_CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend="rpc://",
)
app.conf.update(
    # Fail fast instead of retrying for minutes when the broker is not there.
    broker_connection_timeout=10,
    broker_connection_retry_on_startup=False,
    broker_connection_max_retries=3,
    task_publish_retry_policy={"max_retries": 3, "interval_start": 0, "interval_step": 0.5},
    worker_hijack_root_logger=False,
)


@app.task
def add(x, y):
    return x + y
