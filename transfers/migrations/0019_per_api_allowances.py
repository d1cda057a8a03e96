# Each AWS API at its own allowance (issue 25 point 3). An account at the old default rate,
# 10 for every API, gets AWS's default for each API instead (10, 15 or 100 a second); a rate
# someone chose stays, for every API.

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


OLD_DEFAULT = 10.0


def old_default_to_aws_defaults(apps, schema_editor):
    AwsAccount = apps.get_model("transfers", "AwsAccount")
    AwsAccount.objects.filter(api_rate=OLD_DEFAULT).update(api_rate=None)


def aws_defaults_to_old_default(apps, schema_editor):
    AwsAccount = apps.get_model("transfers", "AwsAccount")
    AwsAccount.objects.filter(api_rate__isnull=True).update(api_rate=OLD_DEFAULT)


class Migration(migrations.Migration):

    dependencies = [
        ('transfers', '0018_second_factor_encrypted'),
    ]

    operations = [
        migrations.AddField(
            model_name='awsaccount',
            name='api_rates',
            field=models.JSONField(blank=True, default=dict, help_text='Rates for single APIs, over the above: {API: rate, region:API: rate}.', verbose_name='rates per API'),
        ),
        migrations.AlterField(
            model_name='awsaccount',
            name='api_rate',
            field=models.FloatField(blank=True, help_text='Every API at this rate, per region. Empty: each API at its own AWS allowance (the adjustable ones read from Service Quotas when the role may).', null=True, verbose_name='API rate (requests per second)'),
        ),
        migrations.CreateModel(
            name='QuotaRead',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('region', models.CharField(max_length=32)),
                ('rates', models.JSONField(default=dict, help_text='API -> requests per second.')),
                ('error', models.TextField(blank=True, help_text="Why they could not be read (the last values, else AWS's defaults).")),
                ('read_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('account', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='quota_reads', to='transfers.awsaccount')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('account', 'region'), name='quota_read_account_region')],
            },
        ),
        migrations.RunPython(old_default_to_aws_defaults, aws_defaults_to_old_default),
    ]
