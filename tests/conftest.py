"""Shared pytest fixtures and the test session's environment.

Before anything imports ``mayolact``, the session points ``$MAYOLACT_CACHE`` at a temporary folder
(removed at the end) and shrinks the built-in shapes sets (see ``common.SESSION_SHAPES``), so no
test writes to the user's cache or generates the full 2000-image set. Tests that need
``../shared/data`` skip when it is absent (fixture ``coco_mini``).
"""
import os
import shutil
import tempfile

import pytest

from common import SESSION_SHAPES, coco_mini_root

_SESSION_CACHE = tempfile.mkdtemp(prefix="mayolact-tests-")
os.environ["MAYOLACT_CACHE"] = _SESSION_CACHE
os.environ.update(SESSION_SHAPES)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


@pytest.fixture
def coco_mini():
    """Path of the coco_mini folder; skips the test when ../shared is absent."""
    root = coco_mini_root()
    if root is None:
        pytest.skip("../shared/data/coco_mini is not present")
    return root
