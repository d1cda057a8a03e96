"""The audit log: every event of every transfer the user can see, filtered, paged, and a
CSV export that streams (flat memory for any size; bench/audit_export.py measures it).
Both show the events as access.events_seen_by shows them: someone who sees a transfer
only through its target gets its state changes without who or why, and their own side's
events; filters match what is shown, so they find nothing else either."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from datetime import datetime

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from transfers.models import ACCOUNT_ID_RE, TransferEvent
from transfers.search import audit_events

PAGE_SIZE = 50
CERT_PREFIX_RE = re.compile(r"^[0-9a-fA-F]{1,64}\Z")
CHUNK = 2000  # rows a database round trip
FLUSH = 64 * 1024  # characters a piece of the streamed CSV

COLUMNS = [
    ("id", "pk"),
    ("time", "created"),
    ("transfer", "transfer_id"),
    ("batch", "transfer__batch_id"),
    ("source_account", "transfer__source__account_id"),
    ("region", "transfer__region"),
    ("target_account", "transfer__target_account_id"),
    ("certificate_id", "transfer__certificate_id"),
    ("kind", "kind"),
    ("action", "shown_action"),
    ("actor", "shown_actor"),
    ("from_status", "from_status"),
    ("to_status", "to_status"),
    ("ok", "ok"),
    ("details", "shown_details"),
]


class AuditFilterForm(forms.Form):
    account = forms.RegexField(ACCOUNT_ID_RE, required=False, max_length=12)
    certificate = forms.RegexField(
        CERT_PREFIX_RE,
        required=False,
        max_length=64,
        error_messages={"invalid": "A certificate id (or its start) is hexadecimal: 0-9, a-f."},
    )
    transfer = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    batch = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    user = forms.CharField(required=False, max_length=150)
    action = forms.CharField(required=False, max_length=64)
    kind = forms.ChoiceField(
        required=False, choices=[("", "Any kind"), *TransferEvent.Kind.choices]
    )
    since = forms.DateField(required=False)
    until = forms.DateField(required=False)


def _filtered(request: HttpRequest) -> tuple[AuditFilterForm, QuerySet[TransferEvent]]:
    form = AuditFilterForm(request.GET)
    form.is_valid()  # a filter that is not understood is ignored and reported
    return form, audit_events(request.user, form.cleaned_data)


@login_required
@require_GET
def audit_log(request: HttpRequest) -> HttpResponse:
    form, qs = _filtered(request)
    # Append-only rows: id order is time order, and the primary key index serves it.
    qs = qs.select_related("transfer__source").order_by("-pk")
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    page.object_list = list(page.object_list)
    for e in page.object_list:
        e.details_text = json.dumps(e.shown_details, sort_keys=True) if e.shown_details else ""
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "form": form,
        "page": page,
        "query": query.urlencode(),
        "kinds": TransferEvent.Kind.choices,
    }
    if request.htmx and not request.htmx.boosted:
        return render(request, "transfers/audit_log.html#rows", context)
    return render(request, "transfers/audit_log.html", context)


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> object:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value  # a spreadsheet must not run a user-supplied name as a formula
    return value


def csv_pieces(rows: Iterable[tuple]) -> Iterator[str]:
    """The CSV in pieces of about FLUSH characters: few writes, bounded memory."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([name for name, _ in COLUMNS])
    for row in rows:
        writer.writerow([_cell(v) for v in row])
        if buffer.tell() >= FLUSH:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@login_required
@require_GET
def audit_export(request: HttpRequest) -> StreamingHttpResponse:
    _, qs = _filtered(request)
    rows = (
        qs.order_by("pk").values_list(*(field for _, field in COLUMNS)).iterator(chunk_size=CHUNK)
    )
    response = StreamingHttpResponse(csv_pieces(rows), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
    response["X-Accel-Buffering"] = "no"  # nginx: pass it on as it comes
    return response
