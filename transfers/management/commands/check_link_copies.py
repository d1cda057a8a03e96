"""Find policy and thing links whose copies of their certificate's account, region and
status disagree with the certificate (transfers.models.CertificateLink), and repair them.

    python manage.py check_link_copies          # exit status 1 when any disagree
    python manage.py check_link_copies --fix    # copy the certificate's values onto them

The search reads region and status filters from the links (transfers.search): a link that
disagrees makes a filtered search miss its certificate, or list one that does not match.
Every write goes through Certificate.objects.set_status and CertificateLink's save and
create_for, so this should find none; it reads every link (a join per link table)."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from transfers.models import CertificatePolicy, CertificateThing

EXAMPLES = 5


class Command(BaseCommand):
    help = (
        "Find policy and thing links whose account, region or status disagrees with their "
        "certificate's (exit status 1 if any); --fix copies the certificate's onto them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--fix", action="store_true", help="repair the links that disagree")

    def handle(self, *args, fix: bool, **options) -> None:
        total = 0
        for model, kind in ((CertificatePolicy, "policy"), (CertificateThing, "thing")):
            wrong = model.objects.disagreeing()
            count = wrong.count()
            total += count
            self.stdout.write(f"{kind} links that disagree with their certificate: {count:,}")
            examples = wrong.select_related("account", "certificate__account").order_by("pk")
            for link in examples[:EXAMPLES]:
                cert = link.certificate
                ours = (cert.account.account_id, cert.region, cert.status)
                says = (link.account.account_id, link.region or "-", link.status or "-")
                self.stdout.write(
                    f"  {kind} {link.name!r} of certificate {cert.certificate_id}: "
                    f"the link says {' '.join(says)}, the certificate {' '.join(ours)}"
                )
            if fix and count:
                fixed = model.objects.all().repair()
                self.stdout.write(f"  repaired {fixed:,}")
        if total and not fix:
            raise CommandError(
                f"{total:,} links disagree with their certificates "
                "(manage.py check_link_copies --fix repairs them)."
            )
        if not total:
            self.stdout.write("Every link agrees with its certificate.")
