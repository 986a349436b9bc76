"""Installs the ``mayolact`` package from ``projects/maYOLACT`` (src layout, editable-friendly)."""
from setuptools import find_packages, setup

setup(
    name="mayolact",
    version="0.1.0",
    description="Mask-aware IoU (maIoU) anchor assignment, YOLACT and maYOLACT for Detectron2",
    package_dir={"": "projects/maYOLACT"},
    packages=find_packages("projects/maYOLACT"),
    python_requires=">=3.9",
    # detectron2 is not on PyPI: scripts/install.sh installs it (see docs/GETTING_STARTED.md).
    install_requires=["torch", "torchvision", "fvcore", "pycocotools", "opencv-python-headless"],
    extras_require={"fast-eval": ["faster-coco-eval"], "export": ["onnx", "onnxruntime"],
                    "test": ["pytest", "pytest-xdist"]},
)
