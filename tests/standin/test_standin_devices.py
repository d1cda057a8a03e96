"""The stand-in's devices, jobs, endpoints, fleet indexing and thing attachment types
(standin.devices, standin.jobs, standin.connectivity, standin.things).

Device timelines run in process with a fake clock (the state is computed lazily from
timestamps, so moving the clock is all it takes); what the server serves is checked against
the running ``python -m standin.server`` with short real delays.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws

import standin
from standin import control
from standin.devices import DEVICES, allows_connect, endpoint_account
from standin.jobs import dispatch_times

REGION = "us-east-1"
SOURCE, TARGET, OTHER = "111111111111", "222222222222", "333333333333"
NO_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 1})
T0 = 1_800_000_000.0


def connect_policy(account: str = "*") -> str:
    resource = f"arn:aws:iot:{REGION}:{account}:client/${{iot:Connection.Thing.ThingName}}"
    statement = {"Effect": "Allow", "Action": "iot:Connect", "Resource": resource}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


# The operations the stand-in answers itself for devices, jobs, endpoints and thing types.
OURS = {
    "DescribeEndpoint",
    "GetIndexingConfiguration",
    "GetThingConnectivityData",
    "CreateJob",
    "DescribeJob",
    "DescribeJobExecution",
    "ListJobExecutionsForJob",
    "ListJobExecutionsForThing",
    "CancelJob",
    "ListPrincipalThingsV2",
    "ListThingPrincipalsV2",
}


def checked_against_the_model(iot: Any) -> list[tuple[str, Any]]:
    """Record every raw answer of ``iot`` to one of OURS and fail on any key or enum value
    the botocore model does not have (botocore's parser silently drops unknown keys)."""
    seen: list[tuple[str, Any]] = []

    def check(shape: Any, value: Any, where: str) -> None:
        if shape.type_name == "structure":
            assert isinstance(value, dict), where
            unknown = set(value) - set(shape.members)
            assert not unknown, f"{where}: not in the model: {unknown}"
            for key, item in value.items():
                check(shape.members[key], item, f"{where}.{key}")
        elif shape.type_name == "list":
            for index, item in enumerate(value):
                check(shape.member, item, f"{where}[{index}]")
        elif shape.type_name == "string" and shape.enum:
            assert value in shape.enum, f"{where}: {value!r} not in {shape.enum}"

    def before_parse(operation_model: Any, response_dict: dict[str, Any], **_: Any) -> None:
        if operation_model.name not in OURS or response_dict["status_code"] >= 300:
            return
        body = json.loads(response_dict["body"])
        check(operation_model.output_shape, body, operation_model.name)
        seen.append((operation_model.name, body))

    iot.meta.events.register("before-parse.iot.*", before_parse)
    return seen


# --------------------------------------------------------------------------- fixtures


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def sim(make_pem) -> Iterator[Any]:
    """In process, devices on, a fake clock, no jitter: timelines are exact."""
    standin.install()
    with mock_aws():
        clock = Clock()
        DEVICES.clock = clock
        control.configure_devices(
            enabled=True,
            drop_after_seconds=30,
            backoff_base_seconds=1,
            backoff_cap_seconds=8,
            jitter="none",
            job_answer_seconds=2,
            seconds_per_timeout_minute=1,
        )
        world = World(clock, make_pem)
        for account in (SOURCE, TARGET):
            world.iot(account).update_indexing_configuration(
                thingIndexingConfiguration={
                    "thingIndexingMode": "REGISTRY",
                    "thingConnectivityIndexingMode": "STATUS",
                }
            )
        yield world


class World:
    def __init__(self, clock: Clock, make_pem: Any) -> None:
        self.clock = clock
        self.make_pem = make_pem
        self._clients: dict[str, Any] = {}

    def iot(self, account: str = SOURCE) -> Any:
        if account not in self._clients:
            client = control.client_for_account(account, REGION, None, "iot", config=NO_RETRIES)
            checked_against_the_model(client)
            self._clients[account] = client
        return self._clients[account]

    def endpoint(self, account: str) -> str:
        return self.iot(account).describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]

    def device(self, name: str = "dev-1", account: str = SOURCE, policy: str | None = None):
        """An ACTIVE certificate with a Connect policy, attached to thing ``name``."""
        iot = self.iot(account)
        made = iot.register_certificate_without_ca(certificatePem=self.make_pem(), status="ACTIVE")
        policy_name = f"Connect-{name}"
        iot.create_policy(policyName=policy_name, policyDocument=policy or connect_policy())
        iot.attach_policy(policyName=policy_name, target=made["certificateArn"])
        iot.create_thing(thingName=name)
        iot.attach_thing_principal(thingName=name, principal=made["certificateArn"])
        return made

    def connectivity(self, name: str = "dev-1", account: str = SOURCE) -> dict[str, Any]:
        answer = self.iot(account).get_thing_connectivity_data(thingName=name)
        answer.pop("ResponseMetadata")
        if "timestamp" in answer:
            answer["timestamp"] = answer["timestamp"].timestamp()
        return answer

    def state(self, name: str = "dev-1") -> dict[str, Any]:
        (device,) = control.devices(name)["devices"]
        return device

    def move(self, made: dict[str, Any], name: str = "dev-1") -> None:
        """What the portal does, in AWS's order: deactivate, detach, transfer; accept
        inactive, attach the policy and the thing in the target, then activate."""
        iot, tiot = self.iot(SOURCE), self.iot(TARGET)
        cert_id, arn = made["certificateId"], made["certificateArn"]
        iot.update_certificate(certificateId=cert_id, newStatus="INACTIVE")
        iot.detach_policy(policyName=f"Connect-{name}", target=arn)
        iot.detach_thing_principal(thingName=name, principal=arn)
        new_arn = iot.transfer_certificate(certificateId=cert_id, targetAwsAccount=TARGET)[
            "transferredCertificateArn"
        ]
        tiot.accept_certificate_transfer(certificateId=cert_id, setAsActive=False)
        tiot.create_policy(policyName="Connect", policyDocument=connect_policy())
        tiot.attach_policy(policyName="Connect", target=new_arn)
        tiot.create_thing(thingName=name)
        tiot.attach_thing_principal(thingName=name, principal=new_arn)
        tiot.update_certificate(certificateId=cert_id, newStatus="ACTIVE")

    def job(self, job_id: str, names: list[str], document: dict | None = None, **config):
        iot = self.iot(SOURCE)
        arns = [iot.describe_thing(thingName=n)["thingArn"] for n in names]
        if document is None:
            document = {"endpoints": [self.endpoint(TARGET), self.endpoint(SOURCE)]}
        iot.create_job(jobId=job_id, targets=arns, document=json.dumps(document), **config)

    def execution(self, job_id: str, name: str = "dev-1") -> dict[str, Any]:
        return self.iot(SOURCE).describe_job_execution(jobId=job_id, thingName=name)["execution"]


def code_of(info: pytest.ExceptionInfo[ClientError]) -> str:
    return info.value.response["Error"]["Code"]


# --------------------------------------------------------------------------- endpoints


def test_describe_endpoint_names_one_stable_endpoint_per_account_region_and_type(aws):
    iot, tiot = aws.iot(SOURCE), aws.iot(TARGET)
    checked_against_the_model(iot)
    first = iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
    assert iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"] == first
    assert first.endswith(f"-ats.iot.{REGION}.amazonaws.com")
    assert tiot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"] != first
    elsewhere = aws.iot(SOURCE, "eu-west-1").describe_endpoint(endpointType="iot:Data-ATS")
    assert elsewhere["endpointAddress"] != first
    credentials = iot.describe_endpoint(endpointType="iot:CredentialProvider")["endpointAddress"]
    assert credentials.endswith(f".credentials.iot.{REGION}.amazonaws.com")
    if aws.mode == "mock":  # the registries are in this process: the name maps back
        assert endpoint_account(first) == (SOURCE, REGION)


def test_describe_endpoint_refuses_an_unknown_type(aws, expect_error):
    with expect_error("InvalidRequestException", 400):
        aws.iot().describe_endpoint(endpointType="iot:Nonsense")


# --------------------------------------------------------------------------- thing types


def attached_certificate(aws, registered_cert, *things: str) -> str:
    iot = aws.iot()
    cert_id = registered_cert(iot)
    for name in things:
        iot.create_thing(thingName=name)
    return iot.describe_certificate(certificateId=cert_id)["certificateDescription"][
        "certificateArn"
    ]


def test_an_exclusive_attachment_keeps_its_type_in_both_v2_listings(aws, registered_cert):
    iot = aws.iot()
    checked_against_the_model(iot)
    arn = attached_certificate(aws, registered_cert, "meter-1")
    iot.attach_thing_principal(
        thingName="meter-1", principal=arn, thingPrincipalType="EXCLUSIVE_THING"
    )
    assert iot.list_principal_things_v2(principal=arn)["principalThingObjects"] == [
        {"thingName": "meter-1", "thingPrincipalType": "EXCLUSIVE_THING"}
    ]
    assert iot.list_thing_principals_v2(thingName="meter-1")["thingPrincipalObjects"] == [
        {"principal": arn, "thingPrincipalType": "EXCLUSIVE_THING"}
    ]
    assert iot.list_principal_things(principal=arn)["things"] == ["meter-1"]


def test_an_attachment_without_a_type_is_non_exclusive_and_the_v2_listing_filters(
    aws, registered_cert
):
    iot = aws.iot()
    arn = attached_certificate(aws, registered_cert, "a", "b")
    iot.attach_thing_principal(thingName="a", principal=arn)
    iot.attach_thing_principal(
        thingName="b", principal=arn, thingPrincipalType="NON_EXCLUSIVE_THING"
    )
    listed = iot.list_principal_things_v2(principal=arn)["principalThingObjects"]
    assert {t["thingPrincipalType"] for t in listed} == {"NON_EXCLUSIVE_THING"}
    assert len(listed) == 2
    exclusive = iot.list_principal_things_v2(principal=arn, thingPrincipalType="EXCLUSIVE_THING")
    assert exclusive["principalThingObjects"] == []
    first = iot.list_principal_things_v2(principal=arn, maxResults=1)
    assert [t["thingName"] for t in first["principalThingObjects"]] == ["a"]
    second = iot.list_principal_things_v2(principal=arn, maxResults=1, nextToken=first["nextToken"])
    assert [t["thingName"] for t in second["principalThingObjects"]] == ["b"]


def test_an_exclusive_thing_is_its_principal_s_only_thing(aws, registered_cert, expect_error):
    iot = aws.iot()
    arn = attached_certificate(aws, registered_cert, "only", "other")
    iot.attach_thing_principal(
        thingName="only", principal=arn, thingPrincipalType="EXCLUSIVE_THING"
    )
    with expect_error("InvalidRequestException", 400):
        iot.attach_thing_principal(thingName="other", principal=arn)
    iot.attach_thing_principal(
        thingName="only", principal=arn, thingPrincipalType="EXCLUSIVE_THING"
    )
    iot.detach_thing_principal(thingName="only", principal=arn)
    iot.attach_thing_principal(thingName="other", principal=arn)
    with expect_error("InvalidRequestException", 400):
        iot.attach_thing_principal(
            thingName="only", principal=arn, thingPrincipalType="EXCLUSIVE_THING"
        )
    assert iot.list_principal_things(principal=arn)["things"] == ["other"]


# --------------------------------------------------------------------------- indexing


def test_connectivity_indexing_is_off_until_turned_on_and_needs_thing_indexing(aws, expect_error):
    iot = aws.iot()
    checked_against_the_model(iot)
    config = iot.get_indexing_configuration()["thingIndexingConfiguration"]
    assert config["thingConnectivityIndexingMode"] == "OFF"
    with expect_error("InvalidRequestException", 400):
        iot.update_indexing_configuration(
            thingIndexingConfiguration={
                "thingIndexingMode": "OFF",
                "thingConnectivityIndexingMode": "STATUS",
            }
        )
    iot.update_indexing_configuration(
        thingIndexingConfiguration={
            "thingIndexingMode": "REGISTRY",
            "thingConnectivityIndexingMode": "STATUS",
        }
    )
    config = iot.get_indexing_configuration()["thingIndexingConfiguration"]
    assert (config["thingIndexingMode"], config["thingConnectivityIndexingMode"]) == (
        "REGISTRY",
        "STATUS",
    )
    assert (
        aws.iot(TARGET).get_indexing_configuration()["thingIndexingConfiguration"][
            "thingConnectivityIndexingMode"
        ]
        == "OFF"
    )


def test_connectivity_data_needs_the_thing_and_connectivity_indexing(aws, expect_error):
    iot = aws.iot()
    iot.create_thing(thingName="quiet")
    with expect_error("InvalidRequestException", 400):
        iot.get_thing_connectivity_data(thingName="quiet")
    iot.update_indexing_configuration(
        thingIndexingConfiguration={
            "thingIndexingMode": "REGISTRY",
            "thingConnectivityIndexingMode": "STATUS",
        }
    )
    with expect_error("ResourceNotFoundException", 404):
        iot.get_thing_connectivity_data(thingName="nobody")
    answer = iot.get_thing_connectivity_data(thingName="quiet")
    assert answer["connected"] is False and "timestamp" not in answer


# --------------------------------------------------------------------------- devices


def test_a_device_connects_when_its_certificate_is_active_with_a_connect_policy(sim):
    sim.device("dev-1")
    assert sim.connectivity() == {"thingName": "dev-1", "connected": True, "timestamp": T0}
    state = sim.state()
    assert state["account"] == SOURCE
    assert state["endpoints"] == [sim.endpoint(SOURCE)]


def test_a_policy_that_names_another_account_refuses_the_connection_with_auth_error(sim):
    sim.device("dev-1", policy=connect_policy(OTHER))
    sim.clock.tick(5)
    answer = sim.connectivity()
    assert answer["connected"] is False
    assert answer["disconnectReason"] == "AUTH_ERROR"
    assert sim.state()["account"] is None


def test_a_device_is_dropped_only_after_the_configured_time_after_deactivation(sim):
    made = sim.device("dev-1")
    sim.clock.tick(10)
    sim.iot().update_certificate(certificateId=made["certificateId"], newStatus="INACTIVE")
    sim.clock.tick(29)
    assert sim.connectivity()["connected"] is True
    sim.clock.tick(2)
    answer = sim.connectivity()
    assert answer == {
        "thingName": "dev-1",
        "connected": False,
        "timestamp": T0 + 40,
        "disconnectReason": "SERVER_INITIATED_DISCONNECT",
    }


def test_a_certificate_reactivated_before_the_drop_keeps_its_device_connected(sim):
    made = sim.device("dev-1")
    iot = sim.iot()
    iot.update_certificate(certificateId=made["certificateId"], newStatus="INACTIVE")
    sim.clock.tick(20)
    iot.update_certificate(certificateId=made["certificateId"], newStatus="ACTIVE")
    sim.clock.tick(60)
    assert sim.connectivity() == {"thingName": "dev-1", "connected": True, "timestamp": T0}


def test_a_dropped_device_retries_with_exponential_backoff_up_to_the_cap(sim):
    made = sim.device("dev-1")
    iot = sim.iot()
    iot.update_certificate(certificateId=made["certificateId"], newStatus="INACTIVE")
    dropped = T0 + 30
    # Attempts 1, 2, 4, 8, 8 s apart (no jitter): at +1, +3, +7, +15, +23.
    sim.clock.now = dropped + 16
    assert sim.state()["next_attempt"] == iso(dropped + 23)
    iot.update_certificate(certificateId=made["certificateId"], newStatus="ACTIVE")
    sim.clock.now = dropped + 22.9
    assert sim.connectivity()["connected"] is False
    sim.clock.now = dropped + 23
    assert sim.connectivity() == {
        "thingName": "dev-1",
        "connected": True,
        "timestamp": dropped + 23,
    }


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None).isoformat() + "Z"


def test_full_jitter_draws_each_delay_between_zero_and_its_ceiling(sim):
    control.configure_devices(
        enabled=True, drop_after_seconds=0, backoff_base_seconds=4, backoff_cap_seconds=4
    )
    made = [sim.device(f"dev-{i}") for i in range(20)]
    for cert in made:
        sim.iot().update_certificate(certificateId=cert["certificateId"], newStatus="INACTIVE")
    sim.clock.tick(0.001)
    waits = [
        datetime.fromisoformat(d["next_attempt"].rstrip("Z")).replace(tzinfo=UTC).timestamp() - T0
        for d in control.devices()["devices"]
    ]
    assert all(0 <= w <= 4 for w in waits)
    assert len({round(w, 6) for w in waits}) == len(waits)  # not one delay for all


def test_a_device_follows_the_job_and_comes_back_in_the_target_after_the_move(sim):
    made = sim.device("dev-1")
    sim.clock.tick(1)
    sim.job("move-1", ["dev-1"], timeoutConfig={"inProgressTimeoutInMinutes": 10})
    assert sim.execution("move-1")["status"] == "IN_PROGRESS"
    sim.clock.tick(2)
    execution = sim.execution("move-1")
    assert execution["status"] == "SUCCEEDED"
    assert sim.state()["endpoints"] == [sim.endpoint(TARGET), sim.endpoint(SOURCE)]
    assert sim.state()["account"] == SOURCE  # the new list is for its next connection

    sim.clock.tick(7)  # T0 + 10
    sim.move(made)
    assert sim.connectivity()["connected"] is True  # dropped only 30 s after deactivation
    sim.clock.tick(30)  # dropped at T0 + 40, first retry 1 s later, on the target's endpoint
    assert sim.connectivity() == {
        "thingName": "dev-1",
        "connected": False,
        "timestamp": T0 + 40,
        "disconnectReason": "SERVER_INITIATED_DISCONNECT",
    }
    sim.clock.tick(1)
    assert sim.connectivity(account=TARGET) == {
        "thingName": "dev-1",
        "connected": True,
        "timestamp": T0 + 41,
    }
    assert sim.state()["endpoint"] == sim.endpoint(TARGET)


def test_a_device_without_the_job_stays_offline_after_the_move(sim):
    made = sim.device("dev-1")
    sim.move(made)
    sim.clock.tick(600)
    assert sim.connectivity(account=TARGET) == {"thingName": "dev-1", "connected": False}
    assert sim.state()["account"] is None


def test_a_device_never_connects_to_the_target_before_the_landing_activates_it(sim):
    made = sim.device("dev-1")
    sim.job("move-1", ["dev-1"])
    sim.clock.tick(2)
    iot, tiot = sim.iot(SOURCE), sim.iot(TARGET)
    iot.update_certificate(certificateId=made["certificateId"], newStatus="INACTIVE")
    iot.detach_policy(policyName="Connect-dev-1", target=made["certificateArn"])
    iot.detach_thing_principal(thingName="dev-1", principal=made["certificateArn"])
    iot.transfer_certificate(certificateId=made["certificateId"], targetAwsAccount=TARGET)
    tiot.accept_certificate_transfer(certificateId=made["certificateId"], setAsActive=True)
    tiot.create_thing(thingName="dev-1")
    sim.clock.tick(60)
    answer = sim.connectivity(account=TARGET)
    assert answer["connected"] is False
    assert answer["disconnectReason"] == "AUTH_ERROR"  # ACTIVE, but no policy allows Connect


def test_devices_that_reject_the_job_report_rejected(sim):
    control.configure_devices(**{**control.devices()["settings"], "reject_fraction": 1.0})
    sim.device("dev-1")
    sim.job("move-1", ["dev-1"])
    sim.clock.tick(3)
    execution = sim.execution("move-1")
    assert execution["status"] == "REJECTED"
    assert sim.state()["endpoints"] == [sim.endpoint(SOURCE)]


def test_a_device_that_never_answers_times_the_execution_out(sim):
    settings = control.devices()["settings"]
    control.configure_devices(**{**settings, "traits": {"dev-1": ["silent"]}})
    sim.device("dev-1")
    sim.job("move-1", ["dev-1"], timeoutConfig={"inProgressTimeoutInMinutes": 5})
    sim.clock.tick(4)  # a timeout minute lasts 1 s here
    execution = sim.execution("move-1")
    assert execution["status"] == "IN_PROGRESS"
    assert execution["approximateSecondsBeforeTimedOut"] == 1
    sim.clock.tick(1)
    assert sim.execution("move-1")["status"] == "TIMED_OUT"
    assert sim.iot().describe_job(jobId="move-1")["job"]["status"] == "COMPLETED"


def test_a_job_document_without_endpoints_fails_the_execution(sim):
    sim.device("dev-1")
    sim.job("move-1", ["dev-1"], document={"operation": "reboot"})
    sim.clock.tick(2)
    execution = sim.execution("move-1")
    assert execution["status"] == "FAILED"
    assert "endpoints" in execution["statusDetails"]["detailsMap"]["reason"]


def test_a_device_that_never_reconnects_stays_offline_once_dropped(sim):
    settings = control.devices()["settings"]
    control.configure_devices(**{**settings, "never_reconnect_fraction": 1.0})
    made = sim.device("dev-1")
    assert sim.connectivity()["connected"] is True
    iot = sim.iot()
    iot.update_certificate(certificateId=made["certificateId"], newStatus="INACTIVE")
    sim.clock.tick(31)
    iot.update_certificate(certificateId=made["certificateId"], newStatus="ACTIVE")
    sim.clock.tick(3600)
    assert sim.connectivity()["connected"] is False
    assert sim.state()["next_attempt"] is None


def test_fractions_pick_devices_by_a_seeded_draw(sim):
    for i in range(30):
        sim.device(f"d-{i}")
    settings = control.devices()["settings"]

    def chosen(seed: int) -> list[str]:
        control.configure_devices(**{**settings, "never_reconnect_fraction": 0.3, "seed": seed})
        devices = control.devices()["devices"]
        return [d["thing"] for d in devices if "never_reconnect" in d["traits"]]

    first = chosen(7)
    assert 0 < len(first) < 30
    assert chosen(7) == first
    assert chosen(8) != first


def test_devices_switched_on_later_adopt_the_things_already_attached(sim):
    control.configure_devices(enabled=False)
    sim.device("dev-1")
    assert control.devices()["devices"] == []
    control.configure_devices(enabled=True)
    assert sim.state()["connected"] is True


def test_asking_about_one_device_leaves_the_others_alone(sim):
    threads = threading.active_count()
    for i in range(30):
        sim.device(f"dev-{i}")
    assert threading.active_count() == threads  # no thread per device
    sim.clock.tick(3600)
    sim.connectivity("dev-3")
    untouched = [d for d in DEVICES._devices.values() if d.client_id != "dev-3"]
    assert {d.evaluated_at for d in untouched} == {T0}


def test_no_endpoint_name_is_ever_resolved_or_connected_to(sim, monkeypatch):
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a network call: {args!r}")

    made = sim.device("dev-1")
    sim.job("move-1", ["dev-1"])
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    sim.clock.tick(3)
    sim.move(made)
    sim.clock.tick(40)
    assert sim.connectivity(account=TARGET)["connected"] is True


# --------------------------------------------------------------------------- jobs


def test_a_job_is_in_progress_then_completed_with_counts_as_aws_reports_them(sim):
    sim.device("dev-1")
    sim.device("dev-2")
    sim.job("move-1", ["dev-1", "dev-2"])
    job = sim.iot().describe_job(jobId="move-1")["job"]
    assert job["status"] == "IN_PROGRESS"
    assert job["jobProcessDetails"]["numberOfInProgressThings"] == 2
    sim.clock.tick(2)
    job = sim.iot().describe_job(jobId="move-1")["job"]
    assert job["status"] == "COMPLETED"
    assert job["jobProcessDetails"]["numberOfSucceededThings"] == 2
    assert job["completedAt"].timestamp() == T0 + 2


def test_a_job_id_is_taken_once_and_an_unknown_job_is_not_found(sim):
    sim.device("dev-1")
    sim.job("move-1", ["dev-1"])
    with pytest.raises(ClientError) as taken:
        sim.job("move-1", ["dev-1"])
    assert code_of(taken) == "ResourceAlreadyExistsException"
    for call in (
        lambda: sim.iot().describe_job(jobId="nope"),
        lambda: sim.iot().cancel_job(jobId="nope"),
        lambda: sim.iot().describe_job_execution(jobId="move-1", thingName="other"),
    ):
        with pytest.raises(ClientError) as missing:
            call()
        assert code_of(missing) == "ResourceNotFoundException"


def test_a_job_targets_things_of_its_own_account(sim):
    sim.device("dev-1", account=TARGET)
    foreign = sim.iot(TARGET).describe_thing(thingName="dev-1")["thingArn"]
    with pytest.raises(ClientError) as refused:
        sim.iot().create_job(jobId="j", targets=[foreign], document="{}")
    assert code_of(refused) == "InvalidRequestException"


def test_cancel_job_cancels_queued_executions_and_in_progress_ones_only_when_forced(sim):
    for name in ("on-1", "on-2"):
        sim.device(name)
    sim.iot().create_thing(thingName="offline")
    settings = control.devices()["settings"]
    control.configure_devices(**{**settings, "traits": {"on-1": ["silent"], "on-2": ["silent"]}})
    sim.job("a", ["on-1", "offline"])
    sim.job("b", ["on-2"])
    sim.clock.tick(1)
    sim.iot().cancel_job(jobId="a", reasonCode="MOVE_CANCELLED", comment="cancelled")
    assert sim.execution("a", "offline")["status"] == "CANCELED"
    assert sim.execution("a", "on-1")["status"] == "IN_PROGRESS"
    job = sim.iot().describe_job(jobId="a")["job"]
    assert (job["status"], job["reasonCode"]) == ("CANCELED", "MOVE_CANCELLED")
    sim.iot().cancel_job(jobId="b", force=True)
    assert sim.execution("b", "on-2")["status"] == "CANCELED"


def test_a_rollout_ceiling_spaces_the_executions(sim):
    for name in ("dev-1", "dev-2", "dev-3"):
        sim.device(name)
    sim.job(
        "move-1", ["dev-1", "dev-2", "dev-3"], jobExecutionsRolloutConfig={"maximumPerMinute": 2}
    )
    sim.clock.tick(29)
    statuses = [sim.execution("move-1", n)["status"] for n in ("dev-1", "dev-2", "dev-3")]
    assert statuses == ["SUCCEEDED", "QUEUED", "QUEUED"]
    sim.clock.tick(1)
    assert sim.execution("move-1", "dev-2")["status"] == "IN_PROGRESS"


def test_dispatch_times_follow_the_exponential_rate():
    rate = {
        "exponentialRate": {
            "baseRatePerMinute": 1,
            "incrementFactor": 2,
            "rateIncreaseCriteria": {"numberOfNotifiedThings": 2},
        }
    }
    assert dispatch_times(5, rate, 0.0) == [0.0, 60.0, 120.0, 150.0, 180.0]
    assert dispatch_times(2, None, 5.0) == [5.0, 5.0]


def test_an_abort_config_cancels_the_job_once_enough_executions_failed(sim):
    settings = control.devices()["settings"]
    control.configure_devices(**{**settings, "reject_fraction": 1.0})
    for name in ("dev-1", "dev-2", "dev-3"):
        sim.device(name)
    sim.job(
        "move-1",
        ["dev-1", "dev-2", "dev-3"],
        jobExecutionsRolloutConfig={"maximumPerMinute": 1},
        abortConfig={
            "criteriaList": [
                {
                    "failureType": "REJECTED",
                    "action": "CANCEL",
                    "thresholdPercentage": 50,
                    "minNumberOfExecutedThings": 2,
                }
            ]
        },
    )
    sim.clock.tick(62)
    job = sim.iot().describe_job(jobId="move-1")["job"]
    assert job["status"] == "CANCELED"
    assert sim.execution("move-1", "dev-3")["status"] == "CANCELED"


def test_list_job_executions_for_job_pages_and_filters_by_status(sim):
    sim.device("dev-1")
    sim.device("dev-2")
    sim.iot().create_thing(thingName="offline")
    sim.job("move-1", ["dev-1", "dev-2", "offline"])
    sim.clock.tick(2)
    iot = sim.iot()
    first = iot.list_job_executions_for_job(jobId="move-1", maxResults=2)
    rest = iot.list_job_executions_for_job(
        jobId="move-1", maxResults=2, nextToken=first["nextToken"]
    )
    arns = [e["thingArn"] for e in first["executionSummaries"] + rest["executionSummaries"]]
    assert [a.rsplit("/", 1)[1] for a in arns] == ["dev-1", "dev-2", "offline"]
    queued = iot.list_job_executions_for_job(jobId="move-1", status="QUEUED")
    assert [e["thingArn"].rsplit("/", 1)[1] for e in queued["executionSummaries"]] == ["offline"]
    for_thing = iot.list_job_executions_for_thing(thingName="dev-1")["executionSummaries"]
    assert [(e["jobId"], e["jobExecutionSummary"]["status"]) for e in for_thing] == [
        ("move-1", "SUCCEEDED")
    ]


# --------------------------------------------------------------------------- policies


@pytest.mark.parametrize(
    ("statements", "allowed"),
    [
        ([{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}], True),
        ([{"Effect": "Allow", "Action": ["iot:Publish"], "Resource": "*"}], False),
        (
            [
                {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
                {"Effect": "Deny", "Action": "iot:Connect", "Resource": "*"},
            ],
            False,
        ),
        (
            [
                {
                    "Effect": "Allow",
                    "Action": "iot:Connect",
                    "Resource": f"arn:aws:iot:{REGION}:{SOURCE}:client/${{iot:ClientId}}",
                }
            ],
            True,
        ),
        (
            [
                {
                    "Effect": "Allow",
                    "Action": "iot:Connect",
                    "Resource": f"arn:aws:iot:{REGION}:{TARGET}:client/*",
                }
            ],
            False,
        ),
    ],
)
def test_iot_connect_is_read_from_the_policy_documents(statements, allowed):
    document = json.dumps({"Version": "2012-10-17", "Statement": statements})
    arn = f"arn:aws:iot:{REGION}:{SOURCE}:client/dev-1"
    assert allows_connect([document], arn, "dev-1") is allowed


# --------------------------------------------------------------------------- served


def test_the_server_serves_device_settings_and_state(aws, registered_cert, expect_error):
    if aws.mode != "server":
        pytest.skip("the control endpoint over HTTP")
    remote = aws.control
    with pytest.raises(RuntimeError, match="400"):
        remote.configure_devices(enabled=True, jitter="sometimes")
    remote.configure_devices(
        enabled=True, drop_after_seconds=0.2, backoff_base_seconds=0.05, backoff_cap_seconds=0.1
    )
    iot = aws.iot()
    cert_id = registered_cert(iot, active=True)
    arn = iot.describe_certificate(certificateId=cert_id)["certificateDescription"][
        "certificateArn"
    ]
    iot.create_policy(policyName="Connect", policyDocument=connect_policy())
    iot.attach_policy(policyName="Connect", target=arn)
    iot.create_thing(thingName="live-1")
    iot.attach_thing_principal(thingName="live-1", principal=arn)
    (device,) = remote.devices("live-1")["devices"]
    assert device["connected"] is True and device["account"] == SOURCE
    iot.update_certificate(certificateId=cert_id, newStatus="INACTIVE")
    time.sleep(0.3)
    (device,) = remote.devices("live-1")["devices"]
    assert device["connected"] is False
    assert device["disconnect_reason"] == "SERVER_INITIATED_DISCONNECT"
    remote.reset()
    assert remote.devices()["devices"] == []
