"""The peer: wangban's five-stage chain in Celery over the same RabbitMQ.

Five stages, each a Celery task on its own quorum queue, each run by its own Celery worker
(prefork pool of 2 processes by default, 4 prefetched per process). Like a wangban hop, each stage
commits one row to PostgreSQL (durably) and hands the message on; acks are late (after the task),
publishes are confirmed. Unlike a wangban hop it keeps no inbox, outbox or audit chain, and reads
nothing: it is the cost of the chain itself. Driven by run.sh.
"""
import os
import threading

import psycopg
from celery import Celery
from kombu import Queue

PREFIX = os.environ.get("CELERY_BENCH_PREFIX", "bench-celery")
DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
STAGES = 5

app = Celery("wangban_peer", broker=os.environ.get("CELERY_BROKER_URL",
                                                   "pyamqp://guest:guest@127.0.0.1:5672//"))
app.conf.update(
    task_queues=[Queue(f"{PREFIX}.stage{i}", queue_arguments={"x-queue-type": "quorum"})
                 for i in range(1, STAGES + 1)],
    task_acks_late=True,               # manual ack after the task, as wangban's workers
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=4,      # unacknowledged deliveries per pool process
    broker_transport_options={"confirm_publish": True},  # publisher confirms
    task_ignore_result=True,
    worker_hijack_root_logger=False,
)

_local = threading.local()


def db():
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = psycopg.connect(DATABASE_URL, autocommit=True)
        _local.conn = conn
    return conn


def hop(chain_id: str, stage: int, payload: str):
    db().execute(f'INSERT INTO "{PREFIX}_hops" (chain_id, stage) VALUES (%s, %s)',
                 (chain_id, stage))
    if stage < STAGES:
        STAGE_TASKS[stage].apply_async((chain_id, payload), queue=f"{PREFIX}.stage{stage + 1}")


def make(stage):
    @app.task(name=f"stage{stage}")
    def task(chain_id, payload):
        hop(chain_id, stage, payload)
    return task


STAGE_TASKS = [make(i) for i in range(1, STAGES + 1)]
