"""Strict JSON for the numbers a run writes: NaN and infinities become ``null``.

Python's ``json`` writes a non-finite float as the bare words ``NaN`` / ``Infinity``, which are not
JSON (RFC 8259): ``jq``, JavaScript's ``JSON.parse`` and most other readers reject the whole file.
A run meets them in ordinary cases: COCO AP is NaN for a test set without a detection or a class
without ground truth, and a diverging loss is logged before the run stops.
"""
import json
import math
import os
from collections import defaultdict

from detectron2.utils.events import JSONWriter, get_event_storage

__all__ = ["finite_or_none", "StrictJSONWriter"]


def finite_or_none(obj):
    """``obj`` with every non-finite float (NaN, +-inf) replaced by None, in nested dicts, lists
    and tuples (tuples become lists, as ``json`` writes them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


class StrictJSONWriter(JSONWriter):
    """Detectron2's ``JSONWriter`` (``metrics.json``: one json object per line, scalars not written
    before) whose lines are strict JSON: a non-finite scalar is written as ``null``.

    Args:
        json_file (str): path to the json file; new lines are appended if it exists.
        window_size (int): the window of the median smoothing of scalars with a smoothing hint.
    """

    def write(self):
        storage = get_event_storage()
        to_save = defaultdict(dict)
        for k, (v, it) in storage.latest_with_smoothing_hint(self._window_size).items():
            if it <= self._last_write:  # written before
                continue
            to_save[it][k] = v
        if to_save:
            self._last_write = max(to_save)
        for it, scalars in sorted(to_save.items()):
            scalars["iteration"] = it
            line = json.dumps(finite_or_none(scalars), sort_keys=True, allow_nan=False)
            self._file_handle.write(line + "\n")
        self._file_handle.flush()
        try:
            os.fsync(self._file_handle.fileno())
        except AttributeError:  # a PathManager handle without a file descriptor
            pass
