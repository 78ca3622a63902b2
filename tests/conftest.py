"""Test-run reporting only (no fixtures): a failed real run shows its log in the report.

A real DeepSpeed run that fails raises RunError naming its log; on a fresh CI machine that log is gone when the run
ends, so the report carries its last lines (the cause a one-line reason may miss: a crash in a C++ extension, a
signal, a rendezvous that never formed).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

_LOG = re.compile(r"log: (\S+)")
TAIL_LINES = 80


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or call.excinfo is None or call.excinfo.typename != "RunError":
        return
    for path in _LOG.findall(str(call.excinfo.value)):
        log = Path(path.rstrip(";,)"))
        if log.is_file():
            tail = log.read_text(errors="replace").splitlines()[-TAIL_LINES:]
            report.sections.append((f"last {len(tail)} lines of {log}", "\n".join(tail)))
