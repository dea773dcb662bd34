"""Celery settings for the workers (`celery -A dagster_celery.app worker`, with this folder on PYTHONPATH) and, through
the executor's config, for the run workers that submit steps. Broker and results in Redis."""

import os

broker_url = os.environ.get("DAGSTER_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
result_backend = os.environ.get("DAGSTER_CELERY_BACKEND_URL", broker_url)
# One step at a time per worker process, taken only when the worker is free: a step is long (a partition) and a
# prefetched one would wait behind it while another worker idles.
worker_prefetch_multiplier = 1
broker_connection_retry_on_startup = True
# A worker process that dies (SIGKILL, OOM) fails its step; Dagster's run retry re-executes the run from the
# failure, and the journal answers every row the dead process had already paid for.
task_reject_on_worker_lost = False
