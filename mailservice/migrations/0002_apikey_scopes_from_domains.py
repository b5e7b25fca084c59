"""API keys get scopes and optional sender domains (docs/api.md, "Authentication").

Keys that exist keep doing all they did: they get every scope (`send,read,manage`). Keys created
from now on get `send,read` unless their creator asks for more."""
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("mailservice", "0001_initial"),
    ]

    operations = [
        # The default fills the rows that exist; the next operation sets the one new keys get.
        migrations.AddField(
            model_name="apikey",
            name="scopes",
            field=models.CharField(default="send,read,manage", max_length=100),
        ),
        migrations.AlterField(
            model_name="apikey",
            name="scopes",
            field=models.CharField(default="send,read", max_length=100),
        ),
        migrations.AddField(
            model_name="apikey",
            name="from_domains",
            field=models.TextField(blank=True, default=""),
        ),
    ]
