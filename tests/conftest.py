"""Shared pytest fixtures: paths to ../shared data (tests that need it skip when it is absent)."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def coco_mini_root():
    """``$MAYOLACT_COCO_MINI`` or ``../shared/data/coco_mini`` beside the repository, or None."""
    env = os.environ.get("MAYOLACT_COCO_MINI")
    root = Path(env) if env else REPO.parent / "shared" / "data" / "coco_mini"
    return root if (root / "annotations" / "instances_val2017.json").is_file() else None


@pytest.fixture
def coco_mini():
    """Path of the coco_mini folder; skips the test when ../shared is absent."""
    root = coco_mini_root()
    if root is None:
        pytest.skip("../shared/data/coco_mini is not present")
    return root
