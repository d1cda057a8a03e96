# A notice being sent is judged stale by when a worker took it (notices.resend_stale), not by
# when it was made. Notices already being sent count as taken when they were made, as before.

from django.db import migrations, models


def sending_since_created(apps, schema_editor):
    Notice = apps.get_model("transfers", "Notice")
    Notice.objects.filter(status="sending").update(picked_up=models.F("created"))


class Migration(migrations.Migration):
    dependencies = [
        ("transfers", "0016_sweep_failure"),
    ]

    operations = [
        migrations.AddField(
            model_name="notice",
            name="picked_up",
            field=models.DateTimeField(
                blank=True, help_text="When a worker last took it to send.", null=True
            ),
        ),
        migrations.RunPython(sending_since_created, migrations.RunPython.noop),
    ]
