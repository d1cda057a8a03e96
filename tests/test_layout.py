"""The shape of the code at run time: importing any domain module does not load the tasks
module. Which module may import which is checked statically by the import contracts in
pyproject.toml (make lint); this checks what they cannot see, such as Celery's autodiscovery
run on import."""

from __future__ import annotations

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
