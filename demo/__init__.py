"""The demo: three accounts in the AWS stand-in, about 60 certificates, a user per role.

Everything goes into the stand-in through boto3, exactly as it would into real AWS.
Certificates are built deterministically (derived keys, deterministic ECDSA, dates anchored
to today), so seeding twice on the same day finds the same certificate ids and adds nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.contrib.auth.models import Group, User
from django.db import transaction
from django_otp.oath import TOTP

from transfers import aws
from transfers.models import AccountGrant, AuthenticatorApp, AwsAccount, Role

PASSWORD = "transfer-demo"
# The demo's approvers and admins pass a second factor like everyone's: their TOTP devices
# share this fixed, public secret (base32 ORZGC3TTMZSXELLQN5ZHIYLMFVSGK3LP, i.e. the bytes of
# "transfer-portal-demo"). `python manage.py demo_totp bob` prints the current code.
TOTP_SECRET = b"transfer-portal-demo"
TOTP_USERS = ["bob", "carol", "admin"]
SOURCE, TARGET, KNOWN = "111111111111", "222222222222", "333333333333"
REGIONS = ["us-east-1", "eu-west-1"]
BULK_REGION = "us-west-2"


@dataclass(frozen=True)
class DemoUser:
    username: str
    group: str
    what: str


USERS = [
    DemoUser("alice", "requester", "requests transfers from Fleet production"),
    DemoUser("bob", "approver", "approves transfers from Fleet production"),
    DemoUser(
        "carol",
        "",
        "admin of the Acme customer account: accepts incoming transfers, approves landings",
    ),
    DemoUser("victor", "viewer", "read-only on both managed accounts"),
    DemoUser("admin", "admin", "portal admin: every account, Django admin"),
]

ACCOUNTS = [
    {
        "account_id": SOURCE,
        "name": "Fleet production",
        "managed": True,
        "regions": [*REGIONS, BULK_REGION],
        "role_arn": f"arn:aws:iam::{SOURCE}:role/TransferPortal",
        "external_id": "demo-external-id",
        "contact_emails": "iot-platform@fleet.example",
    },
    {
        "account_id": TARGET,
        "name": "Acme devices (customer)",
        "managed": True,
        "regions": REGIONS,
        "role_arn": f"arn:aws:iam::{TARGET}:role/TransferPortal",
        "external_id": "demo-external-id",
        "contact_emails": "iot-admins@acme.example\nsecurity@acme.example",
    },
    {
        "account_id": KNOWN,
        "name": "Partner Ltd (known target)",
        "managed": False,
        "regions": [],
        "contact_emails": "cloud@partner.example",
    },
]

# (account, region, how many, thing prefix)
FLEETS = [
    (SOURCE, "us-east-1", 28, "sensor"),
    (SOURCE, "eu-west-1", 14, "gateway"),
    (TARGET, "us-east-1", 12, "acme-meter"),
    (TARGET, "eu-west-1", 6, "acme-hub"),
    # A fleet of a thousand, for bulk transfers; its first sync runs in the worker.
    (SOURCE, BULK_REGION, 1000, "meter"),
]
# Every managed fleet's account and region gets these policies, so Acme devices (us-east-1)
# holds the very names Fleet production's us-east-1 certificates use: a pre-accepted move
# there (README, "Move devices with a pre-accepted landing") attaches them without mapping
# or creating any; the devices' things are created in Acme by the landing.
POLICIES = ["DevicePublish", "DeviceSubscribe", "FleetTelemetry"]
# Fleet production us-east-1 certificates that land cleanly in Acme: ACTIVE, with one, two and
# three of POLICIES and a thing each (see _plan).
LANDING_EXAMPLES = ["sensor-001", "sensor-002", "sensor-003"]
POLICY_DOCUMENT = (
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect",'
    '"Resource":"*"}]}'
)
# Every demo thing with a certificate has a simulated device in the stand-in
# (standin.devices). Real devices are dropped "within a few minutes" of a deactivation and
# back off for longer; the demo's are dropped and reconnect within seconds, so a move shows
# its devices back online while the person still looks at the transfer page.
DEVICES = {
    "enabled": True,
    "drop_after_seconds": 2.0,
    "backoff_base_seconds": 0.5,
    "backoff_cap_seconds": 4.0,
    "job_answer_seconds": 1.0,
}
# Fleet indexing with connectivity status in the managed demo accounts, so the portal can
# ask whether a device is back (GetThingConnectivityData).
INDEXING = {"thingIndexingMode": "REGISTRY", "thingConnectivityIndexingMode": "STATUS"}


def certificate_pem(name: str, not_before: datetime, not_after: datetime) -> str:
    secret = int.from_bytes(hashlib.sha256(name.encode()).digest(), "big") % (2**255)
    key = ec.derive_private_key(secret + 1, ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(hashlib.sha256(b"serial" + name.encode()).digest()[:8]))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _plan(index: int) -> tuple[str, int, int, bool]:
    """Status, validity start and end (days from today), and whether it has a thing."""
    today_status = ["ACTIVE", "ACTIVE", "ACTIVE", "INACTIVE", "ACTIVE", "REVOKED"][index % 6]
    if index % 9 == 4:
        return today_status, -400, -5, True  # expired
    if index % 9 == 7:
        return today_status, -340, 20, True  # expires within 30 days
    return today_status, -200, 3 * 365, index % 5 != 3


def seed_aws(stdout=None) -> int:
    """Create policies, things and certificates in the managed demo accounts. Returns new.

    This fills the stand-in as an administrator would, with plain boto3 clients: it is not
    the portal's own work, so it does not wait for the portal's rate limits."""
    from django.conf import settings

    from standin.control import client_for_account

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    created = 0
    _standin_control(settings.AWS_ENDPOINT_URL).configure_devices(**DEVICES)
    for account_id, region, count, prefix in FLEETS:
        iot = client_for_account(account_id, region, settings.AWS_ENDPOINT_URL)
        aws.call(iot, "update_indexing_configuration", thingIndexingConfiguration=INDEXING)
        if _count(iot) >= count:
            continue  # seeded before: nothing to add
        for policy in POLICIES:
            try:
                aws.call(iot, "create_policy", policyName=policy, policyDocument=POLICY_DOCUMENT)
            except aws.AwsError as exc:
                if exc.code != "ResourceAlreadyExistsException":
                    raise
        bulk = region == BULK_REGION  # kept simple: ACTIVE, one policy, no thing
        for i in range(count):
            status, start, end, has_thing = ("ACTIVE", -100, 700, False) if bulk else _plan(i)
            name = f"{prefix}-{i + 1:03d}"
            pem = certificate_pem(
                f"{account_id}/{region}/{name}",
                today + timedelta(days=start),
                today + timedelta(days=end),
            )
            try:
                registered = aws.call(
                    iot, "register_certificate_without_ca", certificatePem=pem, status=status
                )
            except aws.AwsError as exc:
                if exc.code == "ResourceAlreadyExistsException":
                    continue  # seeding twice adds nothing
                raise
            arn = registered["certificateArn"]
            created += 1
            if status != "REVOKED":
                for policy in POLICIES[: 1 if bulk else 1 + i % 3]:
                    aws.call(iot, "attach_policy", policyName=policy, target=arn)
            if has_thing:
                aws.call(iot, "create_thing", thingName=name)
                aws.call(iot, "attach_thing_principal", thingName=name, principal=arn)
    return created


def _standin_control(endpoint_url: str | None):
    """The stand-in's controls: over HTTP when it runs as a server, else in this process."""
    from standin import control

    return control.RemoteControl(endpoint_url) if endpoint_url else control


def _count(iot) -> int:
    return sum(1 for _ in aws.pages(iot, "list_certificates", "certificates", pageSize=250))


@transaction.atomic
def seed_portal() -> None:
    """Accounts, groups, users and grants; updates in place, never duplicates."""
    accounts = {}
    for spec in ACCOUNTS:
        fields = dict(spec)
        account_id = fields.pop("account_id")
        accounts[account_id], _ = AwsAccount.objects.update_or_create(
            account_id=account_id, defaults=fields
        )
    groups = {role: Group.objects.get_or_create(name=role)[0] for role in Role.values}
    for demo in USERS:
        user, created = User.objects.get_or_create(
            username=demo.username, defaults={"email": f"{demo.username}@fleet.example"}
        )
        if created:
            user.set_password(PASSWORD)
            user.is_staff = user.is_superuser = demo.username == "admin"
            user.save()
        if demo.group:
            user.groups.add(groups[demo.group])
    grants = [
        (SOURCE, "group", "requester", Role.REQUESTER),
        (SOURCE, "group", "approver", Role.APPROVER),
        (SOURCE, "group", "viewer", Role.VIEWER),
        (TARGET, "group", "viewer", Role.VIEWER),
        (TARGET, "user", "carol", Role.ADMIN),  # approves landings into Acme in advance too
        (SOURCE, "group", "admin", Role.ADMIN),
        (TARGET, "group", "admin", Role.ADMIN),
        (KNOWN, "group", "admin", Role.ADMIN),
        (KNOWN, "group", "requester", Role.VIEWER),
    ]
    for account_id, kind, who, role in grants:
        holder = (
            {"group": groups[who]} if kind == "group" else {"user": User.objects.get(username=who)}
        )
        AccountGrant.objects.get_or_create(account=accounts[account_id], role=role, **holder)
    for username in TOTP_USERS:
        AuthenticatorApp.objects.update_or_create(
            user=User.objects.get(username=username),
            name=DEMO_DEVICE,
            defaults={"key": TOTP_SECRET.hex(), "confirmed": True},
        )


DEMO_DEVICE = "Demo authenticator"


def totp_code(username: str) -> str:
    """The current code of a demo user's device; refuses any device not on the demo secret."""
    device = AuthenticatorApp.objects.filter(
        user__username=username, name=DEMO_DEVICE, confirmed=True
    ).first()
    # The key is encrypted in the database: compared here, not in the query.
    if device is None or device.key != TOTP_SECRET.hex():
        raise LookupError(f"{username} has no demo authenticator (only {', '.join(TOTP_USERS)}).")
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    return f"{totp.token():0{device.digits}d}"
