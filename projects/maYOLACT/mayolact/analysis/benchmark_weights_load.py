"""The weights-load benchmark of ``tools/benchmark_weights_load.py``: what the checks of a weights
file cost (``load_weights_file``) against a bare ``torch.load``, on a checkpoint over 100 MB."""
import os
import tempfile

import torch
from detectron2.modeling import build_model

from mayolact.checkpoint.weights_file import (
    _VERIFIED,
    first_non_finite,
    integrity_problem,
    load_weights_file,
)
from mayolact.config import load_config
from mayolact.utils.profiling import median_time

__all__ = ["run_benchmark"]


def run_benchmark(config_file: str, repeats: int):
    """Time the rows of the tool's table on a checkpoint of ``config_file``'s model; prints the
    table and returns the (name, seconds) rows."""
    cfg = load_config(config_file, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    torch.manual_seed(0)
    state = build_model(cfg).state_dict()
    momentum = {k: torch.randn_like(v) for k, v in state.items() if v.is_floating_point()}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.pth")
        torch.save({"model": state, "optimizer": {"state": momentum}, "iteration": 1}, path)
        size_mb = os.path.getsize(path) / 2**20
        loaded = torch.load(path, map_location="cpu", weights_only=True)  # warms the page cache

        def crc():
            _VERIFIED.clear()
            assert integrity_problem(path) is None

        def full():
            _VERIFIED.clear()
            load_weights_file(path)

        rows = [
            ("torch.load(weights_only=True)",
             median_time(lambda: torch.load(path, map_location="cpu", weights_only=True),
                            repeats)),
            ("CRC-32 of every member", median_time(crc, repeats)),
            ("finiteness of every tensor",
             median_time(lambda: first_non_finite(loaded), repeats)),
            ("load_weights_file (all of it)", median_time(full, repeats)),
        ]
    base = rows[0][1]
    print(f"{os.path.basename(config_file)}: {size_mb:.0f} MB checkpoint "
          f"({len(state)} model tensors + optimizer state), median of {repeats}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"| {'step':<32} | {'seconds':>8} | {'x torch.load':>12} |")
    print(f"|{'-' * 34}|{'-' * 9}:|{'-' * 13}:|")
    for name, seconds in rows:
        print(f"| {name:<32} | {seconds:>8.3f} | {seconds / base:>12.2f} |")
    return rows
