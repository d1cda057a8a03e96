"""Landing plans: what the portal does in the target after acceptance, worked out before
anything runs.

AWS moves a certificate INACTIVE and bare. A landing plan says: activate, which target
policies to attach (by default the names detached in the source; mapped to another target
policy, or created from the source's document with the account id rewritten), which things
to attach (same names; created when missing, optionally with the source thing's type and
attributes), and whether the target's fleet indexing has thing connectivity, without which
nobody can tell whether the devices came back there (GetIndexingConfiguration; turning it on
is a step of its own when chosen, with its diff). This module reads AWS to plan and turns a
plan into steps, labels and AWS CLI commands; it changes nothing. Running a plan is
workflow/landing.py; notices import this module only (the CLI commands for a target the
portal does not manage).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
import shlex
from collections.abc import Collection
from dataclasses import asdict, dataclass, field

from transfers import aws
from transfers.models import AwsAccount, Transfer
from transfers.workflow.errors import TransferError

ARN_ACCOUNT = re.compile(r"arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:(\d{12}):")
ANY_ACCOUNT_ID = re.compile(r"(?<!\d)(\d{12})(?!\d)")
ACTIVATE = "update_certificate:ACTIVE"
INDEXING = "update_indexing:connectivity"
CONNECTIVITY = "STATUS"


@dataclass
class LandingChoice:
    """What the requester asks for the target side."""

    activate: bool = True
    create_policies: bool = False  # create a missing policy from the source's document
    policy_map: dict[str, str] = field(default_factory=dict)  # source name -> target name
    skip_things: bool = False
    create_things: bool = True
    copy_thing_details: bool = True  # the source thing's type and attributes
    # Turn on thing connectivity indexing in the target when it is off (its other indexing
    # settings kept), so the portal can verify that the devices reconnected there.
    enable_connectivity_indexing: bool = False

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
        self._indexing: dict | None = None

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

    def thing_indexing(self) -> dict:
        """The target's thing indexing configuration (GetIndexingConfiguration), read once."""
        if self._indexing is None:
            answer = aws.call(self._tiot(), "get_indexing_configuration")
            self._indexing = answer.get("thingIndexingConfiguration") or {}
        return self._indexing

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


def with_connectivity(current: dict) -> dict:
    """The target's thing indexing configuration with thing connectivity indexing on: its
    other settings (shadow and Device Defender modes, custom fields, filter) kept, the thing
    index at least REGISTRY (connectivity needs one). The managed fields are AWS's own,
    derived from the modes: not written back."""
    after = {k: v for k, v in (current or {}).items() if k != "managedFields"}
    after["thingConnectivityIndexingMode"] = CONNECTIVITY
    if after.get("thingIndexingMode", "OFF") == "OFF":
        after["thingIndexingMode"] = "REGISTRY"
    return after


def indexing_diff(before: dict, after: dict) -> str:
    """The indexing change as a diff of the two configurations' JSON."""

    def text(config: dict) -> list[str]:
        shown = {k: v for k, v in (config or {}).items() if k != "managedFields"}
        return json.dumps(shown, indent=2, sort_keys=True).splitlines(keepends=True)

    return "".join(
        difflib.unified_diff(
            text(before),
            text(after),
            "thingIndexingConfiguration (now)",
            "thingIndexingConfiguration (after the landing)",
        )
    )


def _plan_indexing(reader: TargetReader, choice: LandingChoice, out: dict) -> None:
    """Whether the devices' return can be verified in the target, and the indexing step
    when one is chosen. ``out["connectivity"]``: "on", "off", "turned on" (by the landing),
    "unknown" (not readable, or a target the portal does not manage)."""
    unmanaged_after = {
        "thingIndexingMode": "REGISTRY",
        "thingConnectivityIndexingMode": CONNECTIVITY,
    }
    if not reader.managed:
        out["connectivity"] = "unknown"
        if choice.enable_connectivity_indexing:
            out["indexing"] = {"enable": True, "after": unmanaged_after}
            out["warnings"].append(
                "The target's administrators are asked to turn on thing connectivity "
                "indexing; the command sets thing indexing to REGISTRY with connectivity "
                "status: if the target already indexes more (shadows, Device Defender, custom "
                "fields; `aws iot get-indexing-configuration` shows them), they keep those "
                "settings in the command."
            )
        return
    try:
        before = reader.thing_indexing()
    except aws.AwsError as exc:
        if exc.retryable:
            raise
        out["connectivity"] = "unknown"
        out["warnings"].append(
            f"Could not read the target's fleet indexing configuration ({exc.user_message}): "
            "whether the devices reconnected there may not be verifiable."
        )
        return
    if before.get("thingConnectivityIndexingMode") == CONNECTIVITY:
        out["connectivity"] = "on"
        return
    if not choice.enable_connectivity_indexing:
        out["connectivity"] = "off"
        out["warnings"].append(
            "Thing connectivity indexing is off in the target: reconnection cannot be "
            "verified (the portal cannot tell whether the devices came back there). Choose "
            "to turn it on with the landing, or turn it on in the target."
        )
        return
    after = with_connectivity(before)
    out["connectivity"] = "turned on"
    out["indexing"] = {
        "enable": True,
        "before": {k: v for k, v in before.items() if k != "managedFields"},
        "after": after,
        "diff": indexing_diff(before, after),
    }


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
    reader: TargetReader,
    policies: list[str],
    things: list[str],
    choice: LandingChoice,
    exclusive: Collection[str] = (),
) -> dict:
    """The landing part of a plan: steps, warnings and blockers. Reads fresh from AWS.
    ``exclusive``: the things attached exclusively in the source, attached so again."""
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
            if name in exclusive:
                entry["exclusive"] = True
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
    if things:  # no thing, no device to wait for
        _plan_indexing(reader, choice, out)
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
    indexing = plan.get("indexing") or {}
    if indexing.get("enable"):
        # Before the activation, so the devices' first connection in the target is indexed.
        # The landing reads the configuration again and writes it only when still off
        # (landing.enable_connectivity): ``after`` is what the plan showed.
        out.append(
            (
                INDEXING,
                "update_indexing_configuration",
                {"thingIndexingConfiguration": indexing["after"]},
            )
        )
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
        params = {"thingName": t["name"], "principal": arn}
        if _exclusive(transfer, t):
            params["thingPrincipalType"] = aws.EXCLUSIVE_THING
        out.append((f"attach_thing:{t['name']}", "attach_thing_principal", params))
    if (
        plan.get("activate")
        and transfer.status in (Transfer.Status.PENDING_ACCEPTANCE, Transfer.Status.ACCEPTED)
        and not transfer.set_as_active
    ):
        # Accepted inactive (the portal always accepts so for a landing): activating is the
        # plan's last step, so a device never connects to a certificate without its policies.
        out.append(
            (
                ACTIVATE,
                "update_certificate",
                {"certificateId": transfer.certificate_id, "newStatus": "ACTIVE"},
            )
        )
    return out


def _exclusive(transfer: Transfer, thing: dict) -> bool:
    """How the thing was attached in the source: as the worker found it when it detached it,
    else as the plan read it."""
    if thing["name"] in transfer.detached_things:
        return thing["name"] in transfer.exclusive_things
    return bool(thing.get("exclusive"))


def steps_left(transfer: Transfer) -> list[str]:
    labels = {
        "create_policy": "Create policy {}",
        "attach_policy": "Attach policy {}",
        "create_thing": "Create thing {}",
        "attach_thing_principal": "Attach thing {}",
        "update_certificate": "Set the certificate {}",
        "update_indexing_configuration": "Turn on thing {} indexing",
    }
    done = set(transfer.landed)
    left = []
    if transfer.status == Transfer.Status.PENDING_ACCEPTANCE:
        left.append("Accept")
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
    # Accepted inactive and activated last, once everything is attached: a device's first
    # connection finds its policies and thing in place.
    commands = [f"aws iot accept-certificate-transfer --certificate-id {cid} {region}"]
    indexing = plan.get("indexing") or {}
    if indexing.get("enable"):
        # Before the activation: the devices' first connection in the target is indexed.
        commands.append(
            "aws iot update-indexing-configuration --thing-indexing-configuration "
            f"{q(json.dumps(indexing['after'], sort_keys=True))} {region}"
        )
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
        how = f" --thing-principal-type {aws.EXCLUSIVE_THING}" if _exclusive(transfer, t) else ""
        commands.append(
            f"aws iot attach-thing-principal --thing-name {q(t['name'])} --principal {arn}"
            f"{how} {region}"
        )
    if plan.get("activate"):
        commands.append(
            f"aws iot update-certificate --certificate-id {cid} --new-status ACTIVE {region}"
        )
    return commands
