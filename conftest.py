"""Which test groups ``make test-fast`` leaves out: the ``slow`` ones, listed here in one place.

A group is slow when its tests start processes or external tools — ``model-engine`` commands, Celery workers,
helm and kubernetes-validate, the peer clients' interpreter, a server that imports torch — rather than running
in-process. ``make test`` (and CI) runs everything; ``make test-fast`` runs ``-m "not model and not slow"``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
SLOW = (
    "clients/python/tests/test_sdk_api_compat.py",
    "clients/python/tests/test_sdk_async_tasks.py",
    "clients/python/tests/test_sdk_auth.py",
    "clients/python/tests/test_sdk_gateway.py",
    "clients/python/tests/test_sdk_peer_client.py",
    "clients/python/tests/test_sdk_serve.py",
    "tests/chart/",
    "tests/inference_server/test_model_loading.py",
    "tests/kubernetes/test_manifests.py",
    "tests/orchestration/",
    "tests/tasks/",
    "tests/test_cli.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        where = item.path.resolve().relative_to(ROOT).as_posix() if item.path.is_relative_to(ROOT) else ""
        if where.startswith(SLOW):
            item.add_marker(pytest.mark.slow)
