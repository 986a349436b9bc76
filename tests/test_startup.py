"""A quiet, fast start: ``import mayolact`` registers everything, the tools answer ``--help``
before importing it, known third-party warnings are filtered narrowly."""
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from mayolact.utils.logger import KNOWN_WARNINGS, filter_known_warnings

from common import load_tool

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "configs" / "quick_schedules" / "yolact_R_50_FPN_quick_atss_maiou.yaml"


def run_python(code, timeout=300):
    """Run ``code`` in a fresh interpreter (plain warning filters: no PYTHONWARNINGS, no pytest)."""
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONWARNINGS"}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_import_registers_everything_quietly():
    """``import mayolact`` registers the meta-architecture, the backbones, the datasets and the
    matchers by plain imports, and the deprecation warnings Detectron2's import (torch.jit.script)
    and its DefaultAnchorGenerator (torch.meshgrid without indexing) trigger with this torch do not
    reach stderr."""
    proc = run_python("import warnings\nwarnings.simplefilter('default')\n" + textwrap.dedent(f"""
        import mayolact
        import torch
        from detectron2.config import get_cfg
        from detectron2.data import DatasetCatalog
        from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY, build_model
        from mayolact.modeling.matchers import ANCHOR_MATCHER_REGISTRY
        print("REGISTERED", "YOLACT" in META_ARCH_REGISTRY,
              "build_yolact_resnet_carafe_fpn_backbone" in BACKBONE_REGISTRY,
              "mayolact_shapes_val" in DatasetCatalog.list(),
              "ATSSMatcher" in ANCHOR_MATCHER_REGISTRY)
        cfg = get_cfg()
        mayolact.add_mayolact_config(cfg)
        cfg.merge_from_file({str(QUICK)!r})
        cfg.MODEL.YOLACT.NUM_CLASSES = 3
        model = build_model(cfg)
        print("BUILT", type(model).__name__)
        print("ANCHORS", len(model.anchor_generator([torch.zeros(1, 4, 5, 5)])[0]))
        for name in mayolact.__all__:  # every public name exists
            assert getattr(mayolact, name) is not None, name
    """))
    assert "REGISTERED True True True True" in proc.stdout and "BUILT YOLACT" in proc.stdout
    assert "ANCHORS 25" in proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr


def test_known_warning_filters_are_narrow():
    """Only the listed message from the listed module is ignored: the same text from elsewhere,
    or another deprecation from the same module, still shows."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        filter_known_warnings()
        import torch

        torch.meshgrid(torch.arange(2), torch.arange(3))  # filtered (torch.functional)
        warnings.warn("`torch.jit.script` is deprecated. Please switch", FutureWarning)  # here
        warnings.warn("something else", FutureWarning)
    messages = [str(w.message) for w in seen]
    assert not any("torch.meshgrid" in m for m in messages), messages
    assert sum("torch.jit.script" in m for m in messages) == 1, messages
    assert "something else" in messages
    assert all(len(k) == 3 for k in KNOWN_WARNINGS)


# ------------------------------------------------------------------------------- tools' --help
#: Run in a fresh interpreter: the tool runs as a script with ``--help``; the first parse stops
#: it, after listing the options without help text and the heavy modules imported by then.
HELP_PROBE = r"""
import argparse, runpy, sys
path = sys.argv[1]

def options(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from options(sub)
        elif not isinstance(action, argparse._HelpAction):
            yield action

def probe(self, args=None, namespace=None):
    missing = [a.option_strings[0] if a.option_strings else a.dest
               for a in options(self) if not (a.help or "").strip()]
    heavy = [m for m in ("torch", "detectron2", "cv2", "matplotlib") if m in sys.modules]
    print("MISSING_HELP", missing)
    print("HEAVY", heavy)
    sys.exit(0)

argparse.ArgumentParser.parse_known_args = probe
sys.argv = [path, "--help"]
runpy.run_path(path, run_name="__main__")
"""

TOOLS = sorted((REPO / "tools").glob("*.py"))


@pytest.mark.parametrize("tool", TOOLS, ids=[t.stem for t in TOOLS])
def test_tool_help_is_instant_and_complete(tool):
    """``--help`` is answered before torch, Detectron2, OpenCV or matplotlib are imported (so in
    well under 2 s), and every option of every (sub-)command says what it does."""
    proc = subprocess.run([sys.executable, "-c", HELP_PROBE, str(tool)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MISSING_HELP []" in proc.stdout, proc.stdout
    assert "HEAVY []" in proc.stdout, proc.stdout


def test_training_parser_matches_detectron2s():
    """tools/train_net.py parses with its own parser (no torch needed); it must accept what
    Detectron2's default_argument_parser accepts, with the same defaults."""
    from detectron2.engine import default_argument_parser

    train_net = load_tool("train_net")
    training_argument_parser = train_net.training_argument_parser
    finish_training_args = train_net.finish_training_args

    def signature(parser):
        return {a.dest: (tuple(a.option_strings), a.nargs, a.const, type(a).__name__, a.type)
                for a in parser._actions}

    ours, theirs = training_argument_parser(), default_argument_parser()
    assert signature(ours) == signature(theirs)
    argv = ["--config-file", "x.yaml", "--num-gpus", "2", "--eval-only", "SOLVER.MAX_ITER", "5"]
    assert vars(finish_training_args(ours.parse_args(argv))) == vars(theirs.parse_args(argv))


# ----------------------------------------------------------------- README "Use it from Python"
def test_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's five lines, verbatim but for the weights and image paths, on a saved demo-config
    model; the predictor names the classes."""
    import cv2
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from mayolact import load_config
    from mayolact.data.shapes import SHAPES_CLASSES, render_shapes_image

    readme = (REPO / "README.md").read_text()
    code = readme.split("## Use it from Python", 1)[1].split("```python\n", 1)[1].split("```")[0]
    assert len(code.strip().splitlines()) <= 6, code  # the import lines and five more at most
    cfg = load_config(str(REPO / "configs" / "shapes" / "mayolact_shapes_demo.yaml"))
    DetectionCheckpointer(build_model(cfg), save_dir=str(tmp_path)).save("model_final")
    cv2.imwrite(str(tmp_path / "image.jpg"), render_shapes_image(0, 128, 0)[0][:, :, ::-1])
    code = code.replace("output/demo/model_final.pth", str(tmp_path / "model_final.pth"))
    code = code.replace('"image.jpg"', repr(str(tmp_path / "image.jpg")))
    monkeypatch.chdir(REPO)  # the README runs from the repository's root
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    instances = namespace["instances"]
    assert instances.image_size == (128, 128)
    assert {"pred_boxes", "pred_masks", "scores", "pred_classes"} <= set(instances.get_fields())
    assert namespace["predictor"].metadata.thing_classes == list(SHAPES_CLASSES)


def test_known_log_records_are_dropped():
    """torch's "No CUDA runtime is found" (logged when Detectron2 reports the environment on a
    machine without a GPU) is dropped; the same logger's other records are not."""
    import logging

    import torch  # noqa: F401  (torch sets up its loggers first)

    filter_known_warnings()
    filter_known_warnings()  # idempotent
    log = logging.getLogger("torch.utils.cpp_extension")
    seen = []
    log.addHandler(handler := logging.Handler())
    handler.emit = lambda record: seen.append(record.getMessage())
    try:
        log.warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local")
        log.warning("something else")
    finally:
        log.removeHandler(handler)
    assert seen == ["something else"]
    assert sum(type(f).__name__ == "_DropRecords" for f in log.filters) == 1
