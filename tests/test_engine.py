"""Optimizer, schedules and config loading of the training engine, and the trainer around
Detectron2's ``DefaultTrainer``."""
import math

import pytest
import torch
import yaml
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser

from mayolact import add_mayolact_config
from mayolact.config.config import ConfigError, load_config, load_rows, merge_config_row
from mayolact.engine.trainer import (
    EpochCosineParamScheduler,
    GlobalNormClipAdamW,
    GlobalNormClipSGD,
    build_yolact_lr_scheduler,
    build_yolact_optimizer,
    resolve_lr_steps,
)

from common import REPO, load_tool, strict_json

ROWS = REPO / "configs" / "rows"


def shipped_configs():
    """Every config file (the rows files of configs/rows/ are partial configs, tested below)."""
    return sorted(p for p in (REPO / "configs").rglob("*.yaml") if ROWS not in p.parents)


def test_global_norm_clip_scales_all_gradients_together():
    a = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(4))
    a.grad = torch.tensor([30.0, 0.0, 40.0])  # norm 50
    b.grad = torch.full((4,), 60.0)  # norm 120; global norm 130
    opt = GlobalNormClipSGD([a, b], max_norm=13.0, lr=1.0, momentum=0.0)
    opt.step()
    # Both gradients shrink by the same factor 13/130 (a per-parameter clip would not).
    assert torch.allclose(a.detach(), -torch.tensor([3.0, 0.0, 4.0]), atol=1e-5)
    assert torch.allclose(b.detach(), -torch.full((4,), 6.0), atol=1e-5)
    assert math.isclose(float(opt.last_grad_norm), 130.0, rel_tol=1e-5)


def test_global_norm_clip_leaves_small_gradients():
    a = torch.nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([0.3, 0.4])
    GlobalNormClipSGD([a], max_norm=35.0, lr=1.0).step()
    assert torch.allclose(a.detach(), -torch.tensor([0.3, 0.4]))


def test_global_norm_clip_rejects_negative():
    with pytest.raises(ValueError, match="GLOBAL_CLIP_NORM"):
        GlobalNormClipSGD([torch.nn.Parameter(torch.zeros(1))], max_norm=-1.0, lr=0.1)


def test_epoch_cosine_is_constant_inside_an_epoch():
    s = EpochCosineParamScheduler(1.0, 0.0, max_iter=55 * 10, iters_per_epoch=10)
    values = [s(it / 550) for it in range(550)]
    for e in range(55):
        chunk = values[e * 10:(e + 1) * 10]
        assert max(chunk) == min(chunk)
        assert math.isclose(chunk[0], 0.5 * (1 + math.cos(math.pi * e / 55)), abs_tol=1e-12)
    assert values[0] == 1.0


def _cfg(**solver):
    cfg = get_cfg()
    add_mayolact_config(cfg)
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def _lrs(cfg, n):
    model = torch.nn.Linear(2, 2)
    opt = build_yolact_optimizer(cfg, model)
    sched = build_yolact_lr_scheduler(cfg, opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_epoch_cosine_lr():
    cfg = _cfg(BASE_LR=0.008, LR_SCHEDULER_NAME="WarmupCosineLR", BASE_LR_END=0.0, MAX_ITER=1000,
               WARMUP_ITERS=100, WARMUP_FACTOR=0.1)
    cfg.SOLVER.YOLACT.ITERS_PER_EPOCH = 200
    lrs = _lrs(cfg, 1000)
    assert math.isclose(lrs[0], 0.008 * 0.1, rel_tol=1e-6)
    assert math.isclose(lrs[50], 0.008 * (0.1 + 0.9 * 0.5), rel_tol=1e-6)  # mmdet's linear warmup
    assert math.isclose(lrs[150], 0.008, rel_tol=1e-6)  # epoch 0 of the cosine: factor 1
    assert math.isclose(lrs[450], 0.008 * 0.5 * (1 + math.cos(math.pi * 2 / 5)), rel_tol=1e-6)
    assert lrs[400] == lrs[599]


def test_multistep_lr_and_weight_decay_on_all_parameters():
    cfg = _cfg(BASE_LR=0.004, STEPS=(20, 30), MAX_ITER=40, WARMUP_ITERS=0, GAMMA=0.1,
               WEIGHT_DECAY=5e-4, WEIGHT_DECAY_NORM=5e-4, BIAS_LR_FACTOR=1.0)
    lrs = _lrs(cfg, 40)
    assert math.isclose(lrs[19], 0.004) and math.isclose(lrs[20], 0.0004)
    assert math.isclose(lrs[30], 0.00004, rel_tol=1e-6)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    opt = build_yolact_optimizer(cfg, model)
    assert isinstance(opt, GlobalNormClipSGD)
    assert all(g["weight_decay"] == 5e-4 for g in opt.param_groups)


def test_adamw_option_clips_globally_and_decays_decoupled():
    cfg = _cfg(BASE_LR=0.1, WEIGHT_DECAY=0.5, WEIGHT_DECAY_NORM=0.5)
    cfg.SOLVER.YOLACT.OPTIMIZER = "AdamW"
    cfg.SOLVER.YOLACT.GLOBAL_CLIP_NORM = 1.0
    model = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(2.0)
    opt = build_yolact_optimizer(cfg, model)
    assert isinstance(opt, GlobalNormClipAdamW)
    assert all(g["weight_decay"] == 0.5 for g in opt.param_groups)
    model.weight.grad = torch.tensor([[3.0, 0.0, -4.0]])  # global norm 5, clipped to 1
    opt.step()
    assert math.isclose(float(opt.last_grad_norm), 5.0, rel_tol=1e-6)
    # First AdamW step: w * (1 - lr * wd) - lr * sign(g) (the update m / sqrt(v) is +-1, 0 for
    # g = 0).
    expected = torch.tensor([[2 * 0.95 - 0.1, 2 * 0.95, 2 * 0.95 + 0.1]])
    assert torch.allclose(model.weight.detach(), expected, atol=1e-5)


def test_unknown_optimizer_is_named():
    cfg = _cfg()
    cfg.SOLVER.YOLACT.OPTIMIZER = "Adam"
    with pytest.raises(ValueError, match="SOLVER.YOLACT.OPTIMIZER.*'Adam'"):
        build_yolact_optimizer(cfg, torch.nn.Linear(2, 2))


@pytest.mark.parametrize("path", shipped_configs(),
                         ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_shipped_config_loads(path, tmp_path):
    cfg = load_config(str(path), ["OUTPUT_DIR", str(tmp_path)])
    cfg.freeze()
    assert cfg.MODEL.META_ARCHITECTURE == "YOLACT"
    assert cfg.INPUT.YOLACT.SIZE in (160, 192, 400, 550, 700)
    # What Detectron2's default_setup writes (OUTPUT_DIR/config.yaml) reads back to the same config.
    dumped = tmp_path / "config.yaml"
    dumped.write_text(cfg.dump())
    assert yaml.safe_load(load_config(str(dumped)).dump()) == yaml.safe_load(cfg.dump())


def test_train_net_setup(tmp_path):
    """The whole setup of train_net (Detectron2's default_setup) on one config; the config-specific
    part of it, loading and dumping, runs on every shipped config above."""
    train_net = load_tool("train_net")
    args = default_argument_parser().parse_args(
        ["--config-file", str(REPO / "configs" / "shapes" / "mayolact_shapes_demo.yaml"),
         "OUTPUT_DIR", str(tmp_path)])
    cfg = train_net.setup(args)
    assert cfg.is_frozen() and cfg.OUTPUT_DIR == str(tmp_path)
    saved = load_config(str(tmp_path / "config.yaml"))
    assert yaml.safe_load(saved.dump()) == yaml.safe_load(cfg.dump())


def test_unknown_config_key_names_the_file_and_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  YOLACT:\n    NOT_A_KEY: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*NOT_A_KEY"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="NOPE"):
        load_config("", ["MODEL.YOLACT.NOPE", "1"])


def test_rows_files_merge_into_their_base_configs():
    """Every assigner row applies to Base-YOLACT.yaml; the study's and the benchmarks' rows name
    assigner rows and configs that exist; the fixed-IoU row keeps the 550 geometry."""
    base = REPO / "configs" / "COCO-InstanceSegmentation" / "Base-YOLACT.yaml"
    assigners = load_rows(str(ROWS / "assigners.yaml"))
    for name in assigners:
        cfg = merge_config_row(load_config(str(base)), str(ROWS / "assigners.yaml"), name)
        assert cfg.MODEL.YOLACT.MATCHER == ("FixedIoU" if name == "fixed_iou" else "ATSS")
    fixed = merge_config_row(load_config(str(base), ["INPUT.YOLACT.SIZE", "192"]),
                             str(ROWS / "assigners.yaml"), "fixed_iou")
    assert fixed.MODEL.YOLACT.ANCHOR_REFERENCE_SIZE == 550
    assert list(fixed.MODEL.YOLACT.ANCHOR_REFERENCE_GRID) == [69, 35, 18, 9, 5]
    for tool in ("compare_assigners", "benchmark_assigner"):
        rows = load_rows(str(ROWS / f"{tool}.yaml"))
        assert rows and all(r["assigner"] in assigners for r in rows.values())
    for row in load_rows(str(ROWS / "benchmark_inference.yaml")).values():
        assert (REPO / "configs" / "COCO-InstanceSegmentation" / row["config"]).is_file()
        assert row["paper_fps"] > 0


def test_bad_rows_are_named(tmp_path):
    rows = tmp_path / "rows.yaml"
    rows.write_text("good:\n  MODEL:\n    YOLACT: {MATCHER: ATSS}\nbad:\n  MODEL:\n    NOPE: 1\n")
    cfg = load_config()
    assert merge_config_row(cfg, str(rows), "good").MODEL.YOLACT.MATCHER == "ATSS"
    with pytest.raises(ConfigError, match=r"rows\.yaml: row 'bad'.*NOPE"):
        merge_config_row(cfg, str(rows), "bad")
    with pytest.raises(ConfigError, match=r"rows\.yaml: no row 'other'; rows: \['bad', 'good'\]"):
        merge_config_row(cfg, str(rows), "other")
    rows.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping from row name"):
        load_rows(str(rows))
    rows.write_text("a: [1\n")
    with pytest.raises(ConfigError, match="not valid yaml"):
        load_rows(str(rows))
    with pytest.raises(ConfigError, match="not found"):
        load_rows(str(tmp_path / "missing.yaml"))


# ----------------------------------------------------- LR steps that follow SOLVER.MAX_ITER
def test_relative_steps_follow_max_iter():
    cfg = _cfg(BASE_LR=0.01, STEPS=(), MAX_ITER=20, WARMUP_ITERS=0, GAMMA=0.1)
    cfg.SOLVER.YOLACT.RELATIVE_STEPS = (0.5, 0.75)
    lrs = _lrs(cfg, 20)
    assert math.isclose(lrs[9], 0.01) and math.isclose(lrs[10], 0.001)
    assert math.isclose(lrs[14], 0.001) and math.isclose(lrs[15], 0.0001, rel_tol=1e-6)


def test_quick_config_schedule_follows_a_max_iter_override():
    """Overriding only SOLVER.MAX_ITER keeps the quick configs' step at 3/4 of the run."""
    quick = str(REPO / "configs" / "quick_schedules" / "yolact_R_50_FPN_quick_atss_maiou.yaml")
    assert resolve_lr_steps(load_config(quick)) == (3,)
    assert resolve_lr_steps(load_config(quick, ["SOLVER.MAX_ITER", "20"])) == (15,)
    # Explicit STEPS still win.
    cfg = load_config(quick, ["SOLVER.MAX_ITER", "20", "SOLVER.STEPS", "(12,)"])
    assert resolve_lr_steps(cfg) == (12,)


def test_steps_far_before_or_beyond_max_iter_warn(caplog):
    cfg = _cfg(STEPS=(3,), MAX_ITER=20)
    with caplog.at_level("WARNING", logger="mayolact.engine.trainer"):
        assert resolve_lr_steps(cfg) == (3,)
    assert "15% of SOLVER.MAX_ITER (20)" in caplog.text
    caplog.clear()
    cfg = _cfg(STEPS=(15, 30), MAX_ITER=20)
    with caplog.at_level("WARNING", logger="mayolact.engine.trainer"):
        assert resolve_lr_steps(cfg) == (15,)
    assert "steps >= SOLVER.MAX_ITER (20) are ignored" in caplog.text
    caplog.clear()
    cfg = _cfg(STEPS=(15,), MAX_ITER=20)  # a sensible schedule: silent
    with caplog.at_level("WARNING", logger="mayolact.engine.trainer"):
        assert resolve_lr_steps(cfg) == (15,)
    assert not caplog.text


@pytest.mark.parametrize("fractions", [(0.0,), (1.0,), (0.5, 1.5)])
def test_relative_steps_outside_0_1_name_the_key(fractions):
    cfg = _cfg(STEPS=(), MAX_ITER=20)
    cfg.SOLVER.YOLACT.RELATIVE_STEPS = fractions
    with pytest.raises(ValueError, match="SOLVER.YOLACT.RELATIVE_STEPS"):
        resolve_lr_steps(cfg)


def test_relative_steps_of_a_tiny_run_are_silent(caplog):
    cfg = _cfg(STEPS=(), MAX_ITER=2)
    cfg.SOLVER.YOLACT.RELATIVE_STEPS = (0.75,)  # 1.5 rounds to 2 = MAX_ITER: no step
    with caplog.at_level("WARNING", logger="mayolact.engine.trainer"):
        assert resolve_lr_steps(cfg) == ()
    assert not caplog.text


# -------------------------------------------------------------- the trainer around DefaultTrainer
def test_metrics_json_is_strict_json(tmp_path):
    """A NaN or infinite scalar (AP without a detection, a diverged loss) is written as null."""
    from detectron2.utils.events import EventStorage

    from mayolact.utils.events import StrictJSONWriter

    path = tmp_path / "metrics.json"
    writer = StrictJSONWriter(str(path))
    with EventStorage(start_iter=4) as storage:
        storage.put_scalars(total_loss=float("inf"), lr=0.5, smoothing_hint=False)
        storage.put_scalar("segm/AP", float("nan"), smoothing_hint=False)
        writer.write()
        storage.iter = 5
        storage.put_scalar("lr", 0.25, smoothing_hint=False)
        writer.write()
    writer.close()

    rows = [strict_json(line) for line in path.read_text().splitlines()]
    assert rows == [{"iteration": 4, "lr": 0.5, "segm/AP": None, "total_loss": None},
                    {"iteration": 5, "lr": 0.25}]


def test_trainer_of_ones_own_checks_the_run_once(tmp_path, count_checks):
    """``Trainer(cfg)`` in a script of one's own: the checks run once (the datasets, the classes,
    and the output folder in resume_or_load); the sampler the loader draws from is the trainer's
    own (its position goes into checkpoints); the model is not patched into DDP on one process."""
    from mayolact.data.samplers import ResumableTrainingSampler
    from mayolact.engine.trainer import Trainer

    from common import QUICK_CONFIG

    cfg = load_config(str(QUICK_CONFIG), [
        "DATASETS.TRAIN", "('mayolact_shapes_train',)", "DATASETS.TEST", "('mayolact_shapes_val',)",
        "MODEL.YOLACT.NUM_CLASSES", "8", "INPUT.YOLACT.SIZE", "128", "SOLVER.IMS_PER_BATCH", "2",
        "OUTPUT_DIR", str(tmp_path)])
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    # DATASETS.TRAIN and DATASETS.TEST once each.
    assert count_checks == {"check_datasets_registered": 2, "check_num_classes": 2,
                            "check_output_dir": 1}
    assert isinstance(trainer.train_sampler, ResumableTrainingSampler)
    stream = [h for h in trainer._hooks if type(h).__name__ == "DataStreamPosition"]
    assert len(stream) == 1 and stream[0].sampler is trainer.train_sampler
    assert isinstance(trainer.model, torch.nn.Module) and not hasattr(trainer.model, "module")


def test_project_code_patches_nothing_at_run_time():
    """Detectron2 is reused by subclassing: no mock patching and no import hooks in the package
    or the tools."""
    for path in sorted((REPO / "projects").rglob("*.py")) + sorted((REPO / "tools").glob("*.py")):
        text = path.read_text()
        for banned in ("unittest.mock", "from unittest import mock", "sys.meta_path"):
            assert banned not in text, f"{path.relative_to(REPO)}: {banned}"
