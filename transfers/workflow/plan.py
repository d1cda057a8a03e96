"""What a transfer will do, read fresh from AWS before anyone asks for it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import timedelta

from django.utils import timezone

from transfers import aws
from transfers.models import ACCOUNT_ID_RE, AwsAccount, Certificate, Transfer
from transfers.workflow.landing_plan import LandingChoice, TargetReader, plan_landing

EXPIRING_DAYS = 30


@dataclass
class Options:
    deactivate: bool = True
    detach_policies: bool = True
    detach_things: bool = True
    restore: bool = True
    # Tell the certificate's things the target's endpoint before the move (AWS IoT Jobs in
    # the source; workflow.devices). For a target the portal does not manage, the requester
    # types its data endpoint.
    tell_devices: bool = False
    device_endpoint: str = ""


@dataclass
class Plan:
    status: str
    policies: list[str]
    things: list[str]
    not_after: str | None
    steps: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    blockers: list[str] = field(default_factory=list)
    landing: dict = field(default_factory=dict)  # workflow.landing_plan.plan_landing; {} = none
    exclusive_things: list[str] = field(default_factory=list)  # of things: EXCLUSIVE_THING

    @property
    def fingerprint(self) -> str:
        """Changes whenever what AWS says about the certificate changes."""
        state = [self.status, sorted(self.policies), sorted(self.things), self.landing]
        if self.exclusive_things:  # only then: earlier plans' fingerprints stay as they were
            state.append(sorted(self.exclusive_things))
        state = json.dumps(state, sort_keys=True)
        return hashlib.sha256(state.encode()).hexdigest()[:16]

    def as_dict(self) -> dict:
        return {
            "status": self.status,
            "policies": self.policies,
            "things": self.things,
            "exclusive_things": self.exclusive_things,
            "not_after": self.not_after,
            "steps": self.steps,
            "warnings": self.warnings,
            "blockers": self.blockers,
            "landing": self.landing,
            "fingerprint": self.fingerprint,
        }


def read_certificate(account: AwsAccount, region: str, certificate_id: str) -> dict:
    """Fresh state of a certificate: status, validity, policies and things (with the names
    of those attached exclusively)."""
    iot = aws.client(account, region)
    desc = aws.call(iot, "describe_certificate", certificateId=certificate_id)[
        "certificateDescription"
    ]
    arn = desc["certificateArn"]
    policies = [
        p["policyName"]
        for p in aws.pages(iot, "list_attached_policies", "policies", target=arn, pageSize=250)
    ]
    things = aws.principal_things(iot, arn)
    exclusive = [name for name, kind in things.items() if kind == aws.EXCLUSIVE_THING]
    return {
        "description": desc,
        "policies": policies,
        "things": list(things),
        "exclusive_things": exclusive,
    }


def make_plan(
    cert: Certificate,
    target_account_id: str,
    options: Options,
    landing: LandingChoice | None = None,
) -> Plan:
    try:
        fresh = read_certificate(cert.account, cert.region, cert.certificate_id)
    except aws.AwsError as exc:
        plan = Plan(status="UNKNOWN", policies=[], things=[], not_after=None)
        plan.blockers.append(f"Could not read the certificate from AWS: {exc.user_message}")
        return plan
    desc = fresh["description"]
    not_after = desc.get("validity", {}).get("notAfter")
    plan = Plan(
        status=desc["status"],
        policies=fresh["policies"],
        things=fresh["things"],
        not_after=not_after.isoformat() if not_after else None,
        exclusive_things=fresh["exclusive_things"],
    )
    _plan_steps(plan, cert, target_account_id, options, not_after)
    if landing is not None:
        target = AwsAccount.objects.filter(account_id=target_account_id).first()
        reader = TargetReader(cert.account, target, cert.region)
        try:
            plan.landing = plan_landing(
                reader, plan.policies, plan.things, landing, plan.exclusive_things
            )
        except aws.AwsError as exc:
            plan.blockers.append(f"Could not read the target for the landing: {exc.user_message}")
        else:
            plan.blockers += plan.landing["blockers"]
            plan.warnings += plan.landing["warnings"]
            plan.steps += landing_steps_text(plan.landing)
    return plan


def landing_steps_text(landing: dict) -> list[str]:
    """The landing in the plan's words."""
    out = ["Accept in the target, inactive."]
    if (landing.get("indexing") or {}).get("enable"):
        out.append(
            "Turn on thing connectivity indexing in the target (its other indexing settings "
            "kept), so the portal can verify that the devices reconnected there."
        )
    for p in landing["policies"]:
        verb = "Create and attach" if p.get("create") else "Attach"
        mapped = f" (for {p['source']})" if p["name"] != p["source"] else ""
        out.append(f"{verb} policy {p['name']}{mapped} in the target.")
    for t in landing["things"]:
        verb = "Create and attach" if t.get("create") else "Attach"
        how = " exclusively" if t.get("exclusive") else ""
        out.append(f"{verb} thing {t['name']}{how} in the target.")
    if landing["activate"]:
        out.append("Activate it in the target, once its policies and things are attached.")
    return out


def _plan_steps(plan: Plan, cert: Certificate, target_id: str, options: Options, not_after) -> None:
    source_id = cert.account.account_id
    if plan.status == "ACTIVE":
        if options.deactivate:
            plan.steps.append(
                "Deactivate the certificate (it is ACTIVE): its devices stop connecting with it."
            )
        else:
            plan.blockers.append(
                "The certificate is ACTIVE and you chose not to deactivate it; "
                "AWS only transfers inactive certificates."
            )
    elif plan.status == "PENDING_TRANSFER":
        plan.blockers.append("The certificate is already pending a transfer in AWS.")
    elif plan.status != "INACTIVE":
        plan.blockers.append(f"A {plan.status} certificate cannot be transferred.")
    for kind, names, allowed in (
        ("policies", plan.policies, options.detach_policies),
        ("things", plan.things, options.detach_things),
    ):
        if not names:
            continue
        if allowed:
            shown = [
                f"{name} (exclusive)" if name in plan.exclusive_things else name for name in names
            ]
            plan.steps.append(f"Detach {kind} ({len(names)}): {', '.join(shown)}.")
        else:
            plan.blockers.append(
                f"The certificate has {kind} attachments ({', '.join(names)}) "
                f"and you chose not to detach them; AWS refuses the transfer."
            )
    plan.steps.append(
        f"Call TransferCertificate to account {target_id}; it stays pending until "
        "the target accepts or rejects it."
    )
    if options.restore and plan.steps[:-1]:
        plan.steps.append("If it is cancelled, rejected or expires, put back what was removed.")
    if target_id == source_id:
        plan.blockers.append("The target is the account that already owns the certificate.")
    if not ACCOUNT_ID_RE.match(target_id):
        plan.blockers.append("The target must be a 12-digit AWS account id.")
    if (
        Transfer.objects.open()
        .filter(source=cert.account, region=cert.region, certificate_id=cert.certificate_id)
        .exists()
    ):
        plan.blockers.append("This certificate already has an open transfer.")
    earlier = unfinished_restore(cert)
    if earlier is not None:
        plan.blockers.append(
            f"Transfer #{earlier.pk} has not finished putting back what it removed from this "
            f"certificate ({earlier.get_restore_state_display().lower()}); a new transfer "
            "would prepare the certificate while that restore re-attaches and reactivates it. "
            f"It can be requested once the restore is done: on transfer #{earlier.pk}'s page, "
            "try again, or say you finished it by hand."
        )
    if not_after is not None:
        if not_after <= timezone.now():
            plan.warnings.append(f"The certificate expired on {not_after:%Y-%m-%d}.")
        elif not_after <= timezone.now() + timedelta(days=EXPIRING_DAYS):
            plan.warnings.append(
                f"The certificate expires on {not_after:%Y-%m-%d}, within {EXPIRING_DAYS} days."
            )
    target = AwsAccount.objects.filter(account_id=target_id).first()
    if target is None:
        plan.warnings.append(
            f"Account {target_id} is not known to the portal: nobody will be "
            "told the transfer is waiting unless you tell them."
        )
    elif not target.has_contacts:
        plan.warnings.append(
            f"{target.name} has no notice contacts: nobody will be told the transfer is waiting."
        )


def unfinished_restore(cert: Certificate) -> Transfer | None:
    """An earlier transfer of ``cert`` still putting back what it removed (pending, partial
    or needing attention). Until it is done the restore owns the certificate: a new transfer
    is not requested meanwhile (and one is not cancelled into a restore while another is
    open: workflow.cancel)."""
    return (
        Transfer.objects.filter(
            source_id=cert.account_id,
            region=cert.region,
            certificate_id=cert.certificate_id,
            restore_state__in=Transfer.Restore.UNFINISHED,
        )
        .order_by("-pk")
        .first()
    )
