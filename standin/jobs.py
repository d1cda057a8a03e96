"""AWS IoT Jobs as the portal uses them, on top of moto's: CreateJob, DescribeJob,
DescribeJobExecution, ListJobExecutionsForJob, ListJobExecutionsForThing and CancelJob.

moto 5.2.5 stores jobs and executions but nothing ever happens to them: a job stays
"QUEUED" (not a job status AWS has), every execution stays QUEUED with executionNumber 123,
CancelJob leaves the executions alone and answers 500 for an unknown job, and a second job
with the same id replaces the first. Here the executions are answered by the simulated
devices (standin.devices), rollout (maximumPerMinute, exponentialRate), in-progress timeouts
and abort criteria apply, and the job completes when every execution has ended.

Job state is brought up to date lazily, when it is asked about. Where AWS does not say, the
stand-in's choices: targets must be things of the calling account and region (thing groups
are refused); the exponential rollout's rate grows after every ``numberOfNotifiedThings``
(or ``numberOfSucceededThings``) notifications; an aborted job is CANCELED with the comment
"aborted: ..." and its QUEUED executions are canceled; cancelling a completed job is an
InvalidRequestException.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from moto.core.responses import ActionResult
from moto.iot.exceptions import (
    InvalidRequestException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
)
from moto.iot.models import FakeJob, FakeJobExecution, IoTBackend
from moto.iot.responses import IoTResponse

from .devices import DEVICES, TERMINAL_EXECUTION, _at, execution_deadline
from .iot import paginate_by_key

JOB_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
EXECUTION_STATUSES = (
    "QUEUED",
    "IN_PROGRESS",
    "SUCCEEDED",
    "FAILED",
    "TIMED_OUT",
    "REJECTED",
    "REMOVED",
    "CANCELED",
)
FAILURE_TYPES = {
    "FAILED": {"FAILED"},
    "REJECTED": {"REJECTED"},
    "TIMED_OUT": {"TIMED_OUT"},
    "ALL": {"FAILED", "REJECTED", "TIMED_OUT"},
}
MAX_DOCUMENT = 32768
MAX_TIMEOUT_MINUTES = 10080


# --------------------------------------------------------------------------- validation


def _int(value: Any, name: str, low: float, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestException(f"{name} must be a number.")
    if value < low or (high is not None and value > high):
        bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise InvalidRequestException(f"{name} must be {bound}.")
    return value


def _check_rollout(rollout: dict[str, Any] | None) -> None:
    if not rollout:
        return
    if rollout.get("maximumPerMinute") is not None:
        _int(rollout["maximumPerMinute"], "maximumPerMinute", 1, 1000)
    rate = rollout.get("exponentialRate")
    if rate is not None:
        _int(rate.get("baseRatePerMinute"), "baseRatePerMinute", 1, 1000)
        _int(rate.get("incrementFactor"), "incrementFactor", 1.1, 5)
        criteria = rate.get("rateIncreaseCriteria") or {}
        given = [k for k in ("numberOfNotifiedThings", "numberOfSucceededThings") if k in criteria]
        if len(given) != 1:
            raise InvalidRequestException(
                "rateIncreaseCriteria needs one of numberOfNotifiedThings or "
                "numberOfSucceededThings."
            )
        _int(criteria[given[0]], given[0], 1)


def _check_abort(abort: dict[str, Any] | None) -> None:
    if not abort:
        return
    criteria = abort.get("criteriaList")
    if not isinstance(criteria, list) or not criteria:
        raise InvalidRequestException("abortConfig needs a non-empty criteriaList.")
    for item in criteria:
        if item.get("failureType") not in FAILURE_TYPES:
            raise InvalidRequestException("failureType must be FAILED, REJECTED, TIMED_OUT or ALL.")
        if item.get("action") != "CANCEL":
            raise InvalidRequestException("The abort action must be CANCEL.")
        _int(item.get("thresholdPercentage"), "thresholdPercentage", 0, 100)
        _int(item.get("minNumberOfExecutedThings"), "minNumberOfExecutedThings", 1)


def _target_things(backend: IoTBackend, targets: Any) -> list[str]:
    if not isinstance(targets, list) or not targets:
        raise InvalidRequestException("targets must list at least one thing ARN.")
    names = []
    existing = {thing.thing_name for thing in backend.things.values()}
    prefix = f"arn:{backend.partition}:iot:{backend.region_name}:{backend.account_id}:thing/"
    for arn in targets:
        if not isinstance(arn, str) or not arn.startswith(prefix):
            raise InvalidRequestException(
                f"Target {arn!r} is not a thing ARN of this account and region (the stand-in "
                "targets things only)."
            )
        name = arn[len(prefix) :]
        if name not in existing:
            raise ResourceNotFoundException(f"Thing {name} does not exist.")
        names.append(name)
    if len(set(names)) != len(names):
        raise InvalidRequestException("targets names a thing twice.")
    return names


def dispatch_times(count: int, rollout: dict[str, Any] | None, start: float) -> list[float]:
    """When each of ``count`` executions is sent to its thing, in target order."""
    rollout = rollout or {}
    ceiling = rollout.get("maximumPerMinute")
    exponential = rollout.get("exponentialRate")
    if not ceiling and not exponential:
        return [start] * count
    times, at = [], start
    rate = float(exponential["baseRatePerMinute"]) if exponential else float(ceiling)
    step = 0
    if exponential:
        criteria = exponential["rateIncreaseCriteria"]
        step = int(
            criteria.get("numberOfNotifiedThings") or criteria.get("numberOfSucceededThings") or 0
        )
    for index in range(count):
        if exponential and step and index and index % step == 0:
            rate *= float(exponential["incrementFactor"])
        times.append(at)
        at += 60.0 / (min(rate, ceiling) if ceiling else rate)
    return times


# --------------------------------------------------------------------------- backend


def create_job(self: IoTBackend, **kwargs: Any) -> tuple[str, str, str]:
    job_id = kwargs.get("job_id")
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise InvalidRequestException("jobId must be 1 to 64 of [a-zA-Z0-9_-].")
    if job_id in self.jobs:
        job = self.jobs[job_id]
        raise ResourceAlreadyExistsException(f"Job {job_id} already exists.", job_id, job.job_arn)
    things = _target_things(self, kwargs.get("targets"))
    document = kwargs.get("document")
    if document is None and not kwargs.get("document_source"):
        raise InvalidRequestException("A job needs a document or a documentSource.")
    if document is not None and (not isinstance(document, str) or len(document) > MAX_DOCUMENT):
        raise InvalidRequestException(f"document must be at most {MAX_DOCUMENT} characters.")
    timeout = kwargs.get("timeout_config") or {}
    if timeout.get("inProgressTimeoutInMinutes") is not None:
        _int(
            timeout["inProgressTimeoutInMinutes"],
            "inProgressTimeoutInMinutes",
            1,
            MAX_TIMEOUT_MINUTES,
        )
    _check_rollout(kwargs.get("job_executions_rollout_config"))
    _check_abort(kwargs.get("abort_config"))
    if kwargs.get("target_selection") is None:
        kwargs["target_selection"] = "SNAPSHOT"
    answer = _ORIGINALS["create_job"](self, **kwargs)
    job = self.jobs[job_id]
    now = DEVICES.now()
    job.status = "IN_PROGRESS"
    job.created_at = job.last_updated_at = _at(now)
    job.standin_things = things
    index: dict[str, list[str]] = self.__dict__.setdefault("standin_thing_jobs", {})
    times = dispatch_times(len(things), kwargs.get("job_executions_rollout_config"), now)
    for name, dispatch in zip(things, times, strict=True):
        execution = self.job_executions[(job_id, name)]
        execution.execution_number = 1
        execution.version_number = 1
        execution.queued_at = execution.last_updated_at = _at(now)
        execution.started_at = None
        execution.standin_dispatch_at = dispatch
        execution.standin_started = None
        execution.standin_answer_at = None
        index.setdefault(name, []).append(job_id)
    return answer


def _job(self: IoTBackend, job_id: str) -> FakeJob:
    job = self.jobs.get(job_id)
    if job is None:
        raise ResourceNotFoundException(f"Job {job_id} does not exist.")
    return job


def _executions(self: IoTBackend, job: FakeJob) -> list[FakeJobExecution]:
    things = getattr(job, "standin_things", None)
    if things is None:  # made without the stand-in's create_job
        return [e for (jid, _), e in self.job_executions.items() if jid == job.job_id]
    found = (self.job_executions.get((job.job_id, name)) for name in things)
    return [e for e in found if e is not None]


def refresh_job(self: IoTBackend, job: FakeJob) -> list[FakeJobExecution]:
    """Bring the job and its executions up to now: the devices answer, timeouts and abort
    criteria apply, the job completes. Returns its executions."""
    DEVICES.touch_clients(self.region_name, getattr(job, "standin_things", []))
    executions = _executions(self, job)
    if job.status == "IN_PROGRESS":
        _abort_if_due(job, executions)
    counts = {status: 0 for status in EXECUTION_STATUSES}
    for execution in executions:
        counts[execution.status] = counts.get(execution.status, 0) + 1
    job.job_process_details = {
        "processingTargets": [
            e.thing_arn for e in executions if e.status in ("QUEUED", "IN_PROGRESS")
        ],
        "numberOfCanceledThings": counts["CANCELED"],
        "numberOfSucceededThings": counts["SUCCEEDED"],
        "numberOfFailedThings": counts["FAILED"],
        "numberOfRejectedThings": counts["REJECTED"],
        "numberOfQueuedThings": counts["QUEUED"],
        "numberOfInProgressThings": counts["IN_PROGRESS"],
        "numberOfRemovedThings": counts["REMOVED"],
        "numberOfTimedOutThings": counts["TIMED_OUT"],
    }
    if job.status == "IN_PROGRESS" and all(e.status in TERMINAL_EXECUTION for e in executions):
        job.status = "COMPLETED"
        job.completed_at = job.last_updated_at = max(
            (e.last_updated_at for e in executions), default=_at(DEVICES.now())
        )
    return executions


def _abort_if_due(job: FakeJob, executions: list[FakeJobExecution]) -> None:
    executed = [e for e in executions if e.status in TERMINAL_EXECUTION]
    for criteria in (job.abort_config or {}).get("criteriaList", []):
        failed = sum(1 for e in executed if e.status in FAILURE_TYPES[criteria["failureType"]])
        if len(executed) < criteria["minNumberOfExecutedThings"]:
            continue
        if failed * 100.0 / len(executed) >= criteria["thresholdPercentage"]:
            now = _at(DEVICES.now())
            job.status = "CANCELED"
            job.comment = (
                f"aborted: {failed} of {len(executed)} executions {criteria['failureType']}"
            )
            job.last_updated_at = now
            for execution in executions:
                if execution.status == "QUEUED":
                    _cancel_execution(execution, now)
            return


def _cancel_execution(execution: FakeJobExecution, now: Any) -> None:
    execution.status = "CANCELED"
    execution.last_updated_at = now
    execution.version_number += 1
    execution.standin_answer_at = None


def cancel_job(
    self: IoTBackend, job_id: str, reason_code: str | None, comment: str | None, force: bool
) -> FakeJob:
    job = _job(self, job_id)
    executions = refresh_job(self, job)
    if job.status == "COMPLETED":
        raise InvalidRequestException(f"Job {job_id} has already completed.")
    now = _at(DEVICES.now())
    job.status = "CANCELED"
    job.force = bool(force)
    job.reason_code = reason_code if reason_code is not None else job.reason_code
    job.comment = comment if comment is not None else job.comment
    job.last_updated_at = now
    for execution in executions:
        if execution.status == "QUEUED" or (force and execution.status == "IN_PROGRESS"):
            execution.force_canceled = execution.status == "IN_PROGRESS"
            _cancel_execution(execution, now)
    refresh_job(self, job)
    return job


# --------------------------------------------------------------------------- responses


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def _execution_dict(job: FakeJob, execution: FakeJobExecution) -> dict[str, Any]:
    out = {
        "jobId": execution.job_id,
        "status": execution.status,
        "forceCanceled": execution.force_canceled,
        "statusDetails": {"detailsMap": dict(execution.status_details_map or {})},
        "thingArn": execution.thing_arn,
        "queuedAt": execution.queued_at,
        "startedAt": execution.started_at,
        "lastUpdatedAt": execution.last_updated_at,
        "executionNumber": execution.execution_number,
        "versionNumber": execution.version_number,
    }
    deadline = execution_deadline(job, execution, DEVICES.settings)
    if execution.status == "IN_PROGRESS" and deadline is not None:
        out["approximateSecondsBeforeTimedOut"] = max(0, int(deadline - DEVICES.now()))
    return _drop_none(out)


def _summary(execution: FakeJobExecution) -> dict[str, Any]:
    return _drop_none(
        {
            "status": execution.status,
            "queuedAt": execution.queued_at,
            "startedAt": execution.started_at,
            "lastUpdatedAt": execution.last_updated_at,
            "executionNumber": execution.execution_number,
        }
    )


def r_describe_job(self: IoTResponse) -> ActionResult:
    backend = self.iot_backend
    job = _job(backend, self._get_param("jobId"))
    refresh_job(backend, job)
    body = _drop_none(
        {
            "jobArn": job.job_arn,
            "jobId": job.job_id,
            "targetSelection": job.target_selection,
            "status": job.status,
            "forceCanceled": job.force,
            "reasonCode": job.reason_code,
            "comment": job.comment,
            "targets": job.targets,
            "description": job.description,
            "presignedUrlConfig": job.presigned_url_config,
            "jobExecutionsRolloutConfig": job.job_executions_rollout_config,
            "abortConfig": job.abort_config,
            "createdAt": job.created_at,
            "lastUpdatedAt": job.last_updated_at,
            "completedAt": job.completed_at,
            "jobProcessDetails": job.job_process_details,
            "timeoutConfig": job.timeout_config,
            "jobExecutionsRetryConfig": job.job_execution_retry_config,
            "documentParameters": job.document_parameters,
            "schedulingConfig": job.scheduling_config,
        }
    )
    answer: dict[str, Any] = {"job": body}
    if job.document_source:
        answer["documentSource"] = job.document_source
    return ActionResult(answer)


def r_describe_job_execution(self: IoTResponse) -> ActionResult:
    backend = self.iot_backend
    job_id, thing_name = self._get_param("jobId"), self._get_param("thingName")
    job = _job(backend, job_id)
    refresh_job(backend, job)
    execution = backend.job_executions.get((job_id, thing_name))
    number = self._get_int_param("executionNumber")
    if execution is None or (number is not None and number != execution.execution_number):
        raise ResourceNotFoundException(f"No execution of job {job_id} on {thing_name}.")
    return ActionResult({"execution": _execution_dict(job, execution)})


def _status_filter(self: IoTResponse) -> str | None:
    status = self._get_param("status")
    if status is not None and status not in EXECUTION_STATUSES:
        raise InvalidRequestException(f"{status!r} is not a job execution status.")
    return status


def _max_results(self: IoTResponse) -> int:
    from .iot import _page_size

    return _page_size(self, "maxResults")


def r_list_job_executions_for_job(self: IoTResponse) -> ActionResult:
    backend = self.iot_backend
    job = _job(backend, self._get_param("jobId"))
    status = _status_filter(self)
    executions = [e for e in refresh_job(backend, job) if status is None or e.status == status]
    page, token = paginate_by_key(
        executions, lambda e: (e.thing_arn,), self._get_param("nextToken"), _max_results(self)
    )
    body: dict[str, Any] = {
        "executionSummaries": [
            {"thingArn": e.thing_arn, "jobExecutionSummary": _summary(e)} for e in page
        ]
    }
    if token:
        body["nextToken"] = token
    return ActionResult(body)


def r_list_job_executions_for_thing(self: IoTResponse) -> ActionResult:
    backend = self.iot_backend
    thing_name = self._get_param("thingName")
    status = _status_filter(self)
    items = []
    for job_id in getattr(backend, "standin_thing_jobs", {}).get(thing_name, []):
        job = backend.jobs.get(job_id)
        if job is None:
            continue
        refresh_job(backend, job)
        execution = backend.job_executions.get((job_id, thing_name))
        if execution is not None and (status is None or execution.status == status):
            items.append(execution)
    page, token = paginate_by_key(
        items, lambda e: (e.job_id,), self._get_param("nextToken"), _max_results(self)
    )
    body: dict[str, Any] = {
        "executionSummaries": [
            {"jobId": e.job_id, "jobExecutionSummary": _summary(e)} for e in page
        ]
    }
    if token:
        body["nextToken"] = token
    return ActionResult(body)


def r_cancel_job(self: IoTResponse) -> ActionResult:
    job = self.iot_backend.cancel_job(
        job_id=self._get_param("jobId"),
        reason_code=self._get_param("reasonCode"),
        comment=self._get_param("comment"),
        force=bool(self._get_bool_param("force", False)),
    )
    return ActionResult(
        _drop_none({"jobArn": job.job_arn, "jobId": job.job_id, "description": job.description})
    )


_ORIGINALS: dict[str, Callable[..., Any]] = {}

BACKEND_METHODS: dict[str, Callable[..., Any]] = {
    "create_job": create_job,
    "cancel_job": cancel_job,
}
RESPONSE_METHODS: dict[str, Callable[..., Any]] = {
    "describe_job": r_describe_job,
    "describe_job_execution": r_describe_job_execution,
    "list_job_executions_for_job": r_list_job_executions_for_job,
    "list_job_executions_for_thing": r_list_job_executions_for_thing,
    "cancel_job": r_cancel_job,
}


def install() -> None:
    _ORIGINALS["create_job"] = IoTBackend.create_job
    for name, function in BACKEND_METHODS.items():
        setattr(IoTBackend, name, function)
    for name, function in RESPONSE_METHODS.items():
        setattr(IoTResponse, name, function)


__all__ = ["dispatch_times", "install", "refresh_job"]
