"""Training glue on top of Detectron2's ``DefaultTrainer``: optimizer, schedules, loaders,
evaluators.

Only the pieces where YOLACT's recipe differs from Detectron2's defaults are written here:

* SGD with the **global** L2-norm gradient clip of mmdet (``clip_grad_norm_`` over all parameters at
  35); Detectron2's own ``CLIP_TYPE: norm`` clips each parameter separately. AdamW, with the same
  clip, for from-scratch CPU runs (``SOLVER.YOLACT.OPTIMIZER``).
* Schedules that change only at epoch boundaries (``SOLVER.YOLACT.ITERS_PER_EPOCH``), as mmdet's
  by-epoch step and cosine policies do, behind Detectron2's linear warmup.
* The YOLACT dataset mapper in both loaders, and COCO AP + oLRP evaluation.
* Runs that survive faults (:mod:`mayolact.engine.hooks`): a divergence guard, checkpoints published
  only once their weights gave a healthy loss, a checkpoint and a clean exit on SIGTERM / SIGINT,
  workers that stop with their launcher, and a resumed run that continues the data stream.
"""
import logging
import math
import os
import weakref
from typing import List, Optional

import numpy as np
import torch
from detectron2.data import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import (
    AMPTrainer,
    DefaultTrainer,
    SimpleTrainer,
    TrainerBase,
    create_ddp_model,
    hooks,
)
from detectron2.solver import LRMultiplier, WarmupParamScheduler
from detectron2.solver import build_lr_scheduler as d2_build_lr_scheduler
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import JSONWriter
from detectron2.utils.logger import setup_logger
from fvcore.common.param_scheduler import ParamScheduler

from mayolact.checkpoint.checkpointer import YOLACTCheckpointer
from mayolact.config.config import resolved_num_classes
from mayolact.engine.checks import check_output_dir, preflight
from mayolact.engine.hooks import (
    DataStreamPosition,
    DivergenceGuard,
    GracefulStop,
    SaveOnError,
    StagedPeriodicCheckpointer,
    watch_parent,
)
from mayolact.utils.determinism import data_stream_seeds, is_deterministic
from mayolact.utils.events import StrictJSONWriter

__all__ = [
    "GlobalNormClipSGD",
    "GlobalNormClipAdamW",
    "EpochCosineParamScheduler",
    "build_yolact_optimizer",
    "build_yolact_lr_scheduler",
    "resolve_lr_steps",
    "Trainer",
]

logger = logging.getLogger(__name__)


class _GlobalNormClipMixin:
    """Clips the global L2 norm of all gradients (``clip_grad_norm_``) before the optimizer's step.

    Args:
        params: parameters or parameter groups, as for the optimizer.
        max_norm (float): the largest allowed global gradient norm; 0 disables clipping.
        **kwargs: the optimizer's other arguments.
    """

    def __init__(self, params, *, max_norm: float, **kwargs):
        super().__init__(params, **kwargs)
        if max_norm < 0 or not math.isfinite(max_norm):
            raise ValueError(f"SOLVER.YOLACT.GLOBAL_CLIP_NORM must be >= 0, got {max_norm}")
        self.max_norm = float(max_norm)
        self.last_grad_norm = None

    @torch.no_grad()
    def step(self, closure=None):
        if self.max_norm > 0:
            grads = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
            if grads:
                self.last_grad_norm = torch.nn.utils.clip_grad_norm_(grads, self.max_norm)
        return super().step(closure)


class GlobalNormClipSGD(_GlobalNormClipMixin, torch.optim.SGD):
    """``torch.optim.SGD`` after a global-norm gradient clip (mmdet's YOLACT recipe).

    Args:
        params: parameters or parameter groups, as for ``torch.optim.SGD``.
        max_norm (float): the largest allowed global gradient norm; 0 disables clipping.
        **kwargs: the other ``torch.optim.SGD`` arguments.
    """


class GlobalNormClipAdamW(_GlobalNormClipMixin, torch.optim.AdamW):
    """``torch.optim.AdamW`` after a global-norm gradient clip (``SOLVER.YOLACT.OPTIMIZER: AdamW``).

    Not the paper's optimizer: it is for models trained from scratch in minutes, where SGD with the
    global clip spends most of its step on the stem (whose gradient norm is tens of times that of
    the head early on) and can sit for hundreds of iterations at a constant classifier.

    Args:
        params: parameters or parameter groups, as for ``torch.optim.AdamW``.
        max_norm (float): the largest allowed global gradient norm; 0 disables clipping.
        **kwargs: the other ``torch.optim.AdamW`` arguments.
    """


class EpochCosineParamScheduler(ParamScheduler):
    """Cosine annealing that is constant inside an epoch (mmdet's by-epoch ``CosineAnealing``).

    For epoch index ``e = floor(it / iters_per_epoch)`` of ``E = max_iter / iters_per_epoch`` epochs
    the value is ``end + 0.5 * (start - end) * (1 + cos(pi * e / E))``.

    Args:
        start_value (float): value at epoch 0.
        end_value (float): value the cosine tends to (reached after the last epoch).
        max_iter (int): total iterations.
        iters_per_epoch (int): iterations of one epoch.
    """

    def __init__(self, start_value: float, end_value: float, max_iter: int, iters_per_epoch: int):
        if iters_per_epoch <= 0 or max_iter <= 0:
            raise ValueError("EpochCosineParamScheduler needs max_iter > 0 and iters_per_epoch > 0")
        self._start, self._end = start_value, end_value
        self._max_iter, self._ipe = max_iter, iters_per_epoch

    def __call__(self, where: float) -> float:
        it = where * self._max_iter
        epoch = math.floor(it / self._ipe + 1e-9)
        num_epochs = self._max_iter / self._ipe
        return (self._end
                + 0.5 * (self._start - self._end) * (1 + math.cos(math.pi * epoch / num_epochs)))


def build_yolact_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer of ``SOLVER.YOLACT.OPTIMIZER`` with the global-norm clip of
    ``SOLVER.YOLACT.GLOBAL_CLIP_NORM`` and weight decay as configured (the YOLACT configs decay
    every parameter).

    ``"SGD"`` (the paper's): ``SOLVER.MOMENTUM`` and ``SOLVER.NESTEROV`` apply. ``"AdamW"``: betas
    (0.9, 0.999), and ``SOLVER.WEIGHT_DECAY`` is AdamW's decoupled decay.

    Raises:
        ValueError: an unknown ``SOLVER.YOLACT.OPTIMIZER``.
    """
    name = cfg.SOLVER.YOLACT.OPTIMIZER
    if name not in ("SGD", "AdamW"):
        raise ValueError(f"SOLVER.YOLACT.OPTIMIZER must be 'SGD' or 'AdamW', got {name!r}")
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    if name == "SGD":
        opt_cls = GlobalNormClipSGD
        extra = {"momentum": cfg.SOLVER.MOMENTUM, "nesterov": cfg.SOLVER.NESTEROV}
    else:
        opt_cls, extra = GlobalNormClipAdamW, {}
    optimizer = opt_cls(
        params,
        max_norm=cfg.SOLVER.YOLACT.GLOBAL_CLIP_NORM,
        lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        **extra,
    )
    # Detectron2's per-parameter clip stays available (off in our configs).
    return maybe_add_gradient_clipping(cfg, optimizer)


def resolve_lr_steps(cfg) -> tuple:
    """The multi-step milestones (iterations) a run of ``cfg`` uses, with a warning where they lie
    where they cannot be meant.

    ``SOLVER.STEPS`` when it is not empty; otherwise ``SOLVER.YOLACT.RELATIVE_STEPS`` times
    ``SOLVER.MAX_ITER`` (rounded), so that a config written that way (the quick configs) keeps its
    schedule when only ``SOLVER.MAX_ITER`` is overridden. Steps >= ``SOLVER.MAX_ITER`` are dropped
    with a warning (they never take effect, and fvcore rejects a step equal to it); steps that all
    end before half of ``SOLVER.MAX_ITER`` are kept with a warning (the LR is then at its last value
    for most of the run, the usual sign of a ``MAX_ITER`` override that left ``STEPS`` behind).

    Raises:
        ValueError: a relative step outside (0, 1).
    """
    max_iter = cfg.SOLVER.MAX_ITER
    steps = tuple(int(s) for s in cfg.SOLVER.STEPS)
    if not steps:
        fractions = tuple(cfg.SOLVER.YOLACT.RELATIVE_STEPS)
        bad = [f for f in fractions if not 0.0 < f < 1.0]
        if bad:
            raise ValueError(
                f"SOLVER.YOLACT.RELATIVE_STEPS {fractions}: fractions of SOLVER.MAX_ITER must lie "
                f"in (0, 1), got {bad}"
            )
        # A run of a few iterations can round a step onto MAX_ITER: no step then, silently.
        return tuple(sorted({s for s in (max(1, round(f * max_iter)) for f in fractions)
                             if s < max_iter}))
    kept = tuple(s for s in steps if s < max_iter)
    if kept != steps:
        logger.warning(
            "SOLVER.STEPS %s: steps >= SOLVER.MAX_ITER (%d) are ignored", steps, max_iter
        )
    elif kept and max(kept) < 0.5 * max_iter:
        logger.warning(
            "SOLVER.STEPS %s: the last LR step is at %.0f%% of SOLVER.MAX_ITER (%d); after it the "
            "LR stays at %g for the rest of the run. Set SOLVER.STEPS (or empty it and set "
            "SOLVER.YOLACT.RELATIVE_STEPS) to move them.",
            kept, 100.0 * max(kept) / max_iter, max_iter,
            cfg.SOLVER.BASE_LR * cfg.SOLVER.GAMMA ** len(kept),
        )
    return kept


def build_yolact_lr_scheduler(cfg, optimizer: torch.optim.Optimizer):
    """Detectron2's schedulers, except that ``WarmupCosineLR`` with
    ``SOLVER.YOLACT.ITERS_PER_EPOCH`` > 0 steps the cosine per epoch (as mmdet's by-epoch policy).
    Multi-step milestones come from :func:`resolve_lr_steps`: ``SOLVER.STEPS`` in iterations (the
    COCO configs put them on epoch boundaries) or ``SOLVER.YOLACT.RELATIVE_STEPS`` in fractions of
    ``SOLVER.MAX_ITER``."""
    ipe = cfg.SOLVER.YOLACT.ITERS_PER_EPOCH
    if cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupMultiStepLR":
        steps = resolve_lr_steps(cfg)
        logger.info("LR schedule: WarmupMultiStepLR, steps %s of %d iterations",
                    steps, cfg.SOLVER.MAX_ITER)
        if steps != tuple(cfg.SOLVER.STEPS):
            cfg = cfg.clone()
            cfg.defrost()
            cfg.SOLVER.STEPS = steps
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupCosineLR" or ipe <= 0:
        return d2_build_lr_scheduler(cfg, optimizer)
    end_value = cfg.SOLVER.BASE_LR_END / cfg.SOLVER.BASE_LR
    sched = EpochCosineParamScheduler(1.0, end_value, cfg.SOLVER.MAX_ITER, ipe)
    sched = WarmupParamScheduler(
        sched,
        cfg.SOLVER.WARMUP_FACTOR,
        min(cfg.SOLVER.WARMUP_ITERS / cfg.SOLVER.MAX_ITER, 1.0),
        cfg.SOLVER.WARMUP_METHOD,
        cfg.SOLVER.RESCALE_INTERVAL,
    )
    return LRMultiplier(optimizer, multiplier=sched, max_iter=cfg.SOLVER.MAX_ITER)


class Trainer(DefaultTrainer):
    """Detectron2's ``DefaultTrainer`` with YOLACT's data mapper, optimizer, schedule and
    evaluators.

    Differences from ``DefaultTrainer`` beyond the ``build_*`` methods:

    * the run is checked before anything is built (:mod:`mayolact.engine.checks`), unless the
      caller did it (``checked=True``, as the tools do once, before starting workers);
    * multi-process training on CPU (``--num-gpus N`` without GPUs, gloo backend) works:
      ``__init__`` follows ``DefaultTrainer.__init__`` step by step but wraps a CPU model with
      ``create_ddp_model(..., device_ids=None)`` (``DefaultTrainer`` passes ``[local_rank]``, which
      CPU ``DistributedDataParallel`` rejects);
    * the trainer keeps the training sampler it made (:attr:`train_sampler`): its position goes
      into every checkpoint, so a resumed run continues the data stream;
    * ``metrics.json`` is strict JSON (:class:`~mayolact.utils.events.StrictJSONWriter`: NaN as
      null).

    Subclasses that evaluate by themselves after training set ``eval_after_train = False``: then
    no ``EvalHook`` is registered and the test set is not run twice.

    Faults (see :mod:`mayolact.engine.hooks`): starting without ``resume`` over another run's
    checkpoints stops (:func:`mayolact.engine.checks.check_output_dir`); resuming continues the
    sampler's stream and reseeds the augmentations by iteration; Detectron2's
    ``PeriodicCheckpointer`` becomes a :class:`StagedPeriodicCheckpointer` behind a
    :class:`DivergenceGuard`; a :class:`GracefulStop` saves and exits on SIGTERM / SIGINT; workers
    of a multi-process run watch their launcher.

    Attributes:
        train_sampler (ResumableTrainingSampler or None): the training loader's sampler (None for
            Detectron2's other ``DATALOADER.SAMPLER_TRAIN``: a resumed run then starts the data
            stream afresh).
    """

    #: Register Detectron2's ``EvalHook`` (evaluation every ``TEST.EVAL_PERIOD`` and after
    #: training).
    eval_after_train = True
    #: How a run stopped by SIGTERM / SIGINT goes on (the end of the stop's log line): the tool's
    #: way, e.g. train_net's ``--resume``.
    resume_hint = "continue it with --resume"

    def __init__(self, cfg, *, checked: bool = False):
        """
        Args:
            cfg (CfgNode): the run's config (from :func:`mayolact.config.load_config`).
            checked (bool): the caller ran :func:`mayolact.engine.checks.preflight` on ``cfg``
                with its resume flag (the tools do, once); otherwise the trainer runs the checks
                now and :func:`~mayolact.engine.checks.check_output_dir` in
                :meth:`resume_or_load`.
        """
        TrainerBase.__init__(self)  # DefaultTrainer.__init__'s steps follow, in its order
        self._checked = checked
        if not checked:
            preflight(cfg, train=True, resume=None)
        if comm.get_world_size() > 1:
            watch_parent()  # a worker whose launcher dies stops (with a checkpoint once training)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        dataset = self.build_train_dataset(cfg)
        self.train_sampler = self.build_train_sampler(cfg, len(dataset))
        data_loader = self.build_train_loader(cfg, dataset=dataset, sampler=self.train_sampler)

        # CPU DistributedDataParallel takes no device ids; Detectron2's default is [local_rank].
        cpu = torch.device(cfg.MODEL.DEVICE).type == "cpu"
        model = create_ddp_model(model, broadcast_buffers=False,
                                 **({"device_ids": None} if cpu else {}))
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(
            model, data_loader, optimizer
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.cfg = cfg
        self.checkpointer = self.build_checkpointer()
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.register_hooks(self.build_hooks())

    def build_checkpointer(self) -> YOLACTCheckpointer:
        """:class:`~mayolact.checkpoint.checkpointer.YOLACTCheckpointer` of the trained model,
        saving to ``OUTPUT_DIR`` with the trainer's state, as ``DefaultTrainer``'s checkpointer
        does; it loads ``MODEL.WEIGHTS`` in any format it recognises (torchvision, mmdetection,
        Detectron2)."""
        return YOLACTCheckpointer.from_config(
            self.cfg, self._trainer.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )

    def build_hooks(self):
        built = super().build_hooks()
        if not self.eval_after_train:
            built = [h for h in built if not isinstance(h, hooks.EvalHook)]
        return self._fault_tolerant_hooks(built)

    def build_writers(self):
        """Detectron2's writers (console, ``metrics.json``, tensorboard) with ``metrics.json`` in
        strict JSON (:class:`~mayolact.utils.events.StrictJSONWriter`)."""
        writers = []
        for w in super().build_writers():
            if type(w) is JSONWriter:
                w.close()
                w = StrictJSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"))
            writers.append(w)
        return writers

    def _fault_tolerant_hooks(self, built):
        """Detectron2's hooks with the save-on-error hook first, the checkpointer replaced by the
        staged one behind the divergence guard, the graceful stop right after it, and the
        data-stream position."""
        cfg = self.cfg
        s = cfg.SOLVER.YOLACT
        out, checkpoint_hook = [], None
        for h in built:
            if isinstance(h, hooks.PeriodicCheckpointer):  # main process only
                checkpoint_hook = StagedPeriodicCheckpointer(
                    h.checkpointer, h.period, h.max_iter, probation=s.DIVERGENCE_WINDOW)
                guard = DivergenceGuard.from_config(cfg)
                out += [guard, checkpoint_hook]
            else:
                out.append(h)
        # First: it marks an iteration complete before any later hook can fail.
        out.insert(0, SaveOnError(checkpoint_hook))
        # The stop check follows the checkpointer and precedes evaluation and writers.
        if checkpoint_hook is not None:
            at = out.index(checkpoint_hook) + 1
        else:
            later = (hooks.EvalHook, hooks.PeriodicWriter)
            at = next((i for i, h in enumerate(out) if isinstance(h, later)), len(out))
        out.insert(at, GracefulStop(checkpoint_hook, self.resume_hint))
        self._data_stream = None
        if self.train_sampler is not None:
            self._data_stream = DataStreamPosition(self.train_sampler, cfg.SOLVER.IMS_PER_BATCH)
            out.append(self._data_stream)
        else:
            logger.warning(
                "DATALOADER.SAMPLER_TRAIN %s: a resumed run starts the data stream afresh",
                cfg.DATALOADER.SAMPLER_TRAIN,
            )
        return out

    def resume_or_load(self, resume=True):
        """Detectron2's ``resume_or_load`` (``resume``: the newest readable checkpoint of
        ``OUTPUT_DIR`` with everything it holds), after the output-folder guard (unless the caller
        checked the run); a resumed run continues the sampler's stream and reseeds the random
        augmentations by iteration.

        Raises:
            mayolact.engine.checks.PreflightError: ``resume`` is False and ``OUTPUT_DIR`` holds
                another run's checkpoints (unless ``SOLVER.YOLACT.OVERWRITE_CHECKPOINTS``).
        """
        if not self._checked:
            check_output_dir(self.cfg, resume)
        if comm.is_main_process() and hasattr(self.checkpointer, "remove_partial_saves"):
            self.checkpointer.remove_partial_saves()
        super().resume_or_load(resume=resume)
        if self.start_iter == 0:
            return
        stream = self._data_stream
        if stream is not None and not stream.restored:
            # A checkpoint without the stream's position: the images of the iterations it holds.
            stream.sampler.set_position(self.start_iter * self.cfg.SOLVER.IMS_PER_BATCH)
        if self.cfg.SEED >= 0:
            # The augmentations draw from the global RNGs, seeded once from SEED at setup: reseed
            # them from (SEED, rank, iteration) so that a resumed run does not replay the draws
            # of the first iterations.
            seq = np.random.SeedSequence([self.cfg.SEED, comm.get_rank(), self.start_iter])
            seed_all_rng(int(seq.generate_state(1)[0]) % 2**31)

    @classmethod
    def build_train_dataset(cls, cfg) -> List[dict]:
        """The dataset dicts of ``DATASETS.TRAIN`` (Detectron2's
        ``get_detection_dataset_dicts``), checked: their annotations, before anything reads them;
        that some image has a ground truth the mapper keeps
        (:func:`mayolact.data.dataset_mapper.check_trainable`)."""
        from mayolact.data.dataset_mapper import check_trainable
        from mayolact.data.validation import check_registered_datasets

        names = cfg.DATASETS.TRAIN
        check_registered_datasets(names)
        dicts = get_detection_dataset_dicts(
            names, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        )
        check_trainable(dicts, names, cfg.INPUT.YOLACT.MIN_GT_SIZE, resolved_num_classes(cfg))
        return dicts

    @classmethod
    def build_train_sampler(cls, cfg, size: int):
        """A :class:`~mayolact.data.samplers.ResumableTrainingSampler` over ``size`` images for
        ``DATALOADER.SAMPLER_TRAIN: TrainingSampler``; None for Detectron2's other samplers
        (``build_detection_train_loader`` builds them from the config). In deterministic mode its
        seed comes from ``SEED`` alone (:mod:`mayolact.utils.determinism`)."""
        from mayolact.data.samplers import ResumableTrainingSampler

        if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
            return None
        seed = data_stream_seeds(cfg, comm.get_rank())[0] if is_deterministic(cfg) else None
        return ResumableTrainingSampler(size, seed=seed)

    @classmethod
    def build_train_loader(cls, cfg, dataset: Optional[List[dict]] = None, sampler=None):
        """Detectron2's train loader with the YOLACT mapper behind a
        :class:`~mayolact.data.common.YOLACTMapDataset` (a seed per draw, images without a GT
        left re-drawn).

        Args:
            cfg: the run's config.
            dataset: dataset dicts (default: :meth:`build_train_dataset`).
            sampler: the loader's sampler; default: :meth:`build_train_sampler` when ``dataset``
                is not given, else the one Detectron2 builds from the config.
        """
        from detectron2.data import DatasetFromList

        from mayolact.data.common import YOLACTMapDataset
        from mayolact.data.dataset_mapper import YOLACTDatasetMapper

        if dataset is None:
            dataset = cls.build_train_dataset(cfg)
            if sampler is None:
                sampler = cls.build_train_sampler(cfg, len(dataset))
        mapper = YOLACTDatasetMapper(cfg, is_train=True)
        kwargs = build_detection_train_loader.from_config(
            cfg, mapper=mapper, dataset=dataset, sampler=sampler)
        kwargs["dataset"] = YOLACTMapDataset(
            DatasetFromList(dataset, copy=False), mapper,
            max_resample=cfg.INPUT.YOLACT.MAX_RESAMPLE, names=cfg.DATASETS.TRAIN)
        kwargs["mapper"] = None  # mapped by the dataset above
        # Deterministic mode: the workers' seeds come from SEED alone, not from the RNGs' state
        # after the model's initialisation (mayolact.utils.determinism).
        if is_deterministic(cfg):
            kwargs["seed"] = data_stream_seeds(cfg, comm.get_rank())[1]
        return build_detection_train_loader(**kwargs)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        from mayolact.data.dataset_mapper import YOLACTDatasetMapper
        from mayolact.data.validation import check_registered_datasets

        check_registered_datasets([dataset_name], for_evaluation=True)
        return build_detection_test_loader(
            cfg, dataset_name, mapper=YOLACTDatasetMapper(cfg, is_train=False)
        )

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_yolact_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_yolact_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        from mayolact.evaluation import build_mayolact_evaluator

        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_mayolact_evaluator(cfg, dataset_name, output_folder)

