# An account without a role ARN is reached with the portal's own credentials, which are in
# one AWS account (aws.client now asks STS which): at most one managed account goes without
# a role.

from django.db import migrations, models


def refuse_several(apps, schema_editor):
    """A database with two or more managed accounts without a role stops here with their
    names, rather than with the database's bare unique-index error."""
    AwsAccount = apps.get_model("transfers", "AwsAccount")
    roleless = list(
        AwsAccount.objects.filter(managed=True, role_arn="").values_list("account_id", flat=True)
    )
    if len(roleless) > 1:
        raise RuntimeError(
            f"Managed accounts {', '.join(roleless)} have no role ARN; at most one may (the "
            "account the portal's own credentials are in). Give the others their role ARN, "
            "or mark them known-only, then migrate again."
        )


class Migration(migrations.Migration):
    dependencies = [
        ("transfers", "0013_secrets_at_rest"),
    ]

    operations = [
        migrations.AlterField(
            model_name="awsaccount",
            name="role_arn",
            field=models.CharField(
                blank=True,
                help_text="Role the portal assumes in this account. Empty: the portal's own "
                "credentials (the default credential chain), only for the account they are in.",
                max_length=2048,
                verbose_name="role ARN",
            ),
        ),
        migrations.RunPython(refuse_several, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="awsaccount",
            constraint=models.UniqueConstraint(
                condition=models.Q(("managed", True), ("role_arn", "")),
                fields=("role_arn",),
                name="account_one_managed_without_role",
                violation_error_message="Only one managed account can go without a role ARN "
                "(the account the portal's own credentials are in): enter the role the portal "
                "assumes in this account.",
            ),
        ),
    ]
