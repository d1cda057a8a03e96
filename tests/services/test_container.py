"""The container image (Containerfile), as CI builds it (.ci/image): migrate, web, worker and
beat run as containers on the host's network against this machine's PostgreSQL and Redis
and the stand-in, all on loopback; a certificate moves through the API; SIGTERM stops
everything and no task is lost.

`.ci/run` builds the image and names it in CI_IMAGE; without it these tests fail, like the
rest of the tier without its services.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
import requests
import yaml

from tests.conftest import SOURCE, TARGET, api_token, make_account, make_user
from tests.services.conftest import REPO, free_port, wait_until
from tests.services.test_tier import seed_certificates
from transfers import inventory
from transfers.models import Certificate, Notice, Role, Transfer

pytestmark = pytest.mark.django_db(transaction=True)

PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": str(REPO / "deploy" / "containers.conf")}
# The entrypoint refuses to start a process without these (deploy/entrypoint.sh).
SHARED_SETTINGS = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "FIELD_ENCRYPTION_KEYS")


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603
        ["podman", *args],  # noqa: S607
        env=PODMAN_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


@pytest.fixture(scope="module")
def image() -> str:
    name = os.environ.get("CI_IMAGE", "")
    if not shutil.which("podman"):
        pytest.fail("podman is not installed: .ci/image installs it and builds the image.")
    if not name:
        pytest.fail("CI_IMAGE is not set: .ci/run builds the image with .ci/image and sets it.")
    if podman("image", "exists", name, check=False).returncode != 0:
        pytest.fail(f"The image {name} is not in podman's store: build it with .ci/image.")
    return name


@pytest.fixture
def containers(image, services_env, tmp_path) -> Iterator[Callable[..., str]]:
    """``run(command, *args, env=...)`` starts a detached container of the image on the
    host's network with the tier's settings, the secret key given as a file (SECRET_KEY_FILE),
    and returns its name; every one is removed at the end."""
    secret = tmp_path / "secret_key"
    secret.write_text(f"container-test-{uuid.uuid4()}")
    secret.chmod(0o444)  # the image's user is not root
    settings = {
        **{name: services_env[name] for name in ("DATABASE_URL", "REDIS_URL")},
        **{name: services_env[name] for name in services_env if name.startswith("AWS_")},
        "FIELD_ENCRYPTION_KEYS": services_env["FIELD_ENCRYPTION_KEYS"],
        "SECRET_KEY_FILE": "/run/secrets/secret_key",
        "TRANSFER_STALL_MINUTES": "1",
        "TRANSFER_LEASE_SECONDS": "30",
        "HEARTBEAT_SECONDS": "5",
        "RECONCILE_SECONDS": "5",
        "METRICS_TOKEN": "container-test",
    }
    prefix = f"portal-test-{uuid.uuid4().hex[:8]}"
    started: list[str] = []

    def run(command: str, *args: str, env: dict | None = None, detach: bool = True) -> str:
        name = f"{prefix}-{command}-{len(started)}"
        options = [f"--env={key}={value}" for key, value in {**settings, **(env or {})}.items()]
        started.append(name)
        podman(
            "run",
            *(["--detach"] if detach else []),
            f"--name={name}",
            "--network=host",
            # No systemd here to run the check on a timer: `podman healthcheck run` does it.
            "--health-interval=disable",
            f"--volume={secret}:/run/secrets/secret_key:ro",
            *options,
            image,
            command,
            *args,
            timeout=300,
            check=detach,  # a job's exit status is the test's to read (exit_code)
        )
        return name

    yield run
    for name in started:
        podman("rm", "--force", "--time=5", name, check=False)


def logs(name: str) -> str:
    result = podman("logs", name, check=False)
    return (result.stdout + result.stderr)[-6000:]


def exit_code(name: str) -> int:
    return int(podman("inspect", "--format={{.State.ExitCode}}", name).stdout)


def wait_for(check: Callable[[], object], timeout: float, what: str, *names: str) -> None:
    """wait_until, with the containers' logs as they are when it gives up."""
    try:
        wait_until(check, timeout, what)
    except AssertionError as timed_out:
        raise AssertionError("\n".join([str(timed_out), *map(logs, names)])) from None


def queued(broker: redis.Redis) -> dict[str, int]:
    """Messages waiting in Redis: every Celery queue list, and those taken but not acked."""
    waiting = {
        key.decode(): broker.llen(key)
        for key in broker.scan_iter("celery*")
        if broker.type(key) == b"list"
    }
    return {**waiting, "unacked": broker.hlen("unacked")}


def test_the_image_runs_as_a_user_without_its_development_files(image):
    assert podman("image", "inspect", "--format={{.Config.User}}", image).stdout.strip() == (
        "10001:10001"
    )
    listing = podman("run", "--rm", "--entrypoint=ls", image, "-A", "/app").stdout.split()
    assert "staticfiles" in listing  # collected at build time
    assert not {".git", ".venv", "var", "tests", "node_modules"} & set(listing)
    # The demo's stand-in (moto) and supervisor stay out of production's image.
    found = podman("run", "--rm", "--entrypoint=python", image, "-c", "import moto", check=False)
    assert found.returncode != 0


def test_a_process_without_the_shared_settings_refuses_to_start(image):
    refused = podman("run", "--rm", "--network=none", image, "worker", check=False)
    assert refused.returncode == 64
    assert "set " + " ".join(SHARED_SETTINGS) in refused.stderr


def test_the_migrate_job_builds_an_empty_database(containers, services_env):
    import psycopg

    name = f"portal_image_{uuid.uuid4().hex[:8]}"
    admin_url = services_env["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = services_env["DATABASE_URL"].rsplit("/", 1)[0] + f"/{name}"
        job = containers("migrate", env={"DATABASE_URL": url}, detach=False)
        assert exit_code(job) == 0, logs(job)
        assert "Applying transfers.0001" in logs(job)
        check = containers("manage", "migrate", "--check", env={"DATABASE_URL": url}, detach=False)
        assert exit_code(check) == 0, logs(check)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_web_worker_and_beat_move_a_certificate_and_stop_without_losing_a_task(
    containers, standin_url, remote
):
    # One DetachPolicy a second (the account's API rate): the worker is still detaching
    # its six policies when it is told to stop.
    source = make_account(SOURCE, "Fleet production", api_rate=1.0)
    make_account(TARGET, "Acme devices")
    policies = [f"Device{i}" for i in range(6)]
    (cert_id,) = seed_certificates(standin_url, 1, policies=policies)
    inventory.sync_region(inventory.queue_sync(source, "us-east-1")[0].pk)
    cert = Certificate.objects.get(certificate_id=cert_id)
    requester = api_token(make_user("req", (source, Role.REQUESTER)))
    approver = api_token(make_user("app", (source, Role.APPROVER)))
    broker = redis.Redis.from_url(os.environ["REDIS_URL"])

    migrate = containers("migrate", detach=False)
    assert exit_code(migrate) == 0, logs(migrate)
    port = free_port()
    web = containers("web", env={"WEB_BIND": f"127.0.0.1:{port}", "WEB_WORKERS": "2"})
    worker = containers("worker", env={"WORKER_CONCURRENCY": "2"})
    beat = containers("beat")
    url = f"http://127.0.0.1:{port}"

    def health() -> requests.Response | None:
        try:
            answer = requests.get(
                f"{url}/health/", headers={"Authorization": "Bearer container-test"}, timeout=5
            )
        except requests.RequestException:  # not listening yet, or its workers still booting
            return None
        return answer if answer.status_code == 200 else None

    wait_for(health, 90, "a healthy /health/", web, worker, beat)
    for name in (web, worker, beat):
        checked = podman("healthcheck", "run", name, check=False)
        assert checked.returncode == 0, (name, checked.stdout, checked.stderr, logs(name))
    # Beat stops first: from here on nothing sends periodic tasks, so whatever is queued
    # at the end was sent by this transfer.
    podman("stop", "--time=30", beat)

    created = requests.post(
        f"{url}/api/transfers/",
        json={"certificate": cert.pk, "target_account_id": TARGET, "reason": "container test"},
        headers={"Authorization": f"Token {requester}"},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    pk = created.json()["id"]
    approved = requests.post(
        f"{url}/api/transfers/{pk}/approve/",
        json={},
        headers={"Authorization": f"Token {approver}"},
        timeout=30,
    )
    assert approved.status_code == 200, approved.text

    # DetachPolicy names its certificate in the body, which the stand-in does not count by.
    wait_for(lambda: remote.call_count("DetachPolicy") >= 1, 60, "a DetachPolicy", worker)
    assert remote.call_count("TransferCertificate", cert_id) == 0
    stopping = time.monotonic()
    podman("stop", "--time=60", worker, timeout=90)
    stopped_in = time.monotonic() - stopping

    # The warm shutdown finished the transfer in hand before the worker exited.
    worker_log = logs(worker)
    assert exit_code(worker) == 0, worker_log
    assert stopped_in < 55, f"took {stopped_in:.0f} s: killed, not stopped\n{worker_log}"
    assert "Warm shutdown" in worker_log
    transfer = Transfer.objects.get(pk=pk)
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE, transfer.error_message
    assert remote.call_count("TransferCertificate", cert_id, "ok") == 1

    # What it had not started (the notices) waits in Redis for the next worker.
    next_worker = containers("worker", env={"WORKER_CONCURRENCY": "2"})
    wait_until(
        lambda: (
            not any(queued(broker).values())
            and not Notice.objects.filter(transfer_id=pk)
            .exclude(status=Notice.Status.SENT)
            .exists()
        ),
        60,
        f"the notices; queued {queued(broker)}; worker:\n{logs(next_worker)}",
    )
    podman("stop", "--time=60", next_worker, web, timeout=90)
    assert exit_code(next_worker) == 0, logs(next_worker)
    assert Notice.objects.filter(transfer_id=pk, status=Notice.Status.SENT).exists()
    assert not any(queued(broker).values()), queued(broker)
    assert remote.call_count("TransferCertificate", cert_id) == 1
    assert Transfer.objects.get(pk=pk).status == Transfer.Status.PENDING_ACCEPTANCE


def test_the_compose_file_runs_migrate_before_the_processes_with_the_shared_settings():
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert services["db"]["image"].startswith("docker.io/library/postgres:")
    assert services["redis"]["image"].startswith("docker.io/library/redis:")
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("web", "worker", "beat"):
        service = services[name]
        assert service["command"][0] == name
        assert service["depends_on"]["migrate"]["condition"] == ("service_completed_successfully")
    for name in ("migrate", "web", "worker", "beat"):
        env = services[name]["environment"]
        for setting in SHARED_SETTINGS:
            assert setting in env or f"{setting}_FILE" in env, (name, setting)
    assert services["worker"]["stop_grace_period"]
    for volume in ("db", "redis", "beat"):
        assert volume in compose["volumes"]
