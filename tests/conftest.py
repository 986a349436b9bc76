"""Shared pytest fixtures and the test session's environment.

Before anything imports ``mayolact``, the session points ``$MAYOLACT_CACHE`` at a temporary folder
(removed at the end) and shrinks the built-in shapes sets (see ``common.SESSION_SHAPES``), so no
test writes to the user's cache or generates the full 2000-image set. Each pytest-xdist worker is
a session of its own (its own cache). Tests that need coco_mini take the ``coco_mini`` fixture and
skip when it is absent.
"""
import collections
import os
import shutil
import tempfile

import pytest

from common import SESSION_SHAPES

_SESSION_CACHE = tempfile.mkdtemp(prefix="mayolact-tests-")
os.environ["MAYOLACT_CACHE"] = _SESSION_CACHE
os.environ.update(SESSION_SHAPES)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def coco_mini():
    """Path of the coco_mini folder (``mayolact.data.datasets.coco_mini_root``, whose splits are
    registered by ``import mayolact``); skips the test when coco_mini is absent."""
    from detectron2.data import DatasetCatalog

    from mayolact.data.datasets import COCO_MINI_SPLITS, coco_mini_root

    if not set(COCO_MINI_SPLITS) <= set(DatasetCatalog.list()):
        pytest.skip("coco_mini is not present (tools/make_coco_mini.py builds it)")
    return coco_mini_root()


@pytest.fixture
def count_checks(monkeypatch):
    """How often each up-front check of mayolact.engine.checks runs."""
    from mayolact.engine import checks, trainer

    counts = collections.Counter()
    for name in ("check_datasets_registered", "check_output_dir", "check_num_classes"):
        original = getattr(checks, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        for module in (checks, trainer):  # where the name is bound
            if hasattr(module, name):
                monkeypatch.setattr(module, name, counted)
    return counts
