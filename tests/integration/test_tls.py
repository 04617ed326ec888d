"""amqps:// end to end: the C worker on RabbitMQ's TLS listener (scripts/services.sh makes a
throwaway CA, a server certificate for DNS:localhost + IP:127.0.0.1 and a client
certificate; the broker requires the client certificate), with Celery's broker_use_ssl keys
as options: broker_ssl_ca_certs, broker_ssl_certfile, broker_ssl_keyfile, broker_ssl_verify.

The Python client publishes over plain amqp:// to the same broker: only the worker's
connection is under test.

rabbitmq-c 0.11 checks the host name against the certificate's DNS names only, so the URL
says "localhost"; "127.0.0.1" fails even though the certificate has that IP SAN
(test_tls_ip_host_fails_hostname_check pins this down).
"""
import os
import subprocess

import pytest

from conftest import TIMEOUT, c_only, celeryc_bin, scaled, unique_queue

pytestmark = c_only

# Start-up failures must be reported well within this (connect timeout is 4 s by default).
EXIT_DEADLINE = 15


@pytest.fixture
def tls(services):
    if not os.environ.get("CELERYC_TEST_AMQPS_URL"):
        pytest.skip("no TLS listener (services started without openssl or CELERYC_TEST_TLS=0)")
    return {
        "url": os.environ["CELERYC_TEST_AMQPS_URL"],
        "port": os.environ["CELERYC_TEST_AMQPS_PORT"],
        "ca": os.environ["CELERYC_TEST_CA_FILE"],
        "cert": os.environ["CELERYC_TEST_CLIENT_CERT"],
        "key": os.environ["CELERYC_TEST_CLIENT_KEY"],
    }


@pytest.fixture
def other_ca(tmp_path):
    """A CA that signed nothing the broker presents."""
    key, pem = tmp_path / "other-ca.key", tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=celeryc unrelated test CA", "-keyout", str(key),
                    "-out", str(pem)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=scaled(30))
    return str(pem)


def tls_argv(q, url, *extra):
    return [celeryc_bin(), "worker", "-b", url,
            "--result-backend", os.environ["CELERYC_TEST_REDIS_URL"],
            "-Q", q, "-n", "tls-%s@localhost" % q, "-c", "2", "-l", "info",
            "--broker-connection-timeout", "4", *extra]


def client_cert_flags(tls):
    return ["--broker-ssl-cert", tls["cert"], "--broker-ssl-key", tls["key"]]


def assert_fails_to_start(w, *needles):
    rc = w.wait_exit(EXIT_DEADLINE)
    assert rc is not None, "worker still running after %ss; log:\n%s" % (
        scaled(EXIT_DEADLINE), w.log()[-3000:])
    assert rc != 0
    log = w.log()
    assert "ready" not in log
    for n in needles:
        assert n in log, "%r not in the log:\n%s" % (n, log[-3000:])
    return log


def test_tls_worker_runs_task(app, worker_factory, tls):
    q = unique_queue("tls")
    w = worker_factory(queue=q, argv=tls_argv(q, tls["url"], "--broker-ssl-ca", tls["ca"],
                                              *client_cert_flags(tls)))
    assert "transport amqps://guest:**@localhost:%s//" % tls["port"] in w.log()
    assert app.send_task("demo.add", args=[2, 3], queue=q).get(timeout=TIMEOUT) == 5
    assert "broker_ssl_verify is none" not in w.log()


def test_tls_options_from_config_file_and_ssl_cert_file(app, worker_factory, tls, tmp_path):
    """Celery's names in the config file; the CA from $SSL_CERT_FILE when none is set."""
    q = unique_queue("tlscfg")
    cfg = tmp_path / "celeryc.conf"
    cfg.write_text("broker_url = %s\nbroker_ssl_certfile = %s\nbroker_ssl_keyfile = %s\n"
                   "broker_ssl_verify = required\n" % (tls["url"], tls["cert"], tls["key"]))
    argv = [celeryc_bin(), "worker", "--config", str(cfg),
            "--result-backend", os.environ["CELERYC_TEST_REDIS_URL"], "-Q", q,
            "-n", "tlscfg-%s@localhost" % q, "-c", "1", "-l", "info"]
    worker_factory(queue=q, argv=argv,
                   env={"SSL_CERT_FILE": tls["ca"], "CELERY_BROKER_URL": ""})
    assert app.send_task("demo.add", args=[20, 22], queue=q).get(timeout=TIMEOUT) == 42


def test_tls_wrong_ca_fails_to_start(worker_factory, tls, other_ca):
    q = unique_queue("tlsbad")
    w = worker_factory(queue=q, wait_ready=False,
                       argv=tls_argv(q, tls["url"], "--broker-ssl-ca", other_ca,
                                     *client_cert_flags(tls)))
    assert_fails_to_start(w, "Cannot connect to amqps://guest:**@localhost",
                          "SSL peer cert verification failed", "broker_ssl_ca_certs")


def test_tls_verify_none_connects_with_wrong_ca_and_warns(app, worker_factory, tls, other_ca):
    q = unique_queue("tlsnone")
    w = worker_factory(queue=q, argv=tls_argv(q, tls["url"], "--broker-ssl-ca", other_ca,
                                              "--broker-ssl-verify", "none",
                                              *client_cert_flags(tls)))
    assert "WARNING" in w.log() and "broker_ssl_verify is none" in w.log()
    assert app.send_task("demo.add", args=[1, 1], queue=q).get(timeout=TIMEOUT) == 2


def test_tls_ip_host_fails_hostname_check(worker_factory, tls):
    """rabbitmq-c 0.11 matches DNS names only: an IP in the URL never verifies."""
    q = unique_queue("tlsip")
    url = "amqps://guest:guest@127.0.0.1:%s//" % tls["port"]
    w = worker_factory(queue=q, wait_ready=False,
                       argv=tls_argv(q, url, "--broker-ssl-ca", tls["ca"],
                                     *client_cert_flags(tls)))
    assert_fails_to_start(w, "SSL hostname verification failed")


def test_tls_client_certificate_is_required_by_the_broker(worker_factory, tls):
    """The test broker demands a client certificate: without one the worker cannot log in
    (so the certificate in the other tests is really sent)."""
    q = unique_queue("tlsnocert")
    w = worker_factory(queue=q, wait_ready=False,
                       argv=tls_argv(q, tls["url"], "--broker-ssl-ca", tls["ca"]))
    assert_fails_to_start(w, "Cannot connect to amqps://")


@pytest.mark.parametrize("flag,option", [
    ("--broker-ssl-ca", "broker_ssl_ca_certs"),
    ("--broker-ssl-cert", "broker_ssl_certfile"),
    ("--broker-ssl-key", "broker_ssl_keyfile"),
])
def test_tls_missing_file_is_a_config_error(worker_factory, tls, tmp_path, flag, option):
    q = unique_queue("tlsmiss")
    missing = str(tmp_path / "nope.pem")
    extra = [flag, missing]
    if flag == "--broker-ssl-key":
        extra += ["--broker-ssl-cert", tls["cert"]]
    w = worker_factory(queue=q, wait_ready=False, argv=tls_argv(q, tls["url"], *extra))
    rc = w.wait_exit(EXIT_DEADLINE)
    assert rc == 78, w.log()
    assert "%s: %s: cannot read '%s'" % (flag, option, missing) in w.log()
