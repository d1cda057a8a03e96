"""Fixtures for the AWS stand-in tests: plain pytest, no Django, no database.

``aws`` is parametrized over both ways the stand-in runs: moto's decorator (``mock_aws``,
in-process control) and ``python -m standin.server`` in a subprocess (``RemoteControl``).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from moto import mock_aws

import standin
from standin import control
from standin.control import RemoteControl, client_for_account

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
SOURCE = "111111111111"
TARGET = "222222222222"
OTHER = "333333333333"
# One attempt per call: injected faults surface as they are, and no backoff sleeps.
NO_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 1})

_SCRUBBED = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_IOT",
    "AWS_ENDPOINT_URL_STS",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "MOTO_ACCOUNT_ID",
)
_FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


@pytest.fixture(autouse=True)
def fake_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _SCRUBBED:
        monkeypatch.delenv(name, raising=False)
    for name, value in _FAKE_ENV.items():
        monkeypatch.setenv(name, value)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    _seen: int = 0

    def new_log(self) -> str:
        text = self.log.read_text(errors="replace")
        new, self._seen = text[self._seen :], len(text)
        return new


@pytest.fixture(scope="session")
def standin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``python -m standin.server`` on a free port, for the whole session."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update(_FAKE_ENV)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    log = tmp_path_factory.mktemp("standin") / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "standin.server", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            pytest.fail(f"standin.server exited early:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{server.url}/_standin/health", timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"standin.server did not come up:\n{log.read_text()}")
        time.sleep(0.1)
    yield server
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@dataclass
class Standin:
    """One way of running the stand-in, with clients per account."""

    mode: str
    endpoint_url: str | None
    control: Any  # the standin.control module, or a RemoteControl
    _clients: dict[tuple[str, str, str], Any] = field(default_factory=dict)

    def client(self, service: str, account: str = SOURCE, region: str = REGION) -> Any:
        key = (service, account, region)
        if key not in self._clients:
            self._clients[key] = client_for_account(
                account, region, self.endpoint_url, service, config=NO_RETRIES
            )
        return self._clients[key]

    def iot(self, account: str = SOURCE, region: str = REGION) -> Any:
        return self.client("iot", account, region)


@pytest.fixture(params=["mock", "server"])
def aws(request: pytest.FixtureRequest) -> Iterator[Standin]:
    """The stand-in under ``mock_aws()`` or behind the running server, reset for each test."""
    standin.install()
    if request.param == "mock":
        with mock_aws():
            control.reset_counters()
            control.clear_faults()
            yield Standin("mock", None, control)
            control.clear_faults()
            control.reset_counters()
        return
    server: ServerProcess = request.getfixturevalue("standin_server")
    remote = RemoteControl(server.url)
    remote.reset()
    server.new_log()
    yield Standin("server", server.url, remote)
    remote.clear_faults()
    errors = [line for line in server.new_log().splitlines() if re.search(r'" 5\d\d ', line)]
    unexpected = [line for line in errors if '" 503 ' not in line]  # 503: injected faults
    assert not unexpected, "the server answered HTTP 5xx:\n" + "\n".join(unexpected)


@pytest.fixture
def expect_error() -> Callable[..., Any]:
    """``with expect_error("ResourceNotFoundException", 404): ...``"""

    @contextmanager
    def _expect(code: str, status: int | None = None) -> Iterator[pytest.ExceptionInfo[Any]]:
        with pytest.raises(ClientError) as info:
            yield info
        response = info.value.response
        assert response["Error"]["Code"] == code, response["Error"]
        if status is not None:
            assert response["ResponseMetadata"]["HTTPStatusCode"] == status

    return _expect


_EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _make_pem(
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    common_name: str = "standin-test-device",
) -> str:
    now = datetime.now(UTC).replace(microsecond=0)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(_EC_KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=365))
        .sign(_EC_KEY, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


@pytest.fixture
def make_pem() -> Callable[..., str]:
    """A fresh self-signed PEM (EC key, unique serial) with the given validity."""
    return _make_pem


@pytest.fixture
def new_cert() -> Callable[..., str]:
    """``new_cert(iot, active=False)``: CreateKeysAndCertificate, returns the certificate id."""

    def _new(iot: Any, active: bool = False) -> str:
        return iot.create_keys_and_certificate(setAsActive=active)["certificateId"]

    return _new


@pytest.fixture
def registered_cert() -> Callable[..., str]:
    """``registered_cert(iot, pem=None, active=False)``: RegisterCertificateWithoutCA of a
    fresh PEM (an EC key: much faster than CreateKeysAndCertificate's RSA keys)."""

    def _register(iot: Any, pem: str | None = None, active: bool = False) -> str:
        response = iot.register_certificate_without_ca(
            certificatePem=pem or _make_pem(), status="ACTIVE" if active else "INACTIVE"
        )
        return response["certificateId"]

    return _register
