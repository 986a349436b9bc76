"""Files you did not write: weights from the internet run no code, damaged files never load, and
two runs never share a folder (docs/RELIABILITY.md, "What survives what").

* planted payloads (a ``.pkl`` and a ``.pth`` whose unpickling would create a file, a
  ``last_checkpoint`` tag pointing outside its folder) on every path that reads weights:
  ``MODEL.WEIGHTS`` through ``train_net --eval-only``, ``--resume``, the demo, both conversions,
  the export, the predictor and the figures; no file is ever created;
* integrity: damaged bytes (CRC-32) and non-finite values are refused naming the file and tensor;
* backbone-only (ImageNet) weights are refused for evaluation and drawing, allowed for training;
* one run per folder (``run.lock``): two real concurrent training processes;
* the smaller ones: overrides after options, a folder as DST, config errors up front, a full disk.
"""
import builtins
import collections
import errno
import io
import json
import os
import pickle
import re
import signal
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from detectron2.data import DatasetCatalog

import mayolact  # noqa: F401  (registers everything)
from mayolact.checkpoint.checkpointer import (
    CheckpointError,
    CheckpointWriteError,
    YOLACTCheckpointer,
    find_checkpoints,
    save_converted_checkpoint,
)
from mayolact.checkpoint.weights_file import (
    TRUST_PICKLE_ENV,
    integrity_problem,
    load_weights_file,
)
from mayolact.engine.checks import PreflightError, check_config
from mayolact.engine.hooks import CheckpointNotWritten, StagedPeriodicCheckpointer
from mayolact.engine.run_lock import RunLock, RunLockError, check_run_lock

from common import (
    PYTHON,
    QUICK_CONFIG,
    REPO,
    get_config,
    load_tool,
    logged,
    reaped,
    session_env,
    tool_env,
    wait_for,
)

TRAIN_NET = str(REPO / "tools" / "train_net.py")
TRAIN, VAL = "mayolact_shapes_train", "mayolact_shapes_val"
# The quick config on the session's shapes sets (8 classes) at 128 px.
SHAPES = ["MODEL.YOLACT.NUM_CLASSES", "8", "INPUT.YOLACT.SIZE", "128", "SOLVER.IMS_PER_BATCH", "2",
          "TEST.DETECTIONS_PER_IMAGE", "10", "DATASETS.TRAIN", f"('{TRAIN}',)",
          "DATASETS.TEST", f"('{VAL}',)"]
# A full-width R-18 in the quick config: what a torchvision ImageNet resnet18 file fits.
R18 = ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
       "MODEL.YOLACT.RESNET_WIDTH_SCALE", "1.0"]


# ----------------------------------------------------------------------------------- payloads
class _Shell:
    """Unpickles into ``os.system(command)``."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Exec:
    """Unpickles into ``exec(code)``."""

    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return builtins.exec, (self.code,)


def _payload(marker: Path):
    """Objects that create ``marker`` (two ways) when unpickled."""
    return [_Shell(f"touch {marker}.shell"), _Exec(f"open({str(marker) + '.exec'!r}, 'w')")]


def _created(markers):
    return [str(p) for m in markers for p in (Path(f"{m}.shell"), Path(f"{m}.exec")) if p.exists()]


def _state_with(model_state, payload):
    """A checkpoint that looks real: every tensor of a model, plus the payload."""
    return {"model": dict(model_state), "__author__": "Detectron2 Model Zoo", "extra": payload}


def plant(folder: Path, name: str, model_state, markers) -> Path:
    """Write a weights file ``name`` (.pkl: a bare pickle as Detectron2's; .pth: torch.save's
    archive) whose unpickling would create the file ``<marker>.*``."""
    marker = folder / f"marker_{name}"
    markers.append(marker)
    path = folder / name
    data = _state_with({k: v.numpy() for k, v in model_state.items()}, _payload(marker))
    if name.endswith(".pkl"):
        path.write_bytes(pickle.dumps(data, protocol=2))
    else:
        torch.save(_state_with(model_state, _payload(marker)), path)
    return path


@pytest.fixture(scope="module")
def shapes():
    DatasetCatalog.get(TRAIN)
    DatasetCatalog.get(VAL)
    return [d["file_name"] for d in DatasetCatalog.get(VAL)[:1]]


@pytest.fixture(scope="module")
def quick_state():
    """The state dict of the quick model on the shapes sets (random weights)."""
    from detectron2.modeling import build_model

    cfg = get_config(QUICK_CONFIG, SHAPES)
    torch.manual_seed(0)
    return build_model(cfg).state_dict()


@pytest.fixture
def markers():
    """Markers of the planted payloads; the test fails if any payload ran."""
    found = []
    yield found
    assert not _created(found), f"a payload ran: {_created(found)}"


# ------------------------------------------------------------------------- load_weights_file
def test_what_real_checkpoints_hold_loads(tmp_path):
    """Detectron2 model-zoo .pkl (numpy arrays, OrderedDict, protocols 2-5), mmdet meta with numpy
    scalars in a .pth, torch's legacy format."""
    arrays = collections.OrderedDict(w=np.ones((2, 3), np.float32), n=np.arange(3))
    zoo = {"model": arrays, "__author__": "Detectron2 Model Zoo", "s": np.float32(1.5),
           "d": np.dtype("f4"), "b": b"\x00\x01", "t": (1, 2.0, None, True, "x")}
    for protocol in (2, 4, 5):
        path = tmp_path / f"zoo{protocol}.pkl"
        path.write_bytes(pickle.dumps(zoo, protocol=protocol))
        loaded = load_weights_file(str(path))
        assert np.array_equal(loaded["model"]["w"], arrays["w"]) and loaded["s"] == 1.5
        assert isinstance(loaded["model"], collections.OrderedDict) and loaded["t"] == zoo["t"]
    path = tmp_path / "mmdet.pth"
    torch.save({"state_dict": {"w": torch.ones(2)},
                "meta": {"epoch": np.int64(3), "loss": np.float64(0.5), "hist": np.ones(2)}}, path)
    assert load_weights_file(str(path))["meta"]["epoch"] == 3
    path = tmp_path / "legacy.pth"
    torch.save({"model": {"w": torch.ones(2)}}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(load_weights_file(str(path))["model"]["w"], torch.ones(2))


def _containers(tmp_path, payload):
    """The payload in every kind of file: bare pickles (protocol 2 and 5, named .pkl and .pth),
    torch.save's archive, an object array, and a pickle with a valid archive appended (which
    passes zipfile's checks: the zip directory is at the end)."""
    good = io.BytesIO()
    torch.save({"model": {"w": torch.ones(2)}}, good)
    files = {
        "proto2.pkl": pickle.dumps({"model": payload}, protocol=2),
        "proto5.pkl": pickle.dumps({"model": payload}, protocol=5),
        "bare.pth": pickle.dumps({"model": payload}, protocol=4),
        "objects.pkl": pickle.dumps({"model": {"w": np.array([payload], dtype=object)}}),
        "appended.pth": pickle.dumps(payload, protocol=2) + good.getvalue(),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save({"model": {"w": torch.ones(2)}, "extra": payload}, tmp_path / "archive.pth")
    return sorted(files) + ["archive.pth"]


@pytest.mark.parametrize("kind", ["shell", "exec"])
def test_code_in_any_kind_of_file_is_refused_by_name(tmp_path, kind, monkeypatch, markers):
    monkeypatch.delenv(TRUST_PICKLE_ENV, raising=False)
    marker = tmp_path / "marker"
    markers.append(marker)
    payload = _payload(marker)[0 if kind == "shell" else 1]
    name = "posix.system" if kind == "shell" else "builtins.exec"
    for file in _containers(tmp_path, payload):
        path = tmp_path / file
        with pytest.raises(CheckpointError) as exc:
            load_weights_file(str(path))
        message = str(exc.value)
        assert message.startswith(f"{path}: "), message
        if file == "appended.pth":
            assert "does not start at the first byte" in message, message
        else:
            assert f"holds Python code/objects: {name}" in message, message
            assert f"{TRUST_PICKLE_ENV}=1" in message and "corrupt" not in message


def test_trusted_opt_in_unpickles_in_full(tmp_path, monkeypatch):
    """A .pkl with a harmless object beyond the allowlist: refused, then loaded with the opt-in."""
    from fractions import Fraction

    path = tmp_path / "with_object.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": np.ones(2)}, "lr": Fraction(1, 3)}))
    monkeypatch.delenv(TRUST_PICKLE_ENV, raising=False)
    with pytest.raises(CheckpointError, match="holds Python code/objects: fractions.Fraction"):
        load_weights_file(str(path))
    monkeypatch.setenv(TRUST_PICKLE_ENV, "1")
    with logged("mayolact.checkpoint.weights_file") as records:
        assert load_weights_file(str(path))["lr"] == Fraction(1, 3)
    assert [r for r in records if "unpickled in full" in r and "fractions.Fraction" in r]


def test_every_unpickling_call_is_weights_only_or_the_opt_in():
    """The project's standing check: in projects/ and tools/, a pickle.load(s) or torch.load call
    is weights_only=True, or the one opt-in path, marked `# trusted opt-in`, behind
    $MAYOLACT_TRUST_PICKLE (mayolact.checkpoint.weights_file)."""
    call = re.compile(r"\b(pickle\.loads?|torch\.load)\(")
    unmarked, opted = [], []
    for path in sorted([*(REPO / "projects").rglob("*.py"), *(REPO / "tools").rglob("*.py")]):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if call.search(line) and "weights_only=True" not in line:
                where = f"{path.relative_to(REPO)}:{number}"
                (opted if "# trusted opt-in" in line else unmarked).append(where)
    assert not unmarked, unmarked
    assert opted and all("checkpoint/weights_file.py" in w for w in opted), opted


def _damaged(tmp_path, state) -> Path:
    """A torch.save file with 4 bytes of a tensor's data changed (same length: only the CRC-32
    of its member tells)."""
    path = tmp_path / "damaged.pth"
    torch.save({"model": state}, path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)  # the largest tensor's data
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    at = start + info.file_size // 2
    data[at:at + 4] = bytes(b ^ 0x5A for b in data[at:at + 4])
    path.write_bytes(bytes(data))
    return path


def _inf(tmp_path, state, name="inf.pth") -> Path:
    state = {k: v.clone() for k, v in state.items()}
    state["head.bbox_pred.weight"].view(-1)[3] = float("inf")
    path = tmp_path / name
    torch.save({"model": state}, path)
    return path


def test_damaged_bytes_and_non_finite_values_are_refused_naming_them(tmp_path, quick_state):
    damaged = _damaged(tmp_path, quick_state)
    with pytest.raises(CheckpointError, match=rf"^{damaged}: its member \S+ fails its CRC-32"):
        load_weights_file(str(damaged))
    inf = _inf(tmp_path, quick_state)
    with pytest.raises(CheckpointError, match=rf"^{inf}: tensor model/head.bbox_pred.weight holds "
                                              "NaN or infinite"):
        load_weights_file(str(inf))
    nan = tmp_path / "nan.pkl"
    nan.write_bytes(pickle.dumps({"model": {"conv.w": np.array([1.0, np.nan])}}))
    with pytest.raises(CheckpointError, match=rf"^{nan}: tensor model/conv.w holds NaN"):
        load_weights_file(str(nan))
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(pickle.dumps({"w": np.ones(100)})[:-40])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_weights_file(str(cut))
    trailing = tmp_path / "trailing.pkl"
    trailing.write_bytes(pickle.dumps({"w": np.ones(2)}) + b"more")
    with pytest.raises(CheckpointError, match="4 bytes follow the pickled data"):
        load_weights_file(str(trailing))
    # A large finite value whose sum overflows is still finite.
    big = tmp_path / "big.pth"
    torch.save({"w": torch.full((4,), 3e38)}, big)
    assert load_weights_file(str(big))["w"].shape == (4,)


# ------------------------------------------------------------------------------ every path
def _cli_exit(tool, argv, capsys):
    """(exit status, stderr) of a tool run in this process."""
    try:
        code = tool(argv)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name", ["evil.pkl", "evil.pth"])
def test_planted_weights_run_no_code_on_any_path(tmp_path, name, quick_state, shapes, markers,
                                                 capsys, monkeypatch):
    monkeypatch.delenv(TRUST_PICKLE_ENV, raising=False)
    evil = plant(tmp_path, name, quick_state, markers)
    expected = f"{evil}: holds Python code/objects: "  # posix.system and builtins.exec
    image, out = shapes[0], tmp_path / "out"
    weights = ["MODEL.WEIGHTS", str(evil)]
    train_net = load_tool("train_net")
    runs = {
        "train_net --eval-only": (train_net.cli, [
            "--eval-only", "--config-file", str(QUICK_CONFIG), *SHAPES, *weights,
            "OUTPUT_DIR", str(out)]),
        "demo": (load_tool("demo").main, [
            "--config-file", str(QUICK_CONFIG), "--input", image, "--output", str(tmp_path / "vis"),
            *SHAPES, *weights]),
        "export_model": (load_tool("export_model").main, [
            "--config-file", str(QUICK_CONFIG), "--sample-image", image,
            "--output", str(tmp_path / "export"), *SHAPES, *weights]),
        "convert_weights torchvision": (load_tool("convert_weights").main, [
            "torchvision", str(evil), str(tmp_path / "tv.pth")]),
        "convert_weights mmdet": (load_tool("convert_weights").main, [
            "mmdet", str(evil), str(tmp_path / "mm.pth"), "--config-file", str(QUICK_CONFIG),
            *SHAPES]),
    }
    for what, (tool, argv) in runs.items():
        code, err = _cli_exit(tool, argv, capsys)
        assert code == 2 and expected in err and "posix.system" in err, (what, code, err[-2000:])
    assert not (tmp_path / "tv.pth").exists() and not (tmp_path / "mm.pth").exists()
    assert not (tmp_path / "export").exists() and not (tmp_path / "vis").exists()

    from mayolact.analysis.figures import build_trained_model
    from mayolact.engine.predictor import YOLACTPredictor

    cfg = get_config(QUICK_CONFIG, [*SHAPES, *weights])
    for build in (YOLACTPredictor, build_trained_model):
        with pytest.raises(CheckpointError, match=re.escape(expected)):
            build(cfg)


def _resume_argv(out, *flags):
    return [*flags, "--resume", "--config-file", str(QUICK_CONFIG), *SHAPES, "OUTPUT_DIR", str(out),
            "SOLVER.MAX_ITER", "2"]


def test_resume_loads_nothing_from_outside_or_with_code(tmp_path, quick_state, shapes, markers,
                                                         capsys, monkeypatch):
    monkeypatch.delenv(TRUST_PICKLE_ENV, raising=False)
    train_net = load_tool("train_net")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = plant(elsewhere, "model_0000009.pth", quick_state, markers)
    out = tmp_path / "out"
    out.mkdir()
    tag = out / "last_checkpoint"
    cases = {
        str(outside): "not a plain file name in the folder",
        "../elsewhere/model_0000009.pth": "not a plain file name in the folder",
    }
    (out / "linked.pth").symlink_to(outside)
    cases["linked.pth"] = f"a link to {os.path.realpath(outside)}, outside the folder"
    for flags in ((), ("--eval-only",)):
        for content, why in cases.items():
            tag.write_text(content)
            code, err = _cli_exit(train_net.cli, _resume_argv(out, *flags), capsys)
            assert code == 2, (flags, content, err[-2000:])
            assert f"{tag} names {content!r}: {why}" in err, err[-2000:]
    (out / "linked.pth").unlink()
    # Payloads inside the folder: a run's own checkpoint name, and a tagged .pkl (a run writes
    # torch.save archives only).
    for name, expected in (("model_0000009.pth", "{}: holds Python code/objects: "),
                           ("evil.pkl", "no readable checkpoint to resume from (evil.pkl: not a "
                                        "complete torch.save archive")):
        planted = plant(out, name, quick_state, markers)
        tag.write_text(name)
        for flags in ((), ("--eval-only",)):
            code, err = _cli_exit(train_net.cli, _resume_argv(out, *flags), capsys)
            assert code == 2 and expected.format(planted) in err, (name, flags, err[-2000:])
        planted.unlink()
    assert not (out / "model_final.pth").exists()


def test_last_checkpoint_rules(tmp_path):
    """A missing tagged file: the newest other checkpoint (with a warning), or an error when there
    is none; links leaving the folder are not checkpoints of the run."""
    model = torch.nn.Linear(2, 2)
    out = tmp_path / "run"
    checkpointer = YOLACTCheckpointer(model, str(out))
    checkpointer.save("model_0000001", iteration=1)
    (out / "last_checkpoint").write_text("model_0000005.pth")  # its file was moved away
    fresh = YOLACTCheckpointer(torch.nn.Linear(2, 2), str(out))
    with logged(fresh.logger.name) as records:
        assert fresh.resume_or_load("", resume=True)["iteration"] == 1
    assert [r for r in records
            if "model_0000005.pth is unreadable (named by last_checkpoint, missing)" in r]
    (out / "model_0000001.pth").unlink()
    with pytest.raises(CheckpointError, match="names model_0000005.pth, which does not exist, and "
                                              "the folder holds no other checkpoint"):
        YOLACTCheckpointer(torch.nn.Linear(2, 2), str(out)).resume_or_load("", resume=True)
    # Without a tag and without checkpoints, --resume starts from MODEL.WEIGHTS (Detectron2's).
    (out / "last_checkpoint").unlink()
    assert YOLACTCheckpointer(torch.nn.Linear(2, 2), str(out)).resume_or_load(
        "", resume=True) == {}
    other = tmp_path / "other.pth"
    YOLACTCheckpointer(torch.nn.Linear(2, 2), str(tmp_path)).save("other", iteration=7)
    (out / "model_0000009.pth").symlink_to(other)
    assert find_checkpoints(str(out)) == []


def test_cleanup_keeps_the_files_of_live_processes(tmp_path):
    checkpointer = YOLACTCheckpointer(torch.nn.Linear(2, 2), str(tmp_path))
    sleeper = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(60)"])
    with reaped(sleeper):
        dead = subprocess.run([PYTHON, "-c", "import os; print(os.getpid())"], text=True,
                              capture_output=True, timeout=60).stdout.strip()
        live = tmp_path / f".model_0000004.{sleeper.pid}.tmp.pth"
        gone = tmp_path / f".model_0000002.{dead}.tmp.pth"
        old_style = tmp_path / f".model_0000001.pth.{dead}.tmp"
        for p in (live, gone, old_style):
            p.write_bytes(b"partial")
        assert sorted(checkpointer.remove_partial_saves()) == sorted([str(gone), str(old_style)])
        assert live.exists()


# ----------------------------------------------------------------------- backbone-only weights
@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A torchvision resnet18 state dict (random weights): an ImageNet classification file."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("imagenet") / "resnet18-random.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def test_backbone_only_weights_are_refused_for_inference(tmp_path, resnet18_file, shapes, capsys):
    weights = [*SHAPES, *R18, "MODEL.WEIGHTS", str(resnet18_file)]
    expected = (rf"{resnet18_file}: the torchvision ImageNet ResNet leaves \d+ of the model's \d+ "
                r"tensors freshly initialised \(backbone.\{fpn_lateral\*.*head.\{.*cls_score")
    code, err = _cli_exit(load_tool("train_net").cli, [
        "--eval-only", "--config-file", str(QUICK_CONFIG), *weights,
        "OUTPUT_DIR", str(tmp_path / "out")], capsys)
    assert code == 2 and re.search(expected, err), err[-2000:]
    assert not (tmp_path / "out" / "inference").exists()  # nothing was evaluated
    code, err = _cli_exit(load_tool("demo").main, [
        "--config-file", str(QUICK_CONFIG), "--input", shapes[0], "--output",
        str(tmp_path / "vis"), *weights], capsys)
    assert code == 2 and re.search(expected, err), err[-2000:]
    assert not (tmp_path / "vis").exists()

    # Training from it is ImageNet initialisation, said so in the log.
    from detectron2.modeling import build_model

    cfg = get_config(QUICK_CONFIG, weights)
    model = build_model(cfg)
    checkpointer = YOLACTCheckpointer.from_config(cfg, model)
    with logged(checkpointer.logger.name) as records:
        checkpointer.load(str(resnet18_file))
    assert any(r.startswith("ImageNet initialisation: the ResNet from") for r in records), records
    # The class-layer switch leaves the classifier fresh: for fine-tuning, not for inference.
    full = tmp_path / "full.pth"
    torch.save({"model": model.state_dict()}, full)
    cfg = get_config(QUICK_CONFIG, [*weights[:-1], str(full),
                                    "MODEL.YOLACT.NUM_CLASSES", "3",
                                    "MODEL.YOLACT.WEIGHTS_SKIP_CLASS_LAYERS", "True"])
    with pytest.raises(CheckpointError, match="WEIGHTS_SKIP_CLASS_LAYERS lets the class layers"):
        YOLACTCheckpointer.from_config(cfg, build_model(cfg), inference=True).load(str(full))


def test_integrity_on_every_load(tmp_path, quick_state, shapes, capsys):
    """Damaged bytes and inf values through MODEL.WEIGHTS (evaluation and drawing)."""
    damaged, inf = _damaged(tmp_path, quick_state), _inf(tmp_path, quick_state)
    for path, why in ((damaged, "fails its CRC-32 checksum"),
                      (inf, "tensor model/head.bbox_pred.weight holds NaN or infinite")):
        weights = [*SHAPES, "MODEL.WEIGHTS", str(path)]
        code, err = _cli_exit(load_tool("train_net").cli, [
            "--eval-only", "--config-file", str(QUICK_CONFIG), *weights,
            "OUTPUT_DIR", str(tmp_path / "out")], capsys)
        assert code == 2 and f"{path}: " in err and why in err, err[-2000:]
        code, err = _cli_exit(load_tool("demo").main, [
            "--config-file", str(QUICK_CONFIG), "--input", shapes[0], "--output",
            str(tmp_path / "vis"), *weights], capsys)
        assert code == 2 and f"{path}: " in err and why in err, err[-2000:]


def test_predictor_logs_no_from_scratch_line(tmp_path, quick_state):
    from mayolact.engine.predictor import YOLACTPredictor

    path = tmp_path / "w.pth"
    torch.save({"model": quick_state}, path)
    with logged("fvcore.common.checkpoint", "detectron2.checkpoint.detection_checkpoint",
                "mayolact.engine.predictor") as records:
        YOLACTPredictor(get_config(QUICK_CONFIG, [*SHAPES, "MODEL.WEIGHTS", str(path)]))
    assert not [r for r in records if "from scratch" in r], records
    assert any(str(path) in r for r in records), records


# --------------------------------------------------------------------------- one run per folder
def test_run_lock_names_the_holder_and_dies_with_it(tmp_path):
    folder = tmp_path / "out"
    with RunLock(str(folder)):
        with pytest.raises(RunLockError, match=rf"in use by another run \(pid {os.getpid()} on "):
            RunLock(str(folder)).acquire()
        with pytest.raises(RunLockError, match=f"pid {os.getpid()}"):
            check_run_lock(str(folder))
    check_run_lock(str(folder))  # released
    check_run_lock(str(tmp_path / "never_created"))
    assert not (tmp_path / "never_created").exists()
    # A holder killed with SIGKILL leaves no stale lock (the kernel releases it).
    held = tmp_path / "held"
    holder = subprocess.Popen(
        [PYTHON, "-c", "import sys, time; from mayolact.engine.run_lock import RunLock; "
                       "RunLock(sys.argv[1]).acquire(); open(sys.argv[2], 'w').close(); "
                       "time.sleep(120)", str(folder), str(held)], env=tool_env(tmp_path))
    with reaped(holder):
        wait_for(held.exists, 120, "the lock to be held", holder)
        with pytest.raises(RunLockError, match=f"pid {holder.pid} "):
            RunLock(str(folder)).acquire()
    with RunLock(str(folder)):
        pass


@pytest.mark.slow
def test_two_concurrent_runs_on_one_folder(tmp_path, shapes):
    """A second run and an overlapping --resume stop up front naming the first's pid; the first
    goes on, stops on SIGTERM with its checkpoint, and a --resume then finishes it."""
    out = tmp_path / "out"
    def command(max_iter, *flags):
        return [PYTHON, TRAIN_NET, *flags, "--config-file", str(QUICK_CONFIG), *SHAPES,
                "DATASETS.TEST", "()", "OUTPUT_DIR", str(out), "SOLVER.CHECKPOINT_PERIOD", "1",
                "SOLVER.MAX_ITER", str(max_iter)]

    env = session_env(tmp_path)
    console = tmp_path / "first.txt"
    with open(console, "w") as sink:
        first = subprocess.Popen(command(100000), cwd=tmp_path, env=env, stdout=sink,
                                 stderr=subprocess.STDOUT)
    with reaped(first):
        wait_for(lambda: (out / "model_0000001.pth").is_file(), 300, "a checkpoint", first)
        for extra in ([], ["--resume"]):
            second = subprocess.run(command(100000, *extra), cwd=tmp_path, env=env,
                                    capture_output=True, text=True, timeout=300)
            assert second.returncode == 2, second.stderr[-3000:]
            assert f"is in use by another run (pid {first.pid} " in second.stderr, second.stderr
            assert first.poll() is None  # the first run goes on
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=300)
    output = console.read_text()
    assert first.returncode == 128 + signal.SIGTERM, output[-3000:]
    # Nothing of the second runs in the first's files: one config, one log, one metrics stream.
    log = (out / "log.txt").read_text()
    assert log.count("Full config saved to") == 1
    iterations = [json.loads(line)["iteration"] for line in
                  (out / "metrics.json").read_text().splitlines()]
    assert iterations == sorted(set(iterations))
    assert not [p.name for p in out.iterdir() if p.name.endswith((".tmp", ".tmp.pth"))]
    saved = find_checkpoints(str(out))
    assert saved and (out / "last_checkpoint").read_text() == Path(saved[0]).name
    for path in saved:
        assert integrity_problem(path, archive_only=True) is None, path
    # The lock died with the first run: a --resume finishes it.
    it = torch.load(saved[0], map_location="cpu", weights_only=True)["iteration"]
    done = subprocess.run(command(it + 3, "--resume"), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_weights_file(str(out / "model_final.pth"))["iteration"] == it + 2


# ------------------------------------------------------------------------------ the small ones
def test_config_errors_exit_2_before_the_model_is_built(tmp_path, shapes, capsys, monkeypatch):
    import detectron2.engine.defaults
    import detectron2.modeling

    import mayolact.engine.predictor

    built = []
    real = detectron2.modeling.build_model
    for module in (detectron2.modeling, detectron2.engine.defaults, mayolact.engine.predictor):
        monkeypatch.setattr(module, "build_model",
                            lambda cfg: built.append(cfg.MODEL.DEVICE) or real(cfg))
    for opts, message in ((["MODEL.YOLACT.MATCHER", "ATSSS"],
                           "Unknown MODEL.YOLACT.MATCHER 'ATSSS'; valid: ['ATSS', 'FixedIoU']"),
                          (["MODEL.YOLACT.NUM_PROTOTYPES", "0"], "num_prototypes >= 1"),
                          (["SOLVER.YOLACT.OPTIMIZER", "adam"], "SOLVER.YOLACT.OPTIMIZER must be")):
        cfg = get_config(QUICK_CONFIG, [*SHAPES, *opts])
        with pytest.raises(PreflightError, match=re.escape(message)):
            check_config(cfg, train=True)
        for tool, argv in (("train_net", ["--config-file", str(QUICK_CONFIG), *SHAPES, *opts,
                                          "OUTPUT_DIR", str(tmp_path / "out")]),
                           ("demo", ["--config-file", str(QUICK_CONFIG), "--input", shapes[0],
                                     "--output", str(tmp_path / "vis"), *SHAPES, *opts])):
            if tool == "demo" and "SOLVER" in opts[0]:
                continue  # the demo does not train
            runner = load_tool(tool).cli if tool == "train_net" else load_tool(tool).main
            code, err = _cli_exit(runner, argv, capsys)
            assert code == 2 and "error: config: " in err and message in err, (tool, err[-2000:])
    assert set(built) <= {"meta"}, built  # only the dry builds on the meta device
    assert not (tmp_path / "out").exists()


def test_overrides_follow_any_option(tmp_path, shapes, capsys):
    """`KEY VALUE` after `--config-file CFG` (convert), after `--format X` (export), after
    `--input FILE` (demo) reach the config: a wrong key is named by the config loader."""
    from mayolact.config import take_overrides

    assert take_overrides(["onnx", "MODEL.WEIGHTS", "w.pth"], ["SEED", "1"]) == (
        ["onnx"], ["MODEL.WEIGHTS", "w.pth", "SEED", "1"])
    assert take_overrides(["a.jpg", "b/c.png"], []) == (["a.jpg", "b/c.png"], [])
    missing = str(tmp_path / "missing.pth")
    runs = {
        "convert_weights": ["mmdet", missing, str(tmp_path / "dst.pth"),
                            "--config-file", str(QUICK_CONFIG)],
        "export_model": ["--config-file", str(QUICK_CONFIG), "--output", str(tmp_path / "e"),
                         "--format", "onnx"],
        "demo": ["--config-file", str(QUICK_CONFIG), "--output", str(tmp_path / "v"),
                 "--input", shapes[0]],
    }
    for tool, argv in runs.items():
        code, err = _cli_exit(load_tool(tool).main, [*argv, "MODEL.NOPE", "1"], capsys)
        assert code == 2 and "MODEL.NOPE" in err and "unrecognized" not in err, (tool, err)
    code, err = _cli_exit(load_tool("convert_weights").main,
                          [*runs["convert_weights"], *SHAPES, "SEED", "-1"], capsys)
    assert code == 2 and f"{missing}: no such weights file" in err, err[-2000:]
    code, err = _cli_exit(load_tool("convert_weights").main,
                          [*runs["convert_weights"], "--bogus"], capsys)
    assert code == 2 and "unrecognized arguments: --bogus" in err
    code, err = _cli_exit(load_tool("export_model").main,
                          [*runs["export_model"], "png"], capsys)
    assert code == 2 and "invalid choice: 'png'" in err


def test_a_folder_as_dst_leaves_nothing(tmp_path, quick_state, capsys):
    src = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18().state_dict(), src)
    dst = tmp_path / "weights"
    dst.mkdir()
    code, err = _cli_exit(load_tool("convert_weights").main, ["torchvision", str(src), str(dst)],
                          capsys)
    assert code == 2 and f"DST {dst} is a folder" in err
    with pytest.raises(IsADirectoryError, match="is a folder"):
        save_converted_checkpoint(quick_state, str(dst), "torchvision")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resnet.pth", "weights"]
    assert list(dst.iterdir()) == []


def test_full_disk_names_the_checkpoint_once(tmp_path, monkeypatch):
    model = torch.nn.Linear(2, 2)
    checkpointer = YOLACTCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000000", iteration=0)

    def full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointWriteError, match=rf"could not write the checkpoint "
                                                   rf"{tmp_path}/model_0000001.pth \(No space"):
        checkpointer.save("model_0000001", iteration=1)
    hook = StagedPeriodicCheckpointer(checkpointer, period=1, max_iter=100)
    hook.trainer = type("T", (), {"iter": 1})()
    with logged("mayolact.engine.hooks") as records, pytest.raises(CheckpointNotWritten) as exc:
        hook.after_step()
    assert exc.value.code == 1 and not exc.value.args[1:]
    assert [r for r in records if "model_0000001.pth" in r] == [
        f"Training stopped: could not write the checkpoint {tmp_path}/model_0000001.pth (No space "
        f"left on device); the previous checkpoints and last_checkpoint in {tmp_path} are "
        "unchanged"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000000.pth"]


@pytest.mark.slow
def test_full_disk_during_training_is_said_once(tmp_path, shapes):
    script = ("import errno, runpy, sys, torch\n"
              "def full(obj, f, *a, **k):\n"
              "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
              "torch.save = full\n"
              "sys.argv = sys.argv[1:]\n"
              "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    out = tmp_path / "out"
    proc = subprocess.run(
        [PYTHON, "-c", script, TRAIN_NET, "--config-file", str(QUICK_CONFIG), *SHAPES,
         "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "2",
         "OUTPUT_DIR", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env=session_env(tmp_path))
    assert proc.returncode == 1, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    assert console.count("No space left on device") == 1, console[-3000:]
    assert f"could not write the checkpoint {out}/model_0000001.pth" in console
    assert "Traceback" not in console
