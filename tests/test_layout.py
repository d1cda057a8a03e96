"""The shape of the code that the import contracts in pyproject.toml (make lint) cannot
see: importing any domain module does not load the tasks module (Celery's autodiscovery runs
on import), and every task is sent by transfers/queue.py."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {"transfers/tasks.py"}


def _modules() -> list[Path]:
    return sorted(
        p
        for p in (ROOT / "transfers").rglob("*.py")
        if "migrations" not in p.parts and p.relative_to(ROOT).as_posix() not in ALLOWED
    )


def test_importing_any_domain_module_does_not_load_the_tasks_module():
    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in _modules()
        if p.name != "urls.py"  # urls import views, which is checked through the views
    ]
    script = (
        "import django, importlib, sys; django.setup()\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print('transfers.tasks' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"DJANGO_SETTINGS_MODULE": "portal.settings", "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr


SENDS = {"apply_async", "delay", "delay_on_commit", "send_task"}


def test_only_the_queue_module_sends_tasks():
    """One way to enqueue (transfers/queue.py: by name, after commit): a task sent from
    anywhere else skips the commit, or needs its tasks module imported."""
    senders = []
    packages = ["portal", "transfers", "sso", "profiles", "policies", "standin", "demo"]
    for path in sorted(p for name in packages for p in (ROOT / name).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in SENDS
            ):
                senders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.func.attr}")
    assert [s for s in senders if not s.startswith("transfers/queue.py:")] == []
    assert senders, "the queue module sends with apply_async"


def _root(node: ast.AST) -> str:
    """The name a chain of calls and attributes starts from (``Certificate`` for
    ``Certificate.objects.filter(...).update(...)``), or ""."""
    while isinstance(node, ast.Call | ast.Attribute):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else ""


def test_only_the_models_write_a_certificates_status_and_make_links_in_bulk():
    """Links carry copies of their certificate's status and region (transfers.search), so
    a known certificate's status changes only through Certificate.objects.set_status, which
    writes the links too, and links are made in bulk only by create_for, which copies them
    (manage.py check_link_copies finds a link that disagrees)."""
    writes = []
    packages = ["portal", "transfers", "sso", "profiles", "policies", "standin", "demo"]
    for path in sorted(p for name in packages for p in (ROOT / name).rglob("*.py")):
        if "migrations" in path.parts or path.relative_to(ROOT).as_posix() == "transfers/models.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            root, method = _root(node.func.value), node.func.attr
            sets_status = (
                method == "update" and any(k.arg == "status" for k in node.keywords)
            ) or (
                method == "bulk_update"
                and "status" in ast.unparse(node.args[1] if len(node.args) > 1 else node)
            )
            if (root == "Certificate" and sets_status) or (
                root in ("CertificatePolicy", "CertificateThing") and method == "bulk_create"
            ):
                writes.append(f"{path.relative_to(ROOT)}:{node.lineno} {root}...{method}")
    assert writes == []
