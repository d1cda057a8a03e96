"""Landing: devices working in the target account, not just a certificate that moved.

AWS moves a certificate INACTIVE and bare. A landing plan says what the portal does in the
target after acceptance: activate, which target policies to attach (by default the names
detached in the source; mapped to another target policy, or created from the source's
document with the account id rewritten), which things to attach (same names; created when
missing, optionally with the source thing's type and attributes).

A pre-accepted move (both accounts managed; an approver of the target approved the landing
in advance, never the requester nor the source's approver) runs back to back in the worker:
deactivate, detach, transfer, accept, attach. Each landing step is recorded on the row, so a
dead worker resumes; a landing that stops is retried by the sweep with backoff, then needs
attention, and a person can try again. For a target the portal does not manage, the plan
becomes AWS CLI commands in the notice.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
import shlex
from dataclasses import asdict, dataclass, field
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from transfers import aws, leases, permissions, queue
from transfers.models import AwsAccount, SweepFailure, Transfer, TransferEvent
from transfers.workflow.errors import WORKER, TransferError
from transfers.workflow.events import aws_call, failed_try, lease_lost, record, transition
from transfers.workflow.outcome import moved

BACKOFF_BASE, BACKOFF_MAX = 5, 15 * 60
ARN_ACCOUNT = re.compile(r"arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:(\d{12}):")
ANY_ACCOUNT_ID = re.compile(r"(?<!\d)(\d{12})(?!\d)")
ACTIVATE = "update_certificate:ACTIVE"


@dataclass
class LandingChoice:
    """What the requester asks for the target side."""

    activate: bool = True
    create_policies: bool = False  # create a missing policy from the source's document
    policy_map: dict[str, str] = field(default_factory=dict)  # source name -> target name
    skip_things: bool = False
    create_things: bool = True
    copy_thing_details: bool = True  # the source thing's type and attributes

    @classmethod
    def parse_map(cls, text: str) -> dict[str, str]:
        """``Source=Target`` pairs, one per line or comma separated."""
        pairs: dict[str, str] = {}
        for part in re.split(r"[\n,]", text or ""):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise TransferError(
                    "invalid_policy_map", f"Policy mapping {part!r}: write SourceName=TargetName."
                )
            src, dst = (x.strip() for x in part.split("=", 1))
            if not src or not dst or len(src) > 128 or len(dst) > 128:
                raise TransferError(
                    "invalid_policy_map", f"Policy mapping {part!r}: two policy names."
                )
            pairs[src] = dst
        return pairs


# ----------------------------------------------------------------------------- planning


class TargetReader:
    """Reads from the source and target once per plan (or batch): the target's policy
    names, whether things exist there, and the source's policy documents and things."""

    def __init__(self, source: AwsAccount, target: AwsAccount | None, region: str) -> None:
        self.source, self.target, self.region = source, target, region
        self._policies: set[str] | None = None
        self._things: dict[str, bool] = {}
        self._types: dict[str, bool] = {}
        self._documents: dict[str, str] = {}
        self._source_things: dict[str, dict] = {}
        self._things_complete = False

    @property
    def managed(self) -> bool:
        return self.target is not None and self.target.managed

    def _tiot(self):
        return aws.client(self.target, self.region)

    def _siot(self):
        return aws.client(self.source, self.region)

    def prefetch(self) -> None:
        """For a batch: list the target's policies and both accounts' things once (a few
        paged calls) instead of describing each thing."""
        if self.managed:
            self.target_policies()
            self._things = dict.fromkeys(
                (t["thingName"] for t in aws.pages(self._tiot(), "list_things", "things")), True
            )
            self._things_complete = True
        for t in aws.pages(self._siot(), "list_things", "things"):
            self._source_things[t["thingName"]] = {
                "type": t.get("thingTypeName"),
                "attributes": t.get("attributes") or {},
            }

    def target_policies(self) -> set[str]:
        if self._policies is None:
            self._policies = {
                p["policyName"]
                for p in aws.pages(self._tiot(), "list_policies", "policies", pageSize=250)
            }
        return self._policies

    def target_has_thing(self, name: str) -> bool:
        if self._things_complete:
            return self._things.get(name, False)
        if name not in self._things:
            try:
                aws.call(self._tiot(), "describe_thing", thingName=name)
                self._things[name] = True
            except aws.AwsError as exc:
                if exc.code != "ResourceNotFoundException":
                    raise
                self._things[name] = False
        return self._things[name]

    def target_has_type(self, name: str) -> bool:
        if name not in self._types:
            try:
                aws.call(self._tiot(), "describe_thing_type", thingTypeName=name)
                self._types[name] = True
            except aws.AwsError as exc:
                if exc.code != "ResourceNotFoundException":
                    raise
                self._types[name] = False
        return self._types[name]

    def source_document(self, name: str) -> str:
        if name not in self._documents:
            answer = aws.call(self._siot(), "get_policy", policyName=name)
            self._documents[name] = answer["policyDocument"]
        return self._documents[name]

    def source_thing(self, name: str) -> dict:
        if name not in self._source_things:
            try:
                answer = aws.call(self._siot(), "describe_thing", thingName=name)
            except aws.AwsError as exc:
                if exc.code != "ResourceNotFoundException":
                    raise
                answer = {}
            self._source_things[name] = {
                "type": answer.get("thingTypeName"),
                "attributes": answer.get("attributes") or {},
            }
        return self._source_things[name]


def rewrite_document(document: str, source_id: str, target_id: str) -> tuple[str, list[str]]:
    """The source's policy document for the target: the source account id in ARNs becomes
    the target's. Returns the new document and what the rewrite cannot map."""
    try:
        parsed = json.loads(document)
    except ValueError:
        return document, ["its document is not valid JSON"]
    text = json.dumps(parsed, indent=2, sort_keys=True)
    problems = sorted(
        {
            f"it names account {other}, which the rewrite cannot map"
            for other in ARN_ACCOUNT.findall(text)
            if other not in (source_id, target_id)
        }
    )
    rewritten = text.replace(f":{source_id}:", f":{target_id}:")
    leftover = {m for m in ANY_ACCOUNT_ID.findall(rewritten) if m == source_id}
    if leftover:
        problems.append(
            f"it names the source account {source_id} outside an ARN (for example in a "
            "condition), which the rewrite cannot map"
        )
    return rewritten, problems


def diff(before: str, after: str, name: str) -> str:
    with contextlib.suppress(ValueError):
        before = json.dumps(json.loads(before), indent=2, sort_keys=True)
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            f"{name} (source)",
            f"{name} (target)",
        )
    )


def plan_landing(
    reader: TargetReader, policies: list[str], things: list[str], choice: LandingChoice
) -> dict:
    """The landing part of a plan: steps, warnings and blockers. Reads fresh from AWS."""
    target_id = reader.target.account_id if reader.target else ""
    out: dict = {
        "choice": asdict(choice),
        "managed": reader.managed,
        "activate": choice.activate,
        "policies": [],
        "things": [],
        "warnings": [],
        "blockers": [],
    }
    unknown_map = set(choice.policy_map) - set(policies)
    if unknown_map:
        out["warnings"].append(
            "Mapped policies the certificate does not have are ignored: "
            + ", ".join(sorted(unknown_map))
            + "."
        )
    for name in policies:
        target_name = choice.policy_map.get(name, name)
        entry = {"source": name, "name": target_name, "create": False}
        if reader.managed and target_name not in reader.target_policies():
            if target_name != name:
                out["blockers"].append(
                    f"Policy {target_name} (mapped from {name}) does not exist in the target."
                )
            elif not choice.create_policies:
                out["blockers"].append(
                    f"Policy {name} does not exist in the target: map it to a target policy "
                    "or let the portal create it from the source's document."
                )
            else:
                source_doc = reader.source_document(name)
                new_doc, problems = rewrite_document(
                    source_doc, reader.source.account_id, target_id
                )
                for problem in problems:
                    out["blockers"].append(f"Policy {name} cannot be copied: {problem}.")
                entry.update(create=True, document=new_doc, diff=diff(source_doc, new_doc, name))
        out["policies"].append(entry)
    if not choice.skip_things:
        for name in things:
            entry = {"name": name, "create": False}
            if reader.managed and not reader.target_has_thing(name):
                if not choice.create_things:
                    out["blockers"].append(
                        f"Thing {name} does not exist in the target: let the portal create it, "
                        "or skip things."
                    )
                else:
                    entry["create"] = True
                    if choice.copy_thing_details:
                        details = reader.source_thing(name)
                        if details["type"] and not reader.target_has_type(details["type"]):
                            out["warnings"].append(
                                f"Thing type {details['type']} does not exist in the target: "
                                f"{name} is created without a type."
                            )
                            details = {**details, "type": None}
                        entry.update(details)
            out["things"].append(entry)
    if not reader.managed:
        out["warnings"].append(
            "The portal does not manage the target: the notice carries these steps as AWS "
            "CLI commands for the target's administrators."
        )
    return out


def steps(transfer: Transfer) -> list[tuple[str, str, dict]]:
    """(key, operation, params) of every step after acceptance, in order."""
    plan = transfer.landing or {}
    arn = transfer.transferred_arn
    out: list[tuple[str, str, dict]] = []
    for p in plan.get("policies", []):
        if p.get("create"):
            out.append(
                (
                    f"create_policy:{p['name']}",
                    "create_policy",
                    {"policyName": p["name"], "policyDocument": p["document"]},
                )
            )
        out.append(
            (
                f"attach_policy:{p['name']}",
                "attach_policy",
                {"policyName": p["name"], "target": arn},
            )
        )
    for t in plan.get("things", []):
        if t.get("create"):
            params: dict = {"thingName": t["name"]}
            if t.get("type"):
                params["thingTypeName"] = t["type"]
            if t.get("attributes"):
                params["attributePayload"] = {"attributes": t["attributes"]}
            out.append((f"create_thing:{t['name']}", "create_thing", params))
        out.append(
            (
                f"attach_thing:{t['name']}",
                "attach_thing_principal",
                {"thingName": t["name"], "principal": arn},
            )
        )
    if (
        plan.get("activate")
        and transfer.status == Transfer.Status.ACCEPTED
        and not transfer.set_as_active
    ):
        # Accepted inactive (outside the portal, or by someone without the landing right):
        # activating is the plan's last step.
        out.append(
            (
                ACTIVATE,
                "update_certificate",
                {"certificateId": transfer.certificate_id, "newStatus": "ACTIVE"},
            )
        )
    return out


def steps_left(transfer: Transfer) -> list[str]:
    labels = {
        "create_policy": "Create policy {}",
        "attach_policy": "Attach policy {}",
        "create_thing": "Create thing {}",
        "attach_thing_principal": "Attach thing {}",
        "update_certificate": "Set the certificate {}",
    }
    done = set(transfer.landed)
    left = []
    if transfer.status == Transfer.Status.PENDING_ACCEPTANCE:
        left.append("Accept" + (" and activate" if transfer.landing.get("activate") else ""))
    left += [
        labels[op].format(key.split(":", 1)[1]) for key, op, _ in steps(transfer) if key not in done
    ]
    return left


def cli_commands(transfer: Transfer) -> list[str]:
    """The landing as AWS CLI commands, for a target the portal does not manage."""
    plan = transfer.landing or {}
    q = shlex.quote
    region = f"--region {q(transfer.region)}"
    cid = q(transfer.certificate_id)
    arn = q(
        transfer.transferred_arn
        or transfer.certificate_arn.replace(
            f":{transfer.source.account_id}:", f":{transfer.target_account_id}:"
        )
    )
    commands = [
        f"aws iot accept-certificate-transfer --certificate-id {cid}"
        + (" --set-as-active" if plan.get("activate") else "")
        + f" {region}"
    ]
    for p in plan.get("policies", []):
        if p.get("create"):
            commands.append(
                f"aws iot create-policy --policy-name {q(p['name'])} "
                f"--policy-document {q(json.dumps(json.loads(p['document'])))} {region}"
            )
        commands.append(
            f"aws iot attach-policy --policy-name {q(p['name'])} --target {arn} {region}"
        )
    for t in plan.get("things", []):
        commands.append(
            f"aws iot attach-thing-principal --thing-name {q(t['name'])} --principal {arn} {region}"
        )
    return commands


# ----------------------------------------------------------------------------- approval


def approve_landing(user, pk: int, comment: str = "") -> Transfer:
    """The target side approves the landing in advance: with it the worker accepts and
    lands right after the transfer, with no human wait between the two accounts."""
    open_states = [
        Transfer.Status.REQUESTED,
        Transfer.Status.APPROVED,
        Transfer.Status.PREPARING,
        Transfer.Status.PENDING_ACCEPTANCE,
    ]
    with transaction.atomic():
        # Checked on the locked row: approving the move locks it too, so the two never pass
        # their checks against each other's old state.
        transfer = Transfer.objects.select_for_update().get(pk=pk)
        if not permissions.can_approve_landing(user, transfer):
            raise TransferError(
                "forbidden",
                "Only an approver or admin of the managed target account approves a landing, "
                "and never the requester or anyone who approved the move.",
                status=403,
            )
        if not transfer.landing or transfer.landing_state != Transfer.Landing.PLANNED:
            raise TransferError("invalid_state", "There is no planned landing to approve.", 409)
        if transfer.status not in open_states or transfer.target_approver_id is not None:
            raise TransferError(
                "invalid_state", "The landing was already decided or it ended.", 409
            )
        Transfer.objects.filter(pk=pk).update(
            target_approver=user, target_approved_at=timezone.now()
        )
        record(transfer, "landing_approved", user, comment=(comment or "").strip()[:2000])
        if transfer.status == Transfer.Status.PENDING_ACCEPTANCE:
            queue.enqueue("land_transfer", pk)
    transfer.refresh_from_db()
    return transfer


NOT_APPROVED = (
    "Accepted without the landing: nobody approved it. An approver of the target account "
    "(not the requester nor anyone who approved the move) can run it with “Try landing "
    "again”, or the steps below can be done by hand."
)


def after_acceptance(transfer: Transfer, by) -> None:
    """Every acceptance comes here (outcome.moved): in the portal's inbox, by the worker of a
    pre-accepted move, or seen by the reconciler when the target accepted in AWS itself. A
    planned landing that was approved starts (in the background, after commit); one nobody
    approved needs a person, with its steps."""
    target = transfer.target
    if target is None or not target.managed:
        return  # the portal cannot act there: the notice's CLI commands are the landing
    now = timezone.now()
    planned = Transfer.objects.filter(
        pk=transfer.pk, status=Transfer.Status.ACCEPTED, landing_state=Transfer.Landing.PLANNED
    )
    if planned.filter(target_approved_at__isnull=False).update(
        landing_state=Transfer.Landing.LANDING, updated=now
    ):
        queue.enqueue("land_transfer", transfer.pk)
    elif planned.update(
        landing_state=Transfer.Landing.ATTENTION, landing_error=NOT_APPROVED, updated=now
    ):
        fresh = Transfer.objects.get(pk=transfer.pk)
        record(
            fresh,
            "landing",
            by,
            ok=False,
            result="attention",
            reason="not approved",
            steps_left=steps_left(fresh),
        )


# ----------------------------------------------------------------------------- landing


def _claim(pk: int) -> str | None:
    """Take the row's lease for landing: its token, or None when there is nothing to land
    or another worker holds it."""
    now, token = timezone.now(), leases.new_token()
    taken = (
        Transfer.objects.filter(pk=pk)
        .filter(
            Q(landing_state__in=Transfer.Landing.OPEN)
            | Q(
                landing_state=Transfer.Landing.PLANNED,
                target_approved_at__isnull=False,
                status=Transfer.Status.PENDING_ACCEPTANCE,
            )
        )
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(
            lease_until=leases.until(),
            lease_token=token,
            landing_state=Transfer.Landing.LANDING,
        )
    )
    return token if taken else None


def land(pk: int) -> str:
    """Accept (if still pending, for a pre-accepted move) and run every landing step not
    done yet. Returns "landed", "retry", "attention" or "skipped: ...". Never raises for
    AWS trouble: it is recorded and the sweep comes back."""
    token = _claim(pk)
    if token is None:
        return "skipped: nothing to land"
    with leases.kept(pk, token):
        try:
            return _land(pk, token)
        except leases.LeaseLost:
            return lease_lost(Transfer(pk=pk), "landing")


def _land(pk: int, token: str) -> str:
    transfer = Transfer.objects.select_related("source", "target", "target_approver").get(pk=pk)
    failures: list[str] = []
    try:
        tiot = aws.client(transfer.target, transfer.region)
        if transfer.status == Transfer.Status.PENDING_ACCEPTANCE:
            leases.confirm(pk, token)  # stop here if another worker took the row
            outcome = _accept(transfer, tiot)
            if outcome != "accepted":
                _release(pk, token, Transfer.Landing.PLANNED if outcome == "pending" else "")
                return f"skipped: {outcome}"
            transfer.refresh_from_db()
        for key, operation, params in steps(transfer):
            if key in transfer.landed:
                continue
            leases.confirm(pk, token)
            try:
                aws_call(transfer, WORKER, tiot, operation, **params)
            except aws.AwsError as exc:
                if exc.retryable:
                    raise
                if not (
                    operation in ("create_policy", "create_thing")
                    and exc.code == "ResourceAlreadyExistsException"
                ):
                    failures.append(f"{operation}: {exc.user_message}")
                    continue
            transfer.landed = leases.append(pk, token, "landed", key)
    except aws.AwsError as exc:
        failures.append(exc.user_message)
    return _after_try(transfer, failures, token)


def _accept(transfer: Transfer, tiot) -> str:
    from transfers.workflow.reconcile import decide

    plan = transfer.landing
    try:
        aws_call(
            transfer,
            WORKER,
            tiot,
            "accept_certificate_transfer",
            certificateId=transfer.certificate_id,
            setAsActive=bool(plan.get("activate")),
        )
    except aws.AwsError as exc:
        if exc.code != "TransferAlreadyCompletedException":
            raise
        # Accepted, rejected or cancelled meanwhile: AWS decides.
        outcome = decide(transfer, aws.client(transfer.source, transfer.region))
        return "accepted" if outcome == "accepted" else outcome

    def fill(row: Transfer) -> None:
        row.accept_date = timezone.now()
        row.set_as_active = bool(plan.get("activate"))

    transition(
        transfer.pk,
        "mark_accepted",
        WORKER,
        before=fill,
        refuse="It already ended.",
        set_as_active=bool(plan.get("activate")),
        pre_accepted_by=transfer.target_approver.get_username() if transfer.target_approver else "",
    )
    moved(transfer, WORKER)
    return "accepted"


def _release(pk: int, token: str, state: str) -> None:
    if not leases.release(pk, token, landing_state=state):
        raise leases.LeaseLost(pk)


def _after_try(transfer: Transfer, failures: list[str], token: str) -> str:
    now = timezone.now()
    transfer.refresh_from_db()
    if not failures:
        active = transfer.set_as_active or ACTIVATE in transfer.landed
        usable = now if active else None
        if not leases.release(
            transfer.pk,
            token,
            landing_state=Transfer.Landing.LANDED,
            landing_next_at=None,
            landing_error="",
            usable_at=usable,
            updated=now,
        ):
            raise leases.LeaseLost(transfer.pk)
        record(transfer, "landed", WORKER, steps=transfer.landed, active=active)
        return "landed"
    return failed_try(
        transfer, "landing", failures, steps_left(transfer), (BACKOFF_BASE, BACKOFF_MAX), token
    )


def due_landings(now=None) -> list[int]:
    now = now or timezone.now()
    grace = now - timedelta(minutes=1)
    return list(
        Transfer.objects.filter(
            Q(landing_state=Transfer.Landing.PARTIAL, landing_next_at__lte=now)
            # A worker died mid-landing: its lease ran out.
            | Q(landing_state=Transfer.Landing.LANDING, updated__lt=grace)
            # Pre-accepted, pending, never landed (the task was lost).
            | Q(
                landing_state=Transfer.Landing.PLANNED,
                target_approved_at__isnull=False,
                status=Transfer.Status.PENDING_ACCEPTANCE,
                updated__lt=grace,
            )
        )
        .exclude(lease_until__gt=now)
        .values_list("pk", flat=True)[:500]
    )


def sweep_landings() -> int:
    sent = 0
    for pk in due_landings():
        try:
            queue.send_now("land_transfer", pk)
        except Exception as exc:  # one landing's trouble never stops the sweep
            SweepFailure.note(SweepFailure.Sweep.LANDINGS, f"transfer {pk}", exc)
        else:
            sent += 1
    return sent


def retry_landing(user, pk: int) -> Transfer:
    """Try a stopped landing again. One nobody approved (the target accepted without it) is
    run only by someone who may approve it, and that person is recorded as its approver."""
    transfer = Transfer.objects.select_related("target").get(pk=pk)
    approving = transfer.target_approver_id is None
    if approving and not permissions.can_approve_landing(user, transfer):
        raise TransferError(
            "forbidden",
            "Nobody approved this landing: only an approver or admin of the target account, "
            "never the requester or anyone who approved the move, runs it.",
            status=403,
        )
    if not approving and not permissions.can_act_as_target(user, transfer):
        raise TransferError(
            "forbidden", "Only an operator of the target account can land it.", status=403
        )
    now = timezone.now()
    rows = Transfer.objects.filter(
        pk=pk,
        landing_state__in=[Transfer.Landing.ATTENTION, Transfer.Landing.PARTIAL],
        target_approver__isnull=approving,
    )
    approval = {"target_approver": user, "target_approved_at": now} if approving else {}
    with transaction.atomic():
        changed = rows.update(
            landing_state=Transfer.Landing.PARTIAL,
            landing_attempts=0,
            landing_next_at=now,
            updated=now,
            **approval,
        )
        if not changed:
            raise TransferError(
                "invalid_state", "Only a landing that stopped can be tried again.", 409
            )
        if approving:
            record(transfer, "landing_approved", user, on_retry=True)
        record(transfer, "landing_retry", user, steps_left=steps_left(transfer))
        queue.enqueue("land_transfer", pk)
    transfer.refresh_from_db()
    return transfer


def finished_by_hand(user, pk: int) -> Transfer:
    """A person finished the landing in AWS themselves: record it, stop retrying."""
    transfer = Transfer.objects.select_related("target").get(pk=pk)
    if not permissions.can_act_as_target(user, transfer):
        raise TransferError(
            "forbidden", "Only an operator of the target account can say so.", status=403
        )
    with transaction.atomic():
        changed = Transfer.objects.filter(
            pk=pk, landing_state__in=[Transfer.Landing.ATTENTION, Transfer.Landing.PARTIAL]
        ).update(landing_state=Transfer.Landing.LANDED, landing_next_at=None, lease_until=None)
        if not changed:
            raise TransferError("invalid_state", "The landing is not stopped.", 409)
        record(
            transfer,
            "landed_by_hand",
            user,
            kind=TransferEvent.Kind.NOTE,
            steps_left=steps_left(transfer),
        )
    transfer.refresh_from_db()
    return transfer
