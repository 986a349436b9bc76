"""Config keys of maYOLACT (every key the project reads is added here, one comment each) and the
one config loader of the tools, with the rows files of ``configs/rows/``."""
import math
import os
import re
from typing import Dict, List, Sequence, Tuple

__all__ = [
    "add_mayolact_config",
    "ConfigError",
    "load_config",
    "load_rows",
    "merge_config_row",
    "resolved_num_classes",
    "take_overrides",
]


def add_mayolact_config(cfg):
    """Add maYOLACT's options to a Detectron2 config, in place.

    Only new nodes are created (``MODEL.YOLACT``, ``INPUT.YOLACT``, ``SOLVER.YOLACT``); Detectron2's
    own defaults are left untouched. Calling it twice is harmless.

    Args:
        cfg (CfgNode): a config from ``detectron2.config.get_cfg()``.
    """
    if "YOLACT" in cfg.MODEL:
        return
    from detectron2.config import CfgNode as CN  # here: importing this module needs no torch

    _C = cfg

    # ---------------------------------------------------------------- model
    _C.MODEL.YOLACT = CN()
    y = _C.MODEL.YOLACT
    y.NUM_CLASSES = 0  # foreground classes (0: those of DATASETS.TRAIN); the classifier adds
                       # background
    y.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]  # backbone levels the shared head runs on
    y.NUM_PROTOTYPES = 32  # k, the number of prototype masks (and of coefficients per anchor)
    y.HEAD_NUM_CONVS = 1  # shared 3x3 conv+ReLU layers before the cls / box / coefficient convs
    y.PROTO_IN_FEATURE = "p3"  # backbone level the protonet and the semantic head run on
    y.PROTO_CHANNELS = 256  # channels of the protonet's hidden convs
    y.SEMSEG_HEAD = True  # train the auxiliary semantic-segmentation head (training only)

    # Anchor assignment.
    y.MATCHER = "ATSS"  # "ATSS" (adaptive training sample selection) or "FixedIoU" (YOLACT's)
    y.ATSS_TOPK = 9  # ATSS candidates per level and per GT, by centre distance
    y.ATSS_QUALITY = "maiou"  # ATSS proximity measure: "iou", "giou", "diou" or "maiou"
    y.ATSS_CENTER_EPS = 0.01  # an anchor centre must lie inside the GT box by more than this (px)
    y.MAIOU_BRUTEFORCE = False  # count mask pixels directly instead of integral images (Table 3)
    y.IOU_THRESHOLDS = [0.4, 0.5]  # FixedIoU: negative below the first, positive from the second
    y.IOU_LABELS = [0, -1, 1]  # FixedIoU: labels of the three IoU intervals
    y.ALLOW_LOW_QUALITY_MATCHES = True  # FixedIoU: each GT also takes its best anchor

    # YOLACT's own anchor geometry (used by YOLACTAnchorGenerator, the fixed-IoU baseline).
    y.ANCHOR_REFERENCE_SIZE = 550  # strides are REFERENCE_SIZE / REFERENCE_GRID at every scale
    y.ANCHOR_REFERENCE_GRID = [69, 35, 18, 9, 5]  # feature sizes of a 550 input, P3..P7

    # Box coder.
    y.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # (wx, wy, ww, wh) of Box2BoxTransform
    y.SCALE_CLAMP = math.log(1000.0 / 16)  # |dw|, |dh| are clamped to this before exp()

    # Losses.
    y.NEG_POS_RATIO = 3  # OHEM: hardest negatives kept per positive, per image
    y.CLS_LOSS_WEIGHT = 1.0  # weight of the OHEM softmax cross entropy
    y.BOX_LOSS_WEIGHT = 1.5  # weight of the SmoothL1 box loss
    y.SMOOTH_L1_BETA = 1.0  # beta of the SmoothL1 box loss
    y.MASK_LOSS_WEIGHT = 8.0  # mask BCE weight: 6.125 for fixed IoU, 8 for ATSS (paper, Sec. 4)
    y.SEMSEG_LOSS_WEIGHT = 1.0  # weight of the auxiliary semantic-segmentation loss
    y.MAX_MASKS_TRAIN = 100  # positives per image that train the mask branch (random subset)

    # Inference (detections kept per image: Detectron2's TEST.DETECTIONS_PER_IMAGE, COCO's limit
    # too).
    y.TOPK_CANDIDATES_PER_LEVEL = 1000  # anchors kept per level (by max foreground score) before
                                        # NMS
    y.SCORE_THRESH_TEST = 0.05  # detections must score above this
    y.NMS_TYPE = "fast"  # "fast" (YOLACT's Fast NMS, class-wise) or "standard" (batched_nms)
    y.NMS_THRESH_TEST = 0.5  # IoU threshold of either NMS
    y.NMS_TOPK_PER_CLASS = 200  # Fast NMS: candidates per class
    y.MASK_THRESHOLD = 0.5  # threshold on the sigmoid masks (after resizing) for pred_masks

    # CARAFE FPN (maYOLACT).
    y.CARAFE = CN()
    y.CARAFE.UP_KERNEL = 5  # k_up, reassembly kernel size
    y.CARAFE.UP_GROUP = 1  # groups of channels sharing one reassembly kernel
    y.CARAFE.ENCODER_KERNEL = 3  # k_enc, kernel size of the content encoder
    y.CARAFE.ENCODER_DILATION = 1  # dilation of the content encoder
    y.CARAFE.COMPRESSED_CHANNELS = 64  # channels after the 1x1 channel compressor

    # ResNet options beyond Detectron2's MODEL.RESNETS (which keeps depth, norm, stride, DCN
    # stages).
    y.DEFORM_INTERVAL = 1  # in DCN stages, every n-th block is deformable (YOLACT++ R-101: 3)
    y.RESNET_WIDTH_SCALE = 1.0  # multiplies every ResNet width (stem, bottleneck, output): CPU
                                # demos
    y.DCN_KERNEL = "auto"  # DCNv2 kernel: "auto" (torchvision's on CUDA, the vectorised "aten" one
                           # elsewhere), "aten", or "torchvision" (the bit-exact reference)

    # Loading MODEL.WEIGHTS.
    y.WEIGHTS_SKIP_CLASS_LAYERS = False  # fine-tuning: class layers may be absent/other-sized in
                                         # WEIGHTS

    # ----------------------------------------------------------------- data
    _C.DATASETS.YOLACT = CN()
    _C.DATASETS.YOLACT.COCO_JSON = []  # [[name, json_file, image_root], ...]: COCO sets to register

    _C.INPUT.YOLACT = CN()
    d = _C.INPUT.YOLACT
    d.SIZE = 550  # S: images are squashed to S x S (no aspect ratio kept) in training and test
    d.MIN_GT_SIZE = 4.0  # training GTs need width and height > this, in original pixels
    d.PHOTOMETRIC = True  # SSD photometric distortion (brightness, contrast, saturation, hue, swap)
    d.BRIGHTNESS_DELTA = 32  # brightness shift range +-delta
    d.CONTRAST_RANGE = (0.5, 1.5)  # contrast factor range
    d.SATURATION_RANGE = (0.5, 1.5)  # saturation factor range
    d.HUE_DELTA = 18  # hue shift range +-delta, in degrees
    d.EXPAND_PROB = 0.5  # probability of the zoom-out (Expand) step
    d.EXPAND_RATIO = (1.0, 4.0)  # canvas-size ratio range of Expand
    d.MIN_IOU_CROP = True  # SSD min-IoU random crop
    d.MIN_IOUS = (0.1, 0.3, 0.5, 0.7, 0.9)  # IoU thresholds the crop draws from (plus 'none',
                                            # 'any')
    d.MIN_CROP_SIZE = 0.3  # minimum crop side, relative to the image
    d.FLIP_PROB = 0.5  # horizontal flip probability
    d.INTEGRAL_IMAGES = True  # the train mapper emits per-instance integral images (for maIoU)
    d.MAX_RESAMPLE = 100  # training draws in a row without a GT left (each re-drawn) before an
                          # error

    # ----------------------------------------------------------- solver
    _C.SOLVER.YOLACT = CN()
    s = _C.SOLVER.YOLACT
    s.GLOBAL_CLIP_NORM = 35.0  # clip the global L2 norm of all gradients to this (0 disables)
    s.ITERS_PER_EPOCH = 0  # >0: step/cosine schedules change only at epoch boundaries (as mmdet)
    s.OPTIMIZER = "SGD"  # "SGD" (the paper's, with SOLVER.MOMENTUM) or "AdamW" (from-scratch CPU
                         # runs)
    s.OVERWRITE_CHECKPOINTS = False  # let a run without --resume start in an OUTPUT_DIR holding
                                     # checkpoints
    s.DIVERGENCE_WINDOW = 20  # losses per median of the divergence guard; also the iterations a
                              # periodic checkpoint waits before it is published
    s.DIVERGENCE_RISE = 3.0  # stop when the window's median total loss exceeds this times its
                             # lowest value in the run (0: off)
    s.DIVERGENCE_CEILING = 100.0  # stop when one total loss exceeds this times the median of the
                                  # run's first window (of the losses so far within it; 0: off)
    s.RELATIVE_STEPS = ()  # LR steps as fractions of SOLVER.MAX_ITER, used when SOLVER.STEPS is
                           # empty
    s.DETERMINISTIC = False  # SEED alone fixes the data stream; deterministic kernels (same
                             # threads: bit for bit)


    # ---------------------------------------------------------- evaluation
    _C.TEST.YOLACT = CN()
    t = _C.TEST.YOLACT
    t.COCO_BACKEND = "auto"  # COCO AP backend: "pycocotools", "faster_coco_eval" or "auto"
    t.LRP = True  # also report optimal LRP (oLRP) next to COCO AP
    t.LRP_TAU = 0.5  # IoU threshold of LRP's true positives
    t.MOB_RANGES = ()  # edges of GT mask-over-box ranges for AP per range, e.g. (0, 0.4, 0.6, 0.8,
                       # 1); () off
    t.OPTIMIZE = True  # where the model only infers: fold batch norms, channels-last (outputs move
                       # by float rounding); False: the bit-exact path
    t.MAX_IMAGE_PIXELS = 2048 * 2048  # YOLACTPredictor: larger images are shrunk to this many
                                      # pixels first, bounding the full-size masks (0: off)


def resolved_num_classes(cfg) -> int:
    """``MODEL.YOLACT.NUM_CLASSES`` of a config whose class count is resolved.

    The value 0 ("the training set's") is resolved once, when the config is loaded
    (:func:`load_config`, through :func:`mayolact.data.datasets.apply_dataset_config`); every part
    that needs the class count (model, mapper, trainer, checks) reads it through this function.

    Raises:
        ValueError: the value is still 0 (the dataset was not registered when the config was
            loaded, or the config did not go through :func:`load_config`), or negative.
    """
    n = cfg.MODEL.YOLACT.NUM_CLASSES
    if n > 0:
        return n
    if n < 0:
        raise ValueError(
            f"MODEL.YOLACT.NUM_CLASSES must be >= 1, or 0 for the training set's, got {n}")
    names = list(cfg.DATASETS.TRAIN) or list(cfg.DATASETS.TEST)
    raise ValueError(
        "MODEL.YOLACT.NUM_CLASSES is 0 (take it from the training set) but was not resolved: "
        + (f"dataset {names[0]!r} was not registered when the config was loaded"
           if names else "DATASETS.TRAIN and DATASETS.TEST are empty")
        + ". Load the config with mayolact.config.load_config (or call "
        "mayolact.data.datasets.apply_dataset_config(cfg)) after registering the dataset, or set "
        "MODEL.YOLACT.NUM_CLASSES to the number of foreground classes")


class ConfigError(ValueError):
    """A config file, a rows file or a command-line override could not be applied."""


#: A config key as a command line writes it: upper-case names joined by dots (``MODEL.WEIGHTS``).
_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def take_overrides(values: Sequence[str], opts: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Give back the ``KEY VALUE`` overrides that an option of several values took.

    An option with ``nargs="+"`` (``--format onnx``, ``--input a.jpg``) takes every word after it,
    so ``--format onnx MODEL.WEIGHTS w.pth`` would make ``MODEL.WEIGHTS`` a format. The overrides
    start at the first word that is a config key.

    Args:
        values: what the option took.
        opts: the overrides the parser found (after them on the command line).

    Returns:
        (the option's own values, the overrides in command-line order).
    """
    values = list(values)
    at = next((i for i, v in enumerate(values) if _CONFIG_KEY.match(str(v))), len(values))
    return values[:at], values[at:] + list(opts)


def load_config(config_file: str = "", opts: Sequence[str] = ()):
    """Detectron2's defaults + maYOLACT's keys + ``config_file`` (``_BASE_`` allowed) + ``opts``.

    The one config loader of the tools (``train_net``, ``demo``, the benchmarks, the study, the
    figures); the config is returned unfrozen. Last, the datasets of ``DATASETS.YOLACT.COCO_JSON``
    are registered and ``MODEL.YOLACT.NUM_CLASSES`` 0 becomes the training set's class count
    (:func:`mayolact.data.datasets.apply_dataset_config`).

    Why loading registers datasets: ``DATASETS.YOLACT.COCO_JSON`` is how a config declares data of
    one's own, and the config is only usable once those names exist: ``DATASETS.TRAIN`` refers to
    them and the class count of ``NUM_CLASSES`` 0 is read from them. Detectron2 does the same for
    its builtin names at import time. Every process that loads the config (each worker of a
    multi-process run) registers them, and registering the same name with the same files again
    changes nothing. For a config without this step, build it as Detectron2 does
    (``get_cfg()``, :func:`add_mayolact_config`, ``merge_from_file``) and call
    :func:`~mayolact.data.datasets.apply_dataset_config` when the data should be registered.

    Args:
        config_file: a yaml config; "" keeps the defaults.
        opts: ``KEY VALUE`` pairs merged last.

    Raises:
        ConfigError: naming the file (or the override) and the unknown or invalid key, or the
            dataset key and entry that cannot be used.
    """
    from detectron2.config import get_cfg

    from mayolact.data.datasets import apply_dataset_config

    cfg = get_cfg()
    add_mayolact_config(cfg)
    if config_file:
        if not os.path.isfile(config_file):
            raise ConfigError(f"{config_file}: config file not found")
        try:
            cfg.merge_from_file(config_file)
        except (KeyError, ValueError, AssertionError, TypeError) as e:
            raise ConfigError(f"{config_file}: {e}") from e
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, ValueError, AssertionError, TypeError) as e:
        raise ConfigError(f"command-line override {list(opts)}: {e}") from e
    try:
        return apply_dataset_config(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def load_rows(rows_file: str) -> Dict[str, Dict]:
    """The rows of a rows file: a yaml mapping from row name to a mapping (see ``configs/rows/``).

    Raises:
        ConfigError: naming the file when it is missing, not yaml, or not a mapping of mappings.
    """
    import yaml

    if not os.path.isfile(rows_file):
        raise ConfigError(f"{rows_file}: rows file not found")
    try:
        with open(rows_file) as f:
            rows = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{rows_file}: not valid yaml: {e}") from e
    if not isinstance(rows, dict) or not rows:
        raise ConfigError(f"{rows_file}: expected a mapping from row name to settings")
    for name, row in rows.items():
        if not isinstance(row, dict):
            raise ConfigError(f"{rows_file}: row '{name}' must be a mapping, got {row!r}")
    return rows


def merge_config_row(cfg, rows_file: str, name: str):
    """Merge row ``name`` of ``rows_file`` (a partial config, nested as in a config file) into cfg.

    Returns:
        cfg, merged in place.

    Raises:
        ConfigError: naming the file and the row when the row is unknown or sets an unknown or
            invalid key.
    """
    from detectron2.config import CfgNode as CN

    rows = load_rows(rows_file)
    if name not in rows:
        raise ConfigError(f"{rows_file}: no row '{name}'; rows: {sorted(rows)}")
    try:
        cfg.merge_from_other_cfg(CN(rows[name]))
    except (KeyError, ValueError, AssertionError, TypeError) as e:
        raise ConfigError(f"{rows_file}: row '{name}': {e}") from e
    return cfg
