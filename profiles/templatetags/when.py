"""``{{ value|when }}``: a time in the current (the user's) zone, with the zone named."""

from __future__ import annotations

from django import template
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.html import format_html

register = template.Library()


@register.filter
def when(value, fmt: str = "Y-m-d H:i") -> str:
    """A <time> element: the local time and its zone; the UTC instant in ``datetime``."""
    if not value:
        return "—"
    local = timezone.localtime(value)
    return format_html(
        '<time datetime="{}">{} <small class="tz">{}</small></time>',
        value.isoformat(),
        date_format(local, fmt),
        # Abbreviations are ambiguous (CST) or missing (+03) for many zones: name the zone.
        timezone.get_current_timezone_name(),
    )


@register.filter
def when_text(value, fmt: str = "Y-m-d H:i") -> str:
    """Plain text for emails: "2026-11-30 10:15 Europe/Paris"."""
    if not value:
        return "-"
    local = timezone.localtime(value)
    return f"{date_format(local, fmt)} {timezone.get_current_timezone_name()}"
