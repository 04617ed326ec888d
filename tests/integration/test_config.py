"""Config precedence end to end: file < environment < command line."""
import os
import time

from conftest import TIMEOUT, c_only, celeryc_bin, unique_queue

pytestmark = c_only


def test_config_file_env_and_flag_precedence(app, worker_factory, tmp_path):
    q = unique_queue("cfg")
    cfg = tmp_path / "celeryc.conf"
    cfg.write_text(
        "# set by the file; the env var overrides the broker, -c overrides concurrency\n"
        "broker_url = \"amqp://guest:guest@127.0.0.1:1//\"\n"
        "task_queues = %s\n"
        "worker_concurrency = 1\n" % q)
    argv = [celeryc_bin(), "worker", "--config", str(cfg),
            "--result-backend", os.environ["CELERYC_TEST_REDIS_URL"], "-c", "2",
            "-n", "cfg-%s@localhost" % q, "-l", "info"]
    worker_factory(queue=q, argv=argv,
                   env={"CELERY_BROKER_URL": os.environ["CELERYC_TEST_AMQP_URL"]})
    # Two 1 s sleeps overlap only with concurrency 2.
    t0 = time.monotonic()
    rs = [app.send_task("demo.sleep", args=[1], queue=q) for _ in range(2)]
    assert [r.get(timeout=TIMEOUT) for r in rs] == [1, 1]
    assert time.monotonic() - t0 < 1.8
