"""The annotation-check benchmark of ``tools/benchmark_validation.py``: what the up-front check
of a COCO json costs (``mayolact.data.validation.validate_coco_json``), on coco_mini and on a
synthetic json of COCO train2017's size."""
import copy
import json
import os
import tempfile
import time

from mayolact.data import validation
from mayolact.data.datasets import COCO_MINI_HINT, coco_mini_root

__all__ = ["run_benchmark"]

COCO_TRAIN = (118_287, 860_001)  # images, annotations of instances_train2017.json


def synthetic_coco(src: str, dst: str, scale: float) -> tuple:
    """Repeat ``src``'s images and annotations with fresh ids up to COCO train's counts x scale."""
    with open(src) as f:
        base = json.load(f)
    want_images = int(COCO_TRAIN[0] * scale)
    images, annotations = [], []
    by_image = {}
    for a in base["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    copy_id = 0
    while len(images) < want_images:
        for img in base["images"]:
            if len(images) >= want_images:
                break
            new_id = copy_id * 10**7 + img["id"]
            images.append(dict(img, id=new_id))
            for a in by_image.get(img["id"], []):
                if len(annotations) < int(COCO_TRAIN[1] * scale):
                    annotations.append(dict(copy.deepcopy(a), id=len(annotations) + 1,
                                            image_id=new_id))
        copy_id += 1
    with open(dst, "w") as f:
        json.dump({"images": images, "annotations": annotations,
                   "categories": base["categories"]}, f)
    return len(images), len(annotations), os.path.getsize(dst)


def time_one(json_file: str, image_root) -> dict:
    start = time.perf_counter()
    with open(json_file) as f:
        json.load(f)
    t_parse = time.perf_counter() - start
    validation._memo.clear()
    start = time.perf_counter()
    first = validation.validate_coco_json(json_file, check_files=False)
    t_first = time.perf_counter() - start
    validation._memo.clear()
    start = time.perf_counter()
    validation.validate_coco_json(json_file, check_files=False)
    t_cached = time.perf_counter() - start
    start = time.perf_counter()
    validation.validate_coco_json(json_file, check_files=False)
    t_memo = time.perf_counter() - start
    t_files = None
    if image_root:
        start = time.perf_counter()
        validation.validate_coco_json(json_file, image_root=image_root)
        t_files = time.perf_counter() - start - t_memo
    return {"problems": len(first), "parse": t_parse, "first": t_first, "cached": t_cached,
            "memo": t_memo, "files": t_files}


def run_benchmark(scale: float = 1.0):
    """Time the checks of coco_mini's jsons and of a synthetic json ``scale`` x COCO train's size;
    prints the table."""
    root = coco_mini_root()
    if root is None:
        raise FileNotFoundError(f"coco_mini not found: {COCO_MINI_HINT}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MAYOLACT_CACHE"] = tmp  # a cold cache
        for split in ("train", "val"):
            path = str(root / "annotations" / f"instances_{split}2017.json")
            with open(path) as f:
                data = json.load(f)
            rows.append((f"coco_mini {split}", len(data["images"]), len(data["annotations"]),
                         os.path.getsize(path), time_one(path, str(root / f"{split}2017"))))
        path = os.path.join(tmp, "synthetic.json")
        n_img, n_ann, size = synthetic_coco(
            str(root / "annotations" / "instances_train2017.json"), path, scale)
        rows.append((f"synthetic (COCO train x {scale:g})", n_img, n_ann, size,
                     time_one(path, None)))
    print("| json | images | annotations | MB | problems | json.load alone (s) | first check "
          "(s) | later process: hash + cached verdict (s) | same process (s) | image files (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, n_img, n_ann, size, t in rows:
        files = f"{t['files']:.3f}" if t["files"] is not None else "-"
        print(f"| {name} | {n_img:,} | {n_ann:,} | {size / 1e6:.1f} | {t['problems']} | "
              f"{t['parse']:.2f} | {t['first']:.2f} | {t['cached']:.3f} | {t['memo']:.5f} | "
              f"{files} |")
