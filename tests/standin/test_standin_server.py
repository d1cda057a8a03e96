"""Installing the stand-in, account clients, and the server's control endpoints."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from moto import mock_aws
from moto.iot.responses import IoTResponse

import standin
import standin.server
from standin import control
from standin import iot as standin_iot
from standin.control import RemoteControl, client_for_account

REGION = "us-east-1"
SOURCE = "111111111111"
TARGET = "222222222222"


def http(method, url, body=None):
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_install_is_idempotent():
    standin.install()
    patched = IoTResponse.call_action

    standin.install()

    assert IoTResponse.call_action is patched is standin_iot._call_action
    assert standin_iot._ORIGINALS["IoTResponse.call_action"] is not standin_iot._call_action
    assert standin.installed()


@pytest.mark.parametrize("account", ["123456789012", SOURCE, TARGET])
def test_client_for_account_acts_as_that_account(aws, account):
    identity = aws.client("sts", account).get_caller_identity()
    created = aws.iot(account).create_keys_and_certificate(setAsActive=False)

    assert identity["Account"] == account
    assert created["certificateArn"].startswith(f"arn:aws:iot:{REGION}:{account}:cert/")


def test_moto_reset_in_decorator_mode_forgets_transfers_counters_and_faults(new_cert):
    standin.install()
    with mock_aws():
        source = client_for_account(SOURCE, REGION)
        cert_id = new_cert(source)
        source.transfer_certificate(certificateId=cert_id, targetAwsAccount=TARGET)
        control.set_faults(throttle_rate=1.0, operations=["DeleteThing"])
        assert control.call_count("TransferCertificate", cert_id) == 1

    with mock_aws():
        assert control.calls()["operations"] == {}
        assert control.faults()["operations"] is None
        source = client_for_account(SOURCE, REGION)
        assert source.list_outgoing_certificates()["outgoingCertificates"] == []
        assert client_for_account(TARGET, REGION).list_certificates()["certificates"] == []


def test_moto_reset_endpoint_clears_state_counters_and_faults(standin_server, new_cert):
    remote = RemoteControl(standin_server.url)
    remote.reset()
    source = client_for_account(SOURCE, REGION, standin_server.url)
    cert_id = new_cert(source)
    source.transfer_certificate(certificateId=cert_id, targetAwsAccount=TARGET)
    remote.set_faults(throttle_rate=1.0, operations=["DeleteThing"])
    assert remote.call_count("TransferCertificate", cert_id) == 1

    remote.reset()

    assert remote.calls()["operations"] == {}
    assert remote.faults()["throttle_rate"] == 0.0
    target = client_for_account(TARGET, REGION, standin_server.url)
    assert target.list_certificates()["certificates"] == []


def test_control_endpoints_answer_json_and_refuse_bad_requests(standin_server):
    base = standin_server.url

    assert http("GET", f"{base}/_standin/health") == (200, {"status": "ok", "moto": "5.2.5"})
    assert http("GET", f"{base}/_standin/nothing-here")[0] == 404
    assert http("GET", f"{base}/_standin/reset-counters")[0] == 405
    assert http("POST", f"{base}/_standin/faults", b"not json")[0] == 400
    status, config = http("POST", f"{base}/_standin/faults", b'{"throttle_rate": 0.5}')
    assert status == 200
    assert config["throttle_rate"] == 0.5
    assert http("POST", f"{base}/_standin/faults", b"{}")[1]["throttle_rate"] == 0.0
    assert http("POST", f"{base}/_standin/reset-counters", b"{}") == (200, {"status": "ok"})


def test_remote_control_refuses_urls_that_are_not_http():
    with pytest.raises(ValueError, match="http"):
        RemoteControl("file:///etc/passwd")


def test_server_main_serves_threaded_on_the_port_from_the_environment(monkeypatch):
    served = {}

    def fake_run_simple(host, port, app, **options):
        served.update(host=host, port=port, app=app, **options)

    monkeypatch.setattr(standin.server, "run_simple", fake_run_simple)
    monkeypatch.setenv("AWS_STANDIN_PORT", "5123")
    monkeypatch.setenv("MOTO_PORT", "5123")

    standin.server.main([])

    assert (served["host"], served["port"], served["threaded"]) == ("127.0.0.1", 5123, True)
    assert isinstance(served["app"], standin.server.ControlMiddleware)
    standin.server.main(["--port", "6001", "--host", "0.0.0.0"])
    assert (served["host"], served["port"]) == ("0.0.0.0", 6001)


def test_standin_server_runs_in_a_background_thread():
    server = standin.server.StandinServer(port=0).start()
    try:
        assert RemoteControl(server.url).health()["status"] == "ok"
    finally:
        server.stop()
