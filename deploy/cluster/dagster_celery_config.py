"""Celery settings for the workers (`celery -A dagster_celery.app worker`, with this folder on PYTHONPATH) and, through
the executor's config, for the run workers that submit steps. Broker and results in Redis."""

import os

broker_url = os.environ.get("DAGSTER_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
result_backend = os.environ.get("DAGSTER_CELERY_BACKEND_URL", broker_url)
# One step at a time per worker process: a step is long (a partition).
worker_prefetch_multiplier = 1
broker_connection_retry_on_startup = True
# A worker process that dies (SIGKILL, OOM) fails its step; Dagster's run retry re-executes the run from the
# failure, and the journal answers every row the dead process had already paid for.
task_reject_on_worker_lost = False
# Steps are acknowledged when they start, and a worker takes a step only when it has a free process (no prefetch:
# a step taken by a busy worker would wait behind its current one, and Redis would hand it to another worker after
# the visibility timeout while the first still holds it, running it twice). A started step says which worker runs
# it: the executor (ai_assets.dagster.celery) pings that worker and fails the step once the whole worker is lost (a
# container or node gone), so the run is retried instead of waiting for good.
task_acks_late = False
task_track_started = True
worker_disable_prefetch = True
# A step a lost worker had taken in the instant before starting it goes back to the queue after this many seconds
# (Redis keeps unacknowledged messages until then).
broker_transport_options = {
    "visibility_timeout": int(os.environ.get("AI_ASSETS_CELERY_VISIBILITY_TIMEOUT_S", "120")),
    "max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5,
}
