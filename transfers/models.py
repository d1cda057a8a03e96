"""The domain's tables: AWS accounts and who holds which role on them, the certificate
inventory, transfers and their batches, the audit trail (TransferEvent), notices, sync runs,
rate buckets and API tokens.

Behaviour of one object lives on its model; a state is a TextChoices nested in the model and
changes only through its transitions (workflow/events.py records each). Who may see rows is
the querysets' ``visible_to``, used through transfers/access.py."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import models, transaction
from django.db.models import F, OuterRef, Q, Subquery
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django_fsm import ConcurrentTransitionMixin, FSMField, transition
from django_otp.models import Device, ThrottlingMixin, TimestampMixin
from django_otp.plugins.otp_totp.models import TOTPDevice, default_key
from knox.models import AuthToken

from transfers.fields import EncryptedTextField

ACCOUNT_ID_RE = re.compile(r"^[0-9]{12}\Z")
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]\Z")
EXPIRING_SOON = timedelta(days=30)
log = logging.getLogger(__name__)


def validity(not_after, now) -> str:
    """ "expired", "expiring" (within EXPIRING_SOON) or "" (fine, or unknown)."""
    if not_after is None:
        return ""
    if not_after <= now:
        return "expired"
    return "expiring" if not_after <= now + EXPIRING_SOON else ""


def validate_account_id(value: str) -> None:
    if not ACCOUNT_ID_RE.match(value or ""):
        raise ValidationError(
            "An AWS account id is exactly 12 digits, for example 123456789012.",
            code="account_id",
        )


def validate_regions(value: list) -> None:
    if not isinstance(value, list) or not value:
        raise ValidationError("List at least one region, for example us-east-1.")
    bad = [r for r in value if not isinstance(r, str) or not REGION_RE.match(r)]
    if bad:
        raise ValidationError(f"Not an AWS region name: {', '.join(map(str, bad))}.")


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    REQUESTER = "requester", "Requester"
    APPROVER = "approver", "Approver"
    ADMIN = "admin", "Admin"


# What each role may do on an account it is granted.
CAN_REQUEST = {Role.REQUESTER, Role.ADMIN}
CAN_APPROVE = {Role.APPROVER, Role.ADMIN}
CAN_OPERATE = {Role.REQUESTER, Role.ADMIN}  # sync, cancel, accept/reject incoming


class AwsAccountQuerySet(models.QuerySet):
    def visible_to(self, user) -> AwsAccountQuerySet:
        if not user.is_authenticated:
            return self.none()
        if user.is_superuser:
            return self
        return self.filter(Q(grants__user=user) | Q(grants__group__in=user.groups.all())).distinct()


class AwsAccount(models.Model):
    account_id = models.CharField(
        "AWS account id", max_length=12, unique=True, validators=[validate_account_id]
    )
    name = models.CharField(max_length=100)
    managed = models.BooleanField(
        default=True,
        help_text="Managed: the portal lists and acts in this account. "
        "Otherwise it is only a known transfer target.",
    )
    regions = models.JSONField(default=list, blank=True, validators=[validate_regions])
    role_arn = models.CharField(
        "role ARN",
        max_length=2048,
        blank=True,
        help_text="Role the portal assumes in this account. Empty: the portal's own credentials "
        "(the default credential chain), only for the account they are in.",
    )
    external_id = models.CharField("external id", max_length=1224, blank=True)
    api_rate = models.FloatField(
        "API rate (requests per second)",
        null=True,
        blank=True,
        help_text="Every API at this rate, per region. Empty: each API at its own AWS "
        "allowance (the adjustable ones read from Service Quotas when the role may).",
    )
    api_rates = models.JSONField(
        "rates per API",
        default=dict,
        blank=True,
        help_text="Rates for single APIs, over the above: {API: rate, region:API: rate}.",
    )
    contact_emails = models.TextField(
        blank=True, help_text="Who is told about transfers to this account, one per line."
    )
    webhook_url = models.URLField(blank=True)
    webhook_secret = EncryptedTextField(blank=True, help_text="Encrypted in the database.")
    webhook_per_transfer = models.BooleanField(
        "webhook event per transfer",
        default=False,
        help_text="Send the webhook one event per transfer of a batch instead of one per batch.",
    )
    # The URL is Slack's only secret (whoever has it posts to the channel): encrypted, and
    # never copied into a notice's recipient (notices.slack_recipient).
    slack_webhook_url = EncryptedTextField(
        "Slack incoming webhook URL",
        blank=True,
        validators=[URLValidator(schemes=["https"])],
        help_text="Notices are also posted to this Slack channel (an incoming webhook). "
        "Encrypted in the database.",
    )
    expiry_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Pending transfers expire after this. Empty: default."
    )
    last_error = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)

    objects = AwsAccountQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            # Without a role the portal acts with its own credentials, which are in one
            # account (aws.client checks which): at most one managed account can be that.
            models.UniqueConstraint(
                fields=["role_arn"],
                condition=Q(managed=True, role_arn=""),
                name="account_one_managed_without_role",
                violation_error_message="Only one managed account can go without a role ARN "
                "(the account the portal's own credentials are in): enter the role the portal "
                "assumes in this account.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.account_id})"

    def get_absolute_url(self) -> str:
        return reverse("account_detail", args=[self.pk])

    def clean(self) -> None:
        if self.managed and not self.regions:
            raise ValidationError({"regions": "A managed account needs at least one region."})
        if self.role_arn and not re.match(r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$", self.role_arn):
            raise ValidationError({"role_arn": "Expected arn:aws:iam::<12 digits>:role/<name>."})
        # A role in another account would put that account's certificates under this one's
        # grants; aws.client checks it again with the account id STS names.
        role_account = self.role_arn.split(":")[4] if self.role_arn else self.account_id
        if role_account != self.account_id:
            raise ValidationError(
                {
                    "role_arn": f"This role is in account {role_account}, not "
                    f"{self.account_id}: the portal assumes a role in the account itself."
                }
            )
        # The id is fixed once saved: grants, inventory and transfers all hang on it.
        saved = AwsAccount.objects.filter(pk=self.pk) if self.pk else AwsAccount.objects.none()
        if saved.exclude(account_id=self.account_id).exists():
            raise ValidationError(
                {"account_id": "An account's id cannot change once saved: add a new account."}
            )
        if self.external_id and not re.match(r"^[\w+=,.@:/-]{2,1224}$", self.external_id):
            raise ValidationError(
                {"external_id": "2 to 1224 letters, digits or +=,.@:/- (AWS's rule)."}
            )

    @property
    def emails(self) -> list[str]:
        return [e.strip() for e in self.contact_emails.splitlines() if e.strip()]

    @property
    def has_contacts(self) -> bool:
        return bool(self.emails or self.webhook_url)

    def role_for(self, user) -> set[str]:
        """Every role the user holds on this account, directly or through a group."""
        if user.is_superuser:
            return set(Role.values)
        return set(
            self.grants.filter(Q(user=user) | Q(group__in=user.groups.all())).values_list(
                "role", flat=True
            )
        )


class AccountGrant(models.Model):
    """Gives a user or a group a role on one account."""

    account = models.ForeignKey(AwsAccount, models.CASCADE, related_name="grants")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.CASCADE, null=True, blank=True, related_name="grants"
    )
    group = models.ForeignKey(Group, models.CASCADE, null=True, blank=True, related_name="grants")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        constraints = [
            models.CheckConstraint(
                name="grant_user_xor_group",
                condition=Q(user__isnull=False, group__isnull=True)
                | Q(user__isnull=True, group__isnull=False),
            ),
            models.UniqueConstraint(
                fields=["account", "user", "role"], name="grant_unique_user_role"
            ),
            models.UniqueConstraint(
                fields=["account", "group", "role"], name="grant_unique_group_role"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user or self.group} is {self.role} on {self.account}"


class CertificateQuerySet(models.QuerySet):
    def visible_to(self, user) -> CertificateQuerySet:
        return self.filter(account__in=AwsAccount.objects.visible_to(user))

    def set_status(self, status: str) -> int:
        """The one way a known certificate's status changes (tests/test_layout.py): these
        certificates and the copies on their policy and thing links, in one transaction.
        Returns how many certificates it changed.

        The certificate rows are updated first, so their row locks order this against
        ``CertificateLinkQuerySet.create_for`` (which reads them FOR UPDATE): a link made
        meanwhile either exists before the links' update or copies the new status."""
        with transaction.atomic(using=self.db):
            pks = list(self.order_by("pk").values_list("pk", flat=True))
            changed = 0
            for start in range(0, len(pks), 500):
                chunk = pks[start : start + 500]
                changed += (
                    Certificate.objects.using(self.db).filter(pk__in=chunk).update(status=status)
                )
                for model in (CertificatePolicy, CertificateThing):
                    model.objects.using(self.db).filter(certificate__in=chunk).exclude(
                        status=status
                    ).update(status=status)
        return changed


class Certificate(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "ACTIVE"
        INACTIVE = "INACTIVE"
        REVOKED = "REVOKED"
        PENDING_TRANSFER = "PENDING_TRANSFER"
        REGISTER_INACTIVE = "REGISTER_INACTIVE"
        PENDING_ACTIVATION = "PENDING_ACTIVATION"

    account = models.ForeignKey(AwsAccount, models.CASCADE, related_name="certificates")
    region = models.CharField(max_length=32)
    certificate_id = models.CharField(max_length=64)
    arn = models.CharField(max_length=2048)
    status = models.CharField(max_length=24, choices=Status.choices)
    ca_certificate_id = models.CharField(max_length=64, blank=True)
    owned_by = models.CharField(max_length=12, blank=True)
    creation_date = models.DateTimeField(null=True, blank=True)
    last_modified_date = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    not_after = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(default=timezone.now)
    # False from the sync's listing until its DescribeCertificate (validity, CA) is stored:
    # a sync stopped halfway describes only what is still False (transfers.inventory).
    described = models.BooleanField(default=True)

    objects = CertificateQuerySet.as_manager()

    class Meta:
        ordering = ["-creation_date", "certificate_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "region", "certificate_id"], name="certificate_unique_in_region"
            )
        ]
        indexes = [
            # Search by id prefix (the list page's most common query); with the account, a
            # search counts what it matches from the index alone (transfers.search).
            models.Index(fields=["certificate_id", "account"], name="certificate_id_idx"),
            models.Index(fields=["arn"], name="certificate_arn_idx"),
            # The list's sorts (forms.SORTS); the status one also serves the status filter.
            models.Index(fields=["status", "certificate_id"], name="certificate_status_idx"),
            models.Index(fields=["-creation_date", "certificate_id"], name="certificate_order_idx"),
            models.Index(fields=["not_after", "certificate_id"], name="certificate_expiry_idx"),
            # A list page is chosen by primary key from what this narrow index holds, then
            # only its 50 rows are read (views.inventory.certificate_list): a search that
            # matches thousands of certificates sorts index entries, not whole rows.
            models.Index(
                fields=[
                    *("id", "account", "creation_date", "certificate_id", "not_after", "status"),
                    "region",
                ],
                name="certificate_page_idx",
            ),
            # PostgreSQL: LIKE 'prefix%' under a non-C collation needs varchar_pattern_ops
            # indexes; migration 0006 creates them there (SQLite uses the ones above).
        ]

    def __str__(self) -> str:
        return self.certificate_id

    def get_absolute_url(self) -> str:
        return reverse("certificate_detail", args=[self.pk])

    @property
    def short_id(self) -> str:
        return self.certificate_id[:12]

    def validity(self, now=None) -> str:
        return validity(self.not_after, now or timezone.now())

    @property
    def is_expired(self) -> bool:
        return self.validity() == "expired"

    @property
    def expires_soon(self) -> bool:
        return self.validity() == "expiring"


class CertificateLinkQuerySet(models.QuerySet):
    def create_for(self, pairs, batch_size: int = 500) -> list:
        """New links of (certificate pk, name) pairs, with their certificates' account,
        region and status copied: the one way links are made in bulk (tests/test_layout.py).
        The certificates are read FOR UPDATE, so a status changing meanwhile
        (``CertificateQuerySet.set_status``) waits for these links or is seen by them."""
        pairs = list(pairs)
        made = []
        with transaction.atomic(using=self.db):
            for start in range(0, len(pairs), batch_size):
                chunk = pairs[start : start + batch_size]
                copies = {
                    pk: rest
                    for pk, *rest in Certificate.objects.using(self.db)
                    .select_for_update()
                    .filter(pk__in={cert for cert, _ in chunk})
                    .order_by("pk")
                    .values_list("pk", "account_id", "region", "status")
                }
                made += self.bulk_create(
                    [
                        self.model(
                            certificate_id=cert,
                            name=name,
                            account_id=copies[cert][0],
                            region=copies[cert][1],
                            status=copies[cert][2],
                        )
                        for cert, name in chunk
                    ]
                )
        return made

    def disagreeing(self) -> CertificateLinkQuerySet:
        """Links whose copies (account, region, status) differ from their certificate's."""
        return self.exclude(
            account=F("certificate__account"),
            region=F("certificate__region"),
            status=F("certificate__status"),
        )

    def repair(self) -> int:
        """Copy the certificate's account, region and status onto each of these links that
        disagrees (manage.py check_link_copies --fix). Returns how many it changed."""
        cert = Certificate.objects.filter(pk=OuterRef("certificate_id"))
        return self.disagreeing().update(
            **{f: Subquery(cert.values(f)[:1]) for f in ("account", "region", "status")}
        )


class CertificateLink(models.Model):
    """A name attached to a certificate: a policy or a thing.

    ``account``, ``region`` and ``status`` repeat the certificate's: a search by name, with a
    region or status filter or without, then counts and lists the visible certificates it
    matches from this table's indexes alone, without reading a certificate row per match
    (transfers.search). The account and region never change; the status changes only
    through ``CertificateQuerySet.set_status``, which writes both, and links are made by
    ``save`` or ``create_for``, which copy them. ``manage.py check_link_copies`` finds any
    link that disagrees (and ``--fix`` repairs it)."""

    account = models.ForeignKey(AwsAccount, models.CASCADE, related_name="+", db_index=False)
    region = models.CharField(max_length=32)
    status = models.CharField(max_length=24, choices=Certificate.Status.choices)
    name = models.CharField(max_length=128)

    objects = CertificateLinkQuerySet.as_manager()

    class Meta:
        abstract = True
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        cert = self.certificate
        self.account_id, self.region, self.status = cert.account_id, cert.region, cert.status
        super().save(*args, **kwargs)


class CertificatePolicy(CertificateLink):
    certificate = models.ForeignKey(Certificate, models.CASCADE, related_name="policies")

    class Meta(CertificateLink.Meta):
        constraints = [
            models.UniqueConstraint(fields=["certificate", "name"], name="policy_unique_per_cert")
        ]
        indexes = [
            # A name prefix, with a region or not; and a status with a name prefix: each
            # counted and listed from the index alone (PostgreSQL: migration 0023's).
            models.Index(
                fields=["name", "account", "region", "certificate"], name="policy_name_idx"
            ),
            models.Index(
                fields=["status", "name", "account", "region", "certificate"],
                name="policy_status_idx",
            ),
        ]


class CertificateThing(CertificateLink):
    certificate = models.ForeignKey(Certificate, models.CASCADE, related_name="things")

    class Meta(CertificateLink.Meta):
        constraints = [
            models.UniqueConstraint(fields=["certificate", "name"], name="thing_unique_per_cert")
        ]
        indexes = [
            # A name prefix, with a region or not; and a status with a name prefix: each
            # counted and listed from the index alone (PostgreSQL: migration 0023's).
            models.Index(
                fields=["name", "account", "region", "certificate"], name="thing_name_idx"
            ),
            models.Index(
                fields=["status", "name", "account", "region", "certificate"],
                name="thing_status_idx",
            ),
        ]


class SyncRun(models.Model):
    """One inventory sync of one account and region."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    account = models.ForeignKey(AwsAccount, models.CASCADE, related_name="sync_runs")
    region = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    stage = models.CharField(max_length=200, blank=True)
    api_calls = models.PositiveIntegerField(default=0)
    certificates = models.PositiveIntegerField(default=0)
    described = models.PositiveIntegerField(default=0)
    removed = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True
    )
    created = models.DateTimeField(default=timezone.now)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    # The worker running it (a token per attempt) and when it last saved progress: a sync
    # whose heartbeat is older than inventory.STALE is resumed by another worker, from
    # ``checkpoint`` (where each phase got to), never run twice at once.
    owner = models.CharField(max_length=32, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)
    checkpoint = models.JSONField(default=dict, blank=True)
    resumes = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created"]
        constraints = [
            # At most one queued or running sync per account and region.
            models.UniqueConstraint(
                fields=["account", "region"],
                condition=Q(status__in=["queued", "running"]),
                name="sync_one_open_per_region",
            )
        ]

    def __str__(self) -> str:
        return f"sync {self.account.account_id}/{self.region} {self.status}"

    @property
    def is_open(self) -> bool:
        return self.status in {self.Status.QUEUED, self.Status.RUNNING}


MESSAGE_MAX = 128


def validate_transfer_text(value: str) -> None:
    """AWS's transferMessage and rejectReason: at most 128 printable characters."""
    if len(value) > MESSAGE_MAX:
        raise ValidationError(
            f"At most {MESSAGE_MAX} characters (AWS's limit); this has {len(value)}."
        )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValidationError(
            "Control characters (tabs, line breaks and the like) are not allowed."
        )


class TransferQuerySet(models.QuerySet):
    def visible_to(self, user) -> TransferQuerySet:
        """Transfers out of, or into, an account the user can see."""
        visible = AwsAccount.objects.visible_to(user)
        return self.filter(
            Q(source__in=visible) | Q(target_account_id__in=visible.values("account_id"))
        )

    def open(self) -> TransferQuerySet:
        return self.filter(status__in=Transfer.Status.OPEN)


class Transfer(ConcurrentTransitionMixin, models.Model):
    """One certificate moving from a source account and region to a target account."""

    class Status(models.TextChoices):
        REQUESTED = "requested", "Requested"
        APPROVED = "approved", "Approved"
        PREPARING = "preparing", "Preparing"
        PENDING_ACCEPTANCE = "pending_acceptance", "Pending acceptance"
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"
        CANCELLED = "cancelled", "Cancelled"
        DECLINED = "declined", "Declined"
        FAILED = "failed", "Failed"
        EXPIRED = "expired", "Expired"

    Status.OPEN = ["requested", "approved", "preparing", "pending_acceptance"]  # type: ignore[attr-defined]
    Status.IN_FLIGHT = ["approved", "preparing"]  # type: ignore[attr-defined]
    Status.TERMINAL = [  # type: ignore[attr-defined]
        "accepted",
        "rejected",
        "cancelled",
        "declined",
        "failed",
        "expired",
    ]

    class Restore(models.TextChoices):
        NONE = "", "Not needed"
        PENDING = "pending", "Restoring"
        DONE = "done", "Restored"
        PARTIAL = "partial", "Restore incomplete"
        ATTENTION = "attention", "Restore needs attention"

    Restore.OPEN = ["pending", "partial"]  # type: ignore[attr-defined]  # the sweep retries these
    # Not finished: the restore owns the certificate, which cannot be requested again.
    Restore.UNFINISHED = ["pending", "partial", "attention"]  # type: ignore[attr-defined]

    class Landing(models.TextChoices):
        NONE = "", "No landing"
        PLANNED = "planned", "Landing planned"
        LANDING = "landing", "Landing"
        LANDED = "landed", "Landed"
        PARTIAL = "partial", "Landed partially"
        ATTENTION = "attention", "Landing needs attention"

    Landing.OPEN = ["landing", "partial"]  # type: ignore[attr-defined]  # the sweep retries these

    class DeviceCheck(models.TextChoices):
        NONE = "", "Not checked"
        WAITING = "waiting", "Waiting for the device"
        BACK = "back", "Back online"
        NOT_BACK = "not_back", "Not back"
        UNVERIFIABLE = "unverifiable", "Cannot be verified"

    status = FSMField(
        max_length=24, choices=Status.choices, default=Status.REQUESTED, protected=True
    )
    source = models.ForeignKey(AwsAccount, models.PROTECT, related_name="outgoing")
    region = models.CharField(max_length=32)
    # The inventory row, while it exists; the id and ARN below are what AWS knows.
    cert = models.ForeignKey(
        Certificate, models.SET_NULL, null=True, blank=True, related_name="transfers"
    )
    certificate_id = models.CharField(max_length=64)
    certificate_arn = models.CharField(max_length=2048)
    target_account_id = models.CharField(max_length=12, validators=[validate_account_id])
    target = models.ForeignKey(
        AwsAccount, models.PROTECT, null=True, blank=True, related_name="incoming"
    )
    batch = models.ForeignKey(
        "TransferBatch", models.PROTECT, null=True, blank=True, related_name="transfers"
    )

    requester = models.ForeignKey(settings.AUTH_USER_MODEL, models.PROTECT, related_name="+")
    reason = models.TextField(max_length=2000)
    message = models.CharField(
        "transfer message", max_length=MESSAGE_MAX, blank=True, validators=[validate_transfer_text]
    )
    deactivate = models.BooleanField(default=True, help_text="Deactivate it if it is ACTIVE.")
    detach_policies = models.BooleanField(default=True)
    detach_things = models.BooleanField(default=True)
    restore = models.BooleanField(
        default=True, help_text="Put back what was removed if cancelled, rejected or expired."
    )
    plan = models.JSONField(default=dict, blank=True)

    approver = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.PROTECT, null=True, blank=True, related_name="+"
    )
    decision_comment = models.TextField(max_length=2000, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    # Execution progress, saved after each step so a redelivered task resumes.
    deactivated = models.BooleanField(default=False)
    detached_policies = models.JSONField(default=list, blank=True)
    detached_things = models.JSONField(default=list, blank=True)
    # Those of detached_things that were attached exclusively (EXCLUSIVE_THING): the restore
    # and the landing attach them the same way.
    exclusive_things = models.JSONField(default=list, blank=True)
    transferred_arn = models.CharField(max_length=2048, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)
    # Who holds the lease (transfers.leases): written when a worker takes it; renewing,
    # releasing and every progress write match it, so a worker whose lease ran out and was
    # taken by another finds out and stops.
    lease_token = models.CharField(max_length=32, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True, help_text="Sent to a worker.")
    # Set just before the first TransferCertificate call: a transfer to this target that AWS
    # dates after it is this transfer's, even when the call's answer was lost.
    first_transfer_at = models.DateTimeField(null=True, blank=True)
    error_code = models.CharField(max_length=100, blank=True)
    error_message = models.TextField(blank=True)

    # What AWS says about it.
    transfer_date = models.DateTimeField(null=True, blank=True)
    accept_date = models.DateTimeField(null=True, blank=True)
    reject_date = models.DateTimeField(null=True, blank=True)
    reject_reason = models.CharField(max_length=MESSAGE_MAX, blank=True)
    set_as_active = models.BooleanField(default=False)
    restore_state = models.CharField(
        max_length=16, choices=Restore.choices, default=Restore.NONE, blank=True
    )
    # Restore steps done ("attach_policy:Name", "attach_thing_principal:name",
    # "update_certificate:ACTIVE"), tries so far and when the sweep tries again.
    restored = models.JSONField(default=list, blank=True)
    restore_attempts = models.PositiveIntegerField(default=0)
    restore_next_at = models.DateTimeField(null=True, blank=True)
    restore_error = models.TextField(blank=True)

    # Landing in the target (transfers.workflow.landing): the plan, approved in advance by
    # the target side or run when the target accepts in the portal; steps done so far.
    landing = models.JSONField(default=dict, blank=True)
    landing_state = models.CharField(
        max_length=16, choices=Landing.choices, default=Landing.NONE, blank=True
    )
    landed = models.JSONField(default=list, blank=True)
    landing_attempts = models.PositiveIntegerField(default=0)
    landing_next_at = models.DateTimeField(null=True, blank=True)
    landing_error = models.TextField(blank=True)
    target_approver = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.PROTECT, null=True, blank=True, related_name="+"
    )
    target_approved_at = models.DateTimeField(null=True, blank=True)
    # Device downtime: from the moment the certificate stopped being usable in the source
    # (its deactivation, or the request if it was already inactive) to the moment it was
    # usable in the target (ACTIVE with its planned policies attached).
    unusable_since = models.DateTimeField(null=True, blank=True)
    usable_at = models.DateTimeField(null=True, blank=True)

    # The devices (transfers.workflow.devices). Before the move: a job in the source tells
    # the certificate's things the endpoints in ``device_endpoints`` (the target's first); the
    # certificate is deactivated only once the job's execution SUCCEEDED (or an approver
    # released it). After landing: the target's GetThingConnectivityData says when the device
    # was back; device downtime is from its disconnection in the source to that.
    tell_devices = models.BooleanField(
        default=False, help_text="Tell the devices the target's endpoint before the move."
    )
    device_endpoints = models.JSONField(default=dict, blank=True)
    device_things = models.JSONField(default=list, blank=True)
    device_job_id = models.CharField(max_length=64, blank=True)
    device_job_status = models.CharField(max_length=16, blank=True)
    device_hold = models.TextField(blank=True)
    device_released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.PROTECT, null=True, blank=True, related_name="+"
    )
    device_check = models.CharField(
        max_length=16, choices=DeviceCheck.choices, default=DeviceCheck.NONE, blank=True
    )
    device_check_until = models.DateTimeField(null=True, blank=True)
    device_next_check_at = models.DateTimeField(null=True, blank=True)
    device_checks = models.PositiveIntegerField(default=0)
    device_offline_at = models.DateTimeField(null=True, blank=True)
    device_online_at = models.DateTimeField(null=True, blank=True)
    device_reason = models.CharField(max_length=200, blank=True)
    # The batch wave it moves in (1 is the canary); None until its wave starts.
    wave = models.PositiveIntegerField(null=True, blank=True)

    created = models.DateTimeField(default=timezone.now)
    updated = models.DateTimeField(default=timezone.now)
    pending_since = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = TransferQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        constraints = [
            # One certificate never has two open transfers, whatever the race.
            models.UniqueConstraint(
                fields=["source", "region", "certificate_id"],
                condition=Q(
                    status__in=["requested", "approved", "preparing", "pending_acceptance"]
                ),
                name="transfer_one_open_per_certificate",
            ),
        ]
        indexes = [
            # The reconciler's and the queues' scans: transfers in one state, oldest first.
            models.Index(fields=["status", "updated"], name="transfer_status_idx"),
            models.Index(fields=["target_account_id", "status"], name="transfer_target_idx"),
            # A batch's transfers in one state, in order (batches.hand_on after every transfer,
            # the feeder every tick): the batch's own index alone walked past every transfer
            # already handled.
            models.Index(fields=["batch", "status", "id"], name="transfer_batch_status_idx"),
            # reconcile.newer_transfer: a certificate's later transfers (the reconciler asks
            # for each transfer it watches).
            models.Index(fields=["certificate_id"], name="transfer_certificate_idx"),
            # The landing sweep (workflow.landing.due_landings): unfinished landings only.
            models.Index(
                fields=["landing_next_at"],
                condition=Q(landing_state__in=["landing", "partial"]),
                name="transfer_landing_due_idx",
            ),
            # Downtime figures (overview, batch page): landed transfers by when.
            models.Index(
                fields=["usable_at"],
                condition=Q(usable_at__isnull=False),
                name="transfer_usable_idx",
            ),
            # The restore sweep (workflow.restore.due_restores): unfinished restores only.
            models.Index(
                fields=["restore_next_at"],
                condition=Q(restore_state__in=["pending", "partial"]),
                name="transfer_restore_due_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"transfer #{self.pk} of {self.certificate_id[:12]} to {self.target_account_id}"

    def get_absolute_url(self) -> str:
        return reverse("transfer_detail", args=[self.pk])

    @property
    def short_id(self) -> str:
        return self.certificate_id[:12]

    @property
    def is_open(self) -> bool:
        return self.status in Transfer.Status.OPEN

    def refresh_from_db(self, using=None, fields=None, from_queryset=None) -> None:
        """django-fsm's refresh_from_db switches the shared status field's protection off and
        on around the fetch, which races between the threads of one worker (seen in
        bench/migration.py: "Direct status modification is not allowed"). The descriptor only
        refuses to overwrite a value already on the instance, so drop ours first and let
        Django set it afresh, the field staying protected throughout."""
        if fields is None or "status" in fields:
            self.__dict__.pop("status", None)
        models.Model.refresh_from_db(self, using=using, fields=fields, from_queryset=from_queryset)
        self._update_initial_state()

    @property
    def downtime(self) -> timedelta | None:
        if self.unusable_since and self.usable_at:
            return self.usable_at - self.unusable_since
        return None

    @property
    def device_downtime(self) -> timedelta | None:
        """As the device saw it: from its disconnection in the source to its connection in
        the target."""
        if self.device_offline_at and self.device_online_at:
            return max(self.device_online_at - self.device_offline_at, timedelta(0))
        return None

    @property
    def expires_at(self):
        if self.pending_since is None:
            return None
        days = (self.target.expiry_days if self.target else None) or settings.TRANSFER_EXPIRY_DAYS
        return self.pending_since + timedelta(days=days)

    # Guarded transitions. Services call them on a locked row and write the event.
    @transition(status, source=Status.REQUESTED, target=Status.APPROVED)
    def approve(self) -> None:
        self.decided_at = timezone.now()

    @transition(status, source=Status.REQUESTED, target=Status.DECLINED)
    def decline(self) -> None:
        self.decided_at = self.finished_at = timezone.now()

    @transition(status, source=Status.REQUESTED, target=Status.CANCELLED)
    def withdraw(self) -> None:
        self.finished_at = timezone.now()

    @transition(status, source=Status.APPROVED, target=Status.PREPARING)
    def start(self) -> None:
        pass

    # From failed too: the reconciler finds a transfer pending in AWS whose
    # TransferCertificate answer was lost and that the portal had marked failed.
    @transition(status, source=[Status.PREPARING, Status.FAILED], target=Status.PENDING_ACCEPTANCE)
    def mark_pending(self) -> None:
        self.pending_since = timezone.now()
        self.finished_at = None
        self.error_code = self.error_message = ""

    @transition(status, source=[Status.APPROVED, Status.PREPARING], target=Status.FAILED)
    def fail(self) -> None:
        self.finished_at = timezone.now()

    # A batch stopped by an approver (transfers.waves.stop): what had not started stays in
    # the source, untouched.
    @transition(status, source=Status.APPROVED, target=Status.CANCELLED)
    def stop(self) -> None:
        self.finished_at = timezone.now()
        self.queued_at = None

    @transition(status, source=Status.FAILED, target=Status.APPROVED)
    def retry(self) -> None:
        self.finished_at = self.queued_at = None
        self.error_code = self.error_message = ""

    @transition(status, source=Status.PENDING_ACCEPTANCE, target=Status.ACCEPTED)
    def mark_accepted(self) -> None:
        self.finished_at = timezone.now()

    @transition(status, source=Status.PENDING_ACCEPTANCE, target=Status.REJECTED)
    def mark_rejected(self) -> None:
        self.finished_at = timezone.now()

    @transition(status, source=[Status.PENDING_ACCEPTANCE, Status.FAILED], target=Status.CANCELLED)
    def cancel(self) -> None:
        self.finished_at = timezone.now()

    @transition(status, source=Status.PENDING_ACCEPTANCE, target=Status.EXPIRED)
    def expire(self) -> None:
        self.finished_at = timezone.now()

    def needs_restore(self) -> bool:
        return self.restore and bool(
            self.deactivated or self.detached_policies or self.detached_things
        )


class TransferBatchQuerySet(models.QuerySet):
    def visible_to(self, user) -> TransferBatchQuerySet:
        """Batches out of, or into, an account the user can see (as for transfers)."""
        visible = AwsAccount.objects.visible_to(user)
        return self.filter(
            Q(source__in=visible) | Q(target_account_id__in=visible.values("account_id"))
        )


class TransferBatch(models.Model):
    """Many transfers requested and approved as one; each is still its own transfer."""

    source = models.ForeignKey(AwsAccount, models.PROTECT, related_name="batches")
    region = models.CharField(max_length=32, default="")
    target_account_id = models.CharField(max_length=12, validators=[validate_account_id])
    requester = models.ForeignKey(settings.AUTH_USER_MODEL, models.PROTECT, related_name="+")
    reason = models.TextField(max_length=2000)
    message = models.CharField(
        max_length=MESSAGE_MAX, blank=True, validators=[validate_transfer_text]
    )
    approver = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.PROTECT, null=True, blank=True, related_name="+"
    )
    decision_comment = models.TextField(max_length=2000, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    # Items that could not be requested, with why: [{"certificate_id", "reason"}].
    skipped = models.JSONField(default=list, blank=True)
    # One feeder at a time: the feeder task holds this lease while it hands out work.
    feeder_until = models.DateTimeField(null=True, blank=True)
    # Cancel-all runs in the background; the page shows it from here.
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.PROTECT, null=True, blank=True, related_name="+"
    )
    created = models.DateTimeField(default=timezone.now)

    # Waves (batches.feed): a canary of max(wave_canary, wave_canary_percent % of the batch),
    # then waves wave_factor times larger, each started when the one before had at least
    # wave_threshold % of its devices back (or landed, where that cannot be verified); below
    # it the batch pauses for an approver. Without waves the batch is one wave.
    waves = models.BooleanField(default=False)
    wave_canary = models.PositiveIntegerField(default=10)
    wave_canary_percent = models.FloatField(default=1.0)
    wave_factor = models.FloatField(default=2.0)
    wave_threshold = models.FloatField(default=95.0)
    wave = models.PositiveIntegerField(default=0, help_text="The wave started last.")
    paused_at = models.DateTimeField(null=True, blank=True)
    pause_reason = models.TextField(blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    stopped_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.PROTECT, null=True, blank=True, related_name="+"
    )
    # Maintenance windows: waves start only inside one (days 0 = Monday .. 6, a start time
    # and a length, in window_tz). No days: any time.
    window_days = models.JSONField(default=list, blank=True)
    window_start = models.TimeField(null=True, blank=True)
    window_minutes = models.PositiveIntegerField(default=0)
    window_tz = models.CharField(max_length=64, blank=True)
    # The endpoints the devices are told ({"data": [...], "credentials": [...]}), one job
    # per wave in the source.
    tell_devices = models.BooleanField(default=False)
    device_endpoints = models.JSONField(default=dict, blank=True)

    objects = TransferBatchQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"batch #{self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("batch_detail", args=[self.pk])


class QuotaRead(models.Model):
    """What Service Quotas said of an account's adjustable AWS IoT allowances in one region,
    shared by every process (aws.client reads it again when it is an hour old)."""

    account = models.ForeignKey(AwsAccount, models.CASCADE, related_name="quota_reads")
    region = models.CharField(max_length=32)
    rates = models.JSONField(default=dict, help_text="API -> requests per second.")
    error = models.TextField(
        blank=True, help_text="Why they could not be read (the last values, else AWS's defaults)."
    )
    read_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "region"], name="quota_read_account_region")
        ]

    def __str__(self) -> str:
        return f"{self.account_id} {self.region}: {self.rates or self.error}"


class RateBucket(models.Model):
    """A token bucket shared by every worker: one AWS API in one account and region.

    Additive increase, multiplicative decrease: a throttling answer halves the rate, each
    call that goes through wins a little of it back, up to the API's allowance there.
    """

    key = models.CharField(max_length=200, unique=True)
    rate = models.FloatField(help_text="Current requests per second.")
    tokens = models.FloatField()
    updated = models.FloatField(help_text="Unix time of the last refill.")
    throttled = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.key} at {self.rate:.2f}/s"


class TransferEvent(models.Model):
    """Append-only audit row: every state change and every AWS call of a transfer."""

    class Kind(models.TextChoices):
        TRANSITION = "transition"
        AWS = "aws", "AWS call"
        NOTE = "note"

    transfer = models.ForeignKey(Transfer, models.CASCADE, related_name="events")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    action = models.CharField(max_length=64)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor_name = models.CharField(max_length=150, help_text="User name, or worker / reconciler.")
    from_status = models.CharField(max_length=24, blank=True)
    to_status = models.CharField(max_length=24, blank=True)
    ok = models.BooleanField(default=True)
    details = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created", "pk"]
        indexes = [models.Index(fields=["transfer", "created"], name="event_transfer_idx")]

    def __str__(self) -> str:
        return f"{self.created:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action}"


class Notice(models.Model):
    """One message about a transfer to one recipient: what AWS never sends."""

    class Channel(models.TextChoices):
        EMAIL = "email"
        WEBHOOK = "webhook"
        SLACK = "slack"

    class Kind(models.TextChoices):
        NEW = "new", "New transfer waiting"
        REMINDER = "reminder", "Reminder"
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"
        CANCELLED = "cancelled", "Cancelled"
        EXPIRED = "expired", "Expired"
        FAILED = "failed", "Failed"
        # A batch's own notice: paused below its wave threshold (transfers.waves).
        PAUSED = "paused", "Batch paused"

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        SENT = "sent"
        FAILED = "failed"
        # A transfer of a batch: held until the batch's notice carries it (then "batched").
        HELD = "held"
        BATCHED = "batched"

    # A transfer's notice has a transfer (and its batch, if any); a batch's notice has only
    # the batch, and carries the transfers' held notices (``items``).
    transfer = models.ForeignKey(
        Transfer, models.CASCADE, null=True, blank=True, related_name="notices"
    )
    batch = models.ForeignKey(
        TransferBatch, models.CASCADE, null=True, blank=True, related_name="notices"
    )
    digest = models.ForeignKey(
        "self",
        models.SET_NULL,
        null=True,
        blank=True,
        related_name="items",
        help_text="The batch notice that carried this transfer's notice.",
    )
    channel = models.CharField(max_length=8, choices=Channel.choices)
    recipient = models.CharField(
        max_length=2048,
        help_text="Email address, webhook URL, or whose Slack channel (its URL stays on the "
        "account, encrypted).",
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)
    picked_up = models.DateTimeField(
        null=True, blank=True, help_text="When a worker last took it to send."
    )
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created", "pk"]
        constraints = [
            # A transition or a beat run that happens twice still notifies once.
            models.UniqueConstraint(
                fields=["transfer", "channel", "recipient", "kind"], name="notice_once"
            ),
            models.CheckConstraint(
                name="notice_transfer_or_batch",
                condition=Q(transfer__isnull=False) | Q(batch__isnull=False),
            ),
        ]
        indexes = [
            # notices.flush_batches: a batch's held notices, per kind.
            models.Index(
                fields=["batch", "kind", "created"],
                name="notice_held_idx",
                condition=Q(status="held"),
            ),
            # The retry sweep: notices not yet sent, oldest first.
            models.Index(
                fields=["status", "created"],
                name="notice_unsent_idx",
                condition=Q(status__in=["pending", "sending"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.channel} to {self.recipient}"


class SweepFailure(models.Model):
    """Something a periodic sweep could not handle (a transfer, a batch, an account's
    listing, or the whole sweep): logged, counted in /metrics/ and shown to staff on
    /health/, while the sweep goes on with the others. One row per sweep and subject;
    ``count`` adds up its failures, so the metric only grows."""

    class Sweep(models.TextChoices):
        RECONCILE = "reconcile", "Reconciler"
        REQUEUE = "requeue", "Re-sending stalled work"
        RESTORES = "restores", "Restore sweep"
        LANDINGS = "landings", "Landing sweep"
        DEVICES = "devices", "Device checks"

    sweep = models.CharField(max_length=16, choices=Sweep.choices)
    subject = models.CharField(max_length=64, help_text='"transfer 12", "batch 3", ...')
    error = models.TextField()
    count = models.PositiveIntegerField(default=1)
    first_at = models.DateTimeField(default=timezone.now)
    last_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["sweep", "subject"], name="sweep_failure_once")
        ]
        # /health/: the failures of the last hour.
        indexes = [models.Index(fields=["last_at"], name="sweep_failure_recent_idx")]

    def __str__(self) -> str:
        return f"{self.sweep}: {self.subject} failed {self.count} times"

    @classmethod
    def note(cls, sweep: str, subject: str, exc: BaseException) -> None:
        """Log and count one failure. Never raises: it runs in a sweep's error path, where
        the database itself may be what failed."""
        log.error("%s sweep: %s failed", sweep, subject, exc_info=exc)
        error, now = f"{type(exc).__name__}: {exc}"[:2000], timezone.now()
        try:
            rows = cls.objects.filter(sweep=sweep, subject=subject)
            if not rows.update(count=models.F("count") + 1, error=error, last_at=now):
                cls.objects.get_or_create(
                    sweep=sweep, subject=subject, defaults={"error": error, "last_at": now}
                )
        except Exception:  # counted or not, the sweep goes on
            log.exception("%s sweep: could not record the failure of %s", sweep, subject)


class ApiToken(AuthToken):
    """An API token (django-rest-knox): the database keeps a SHA-512 digest of the secret and
    its first characters to look it up, never the secret (transfers.api.tokens)."""

    class Meta:
        proxy = True
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"API token of {self.user} ({self.prefix}…)"

    @property
    def prefix(self) -> str:
        # Enough to tell a user's tokens apart, far too little to guess the rest.
        return self.token_key[:8]


# The second factor (sso/views.py). django-otp's own devices keep the TOTP
# seed and the backup codes in clear, and it has no way to encrypt them (its issue #67): these
# are django-otp devices whose secrets are EncryptedTextFields, like the webhook secrets (same
# keys, same rotate_encryption_keys).


class AuthenticatorApp(TimestampMixin, ThrottlingMixin, Device):
    """A TOTP authenticator app (RFC 6238): django-otp's TOTPDevice, its seed encrypted."""

    key = EncryptedTextField(
        default=default_key, help_text="The TOTP seed in hex, encrypted in the database."
    )
    step = models.PositiveSmallIntegerField(default=30)
    t0 = models.BigIntegerField(default=0)
    digits = models.PositiveSmallIntegerField(choices=[(6, 6), (8, 8)], default=6)
    tolerance = models.PositiveSmallIntegerField(default=1)
    drift = models.SmallIntegerField(default=0)
    last_t = models.BigIntegerField(
        default=-1, help_text="The time step of the last code taken: no code is taken twice."
    )

    # django-otp's own TOTP code (verification with replay and drift, throttling, the
    # otpauth:// URL): it reads only the fields above, the key decrypted.
    bin_key = TOTPDevice.bin_key
    verify_token = TOTPDevice.verify_token
    get_throttle_factor = TOTPDevice.get_throttle_factor
    config_url = TOTPDevice.config_url
    _read_str_from_settings = TOTPDevice._read_str_from_settings

    class Meta(Device.Meta):
        verbose_name = "authenticator app"


class BackupCodes(TimestampMixin, ThrottlingMixin, Device):
    """A person's one-time backup codes (django-otp's StaticDevice), encrypted: each code
    works once and is then struck from the list."""

    codes = EncryptedTextField(
        blank=True, help_text="The unused codes, space-separated, encrypted in the database."
    )

    class Meta(Device.Meta):
        verbose_name = "backup codes"
        verbose_name_plural = "backup codes"

    def get_throttle_factor(self) -> int:
        return getattr(settings, "OTP_STATIC_THROTTLE_FACTOR", 1)

    def verify_token(self, token) -> bool:
        """Take ``token`` if it is one of the unused codes (call on a row locked for update)."""
        allowed, _ = self.verify_is_allowed()
        if not allowed:
            return False
        unused = self.codes.split()
        match = next((c for c in unused if constant_time_compare(c, str(token))), None)
        if match is None:
            self.throttle_increment()
            return False
        unused.remove(match)
        self.codes = " ".join(unused)
        self.throttle_reset(commit=False)
        self.set_last_used_timestamp(commit=False)
        self.save()
        return True
