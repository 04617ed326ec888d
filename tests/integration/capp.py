"""Python Celery client app for the integration tests (never runs tasks itself).

Broker and backend come from CELERYC_TEST_AMQP_URL / CELERYC_TEST_REDIS_URL (set by
scripts/services.sh or by conftest.py before import). JSON only, as a celeryc fleet runs.
`app_v1` publishes protocol-1 messages.
"""
import os

from celery import Celery


def make_app(name="capp", protocol=2):
    a = Celery(name,
               broker=os.environ["CELERYC_TEST_AMQP_URL"],
               backend=os.environ["CELERYC_TEST_REDIS_URL"])
    a.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_protocol=protocol,
        broker_connection_timeout=5,
        broker_connection_max_retries=3,
        result_backend_transport_options={"socket_timeout": 30},
    )
    return a


app = make_app()
app_v1 = make_app("capp_v1", protocol=1)
