#!/usr/bin/env python
"""Train and evaluate YOLACT / maYOLACT with Detectron2.

The standard Detectron2 project script: ``DefaultTrainer`` with YOLACT's mapper, optimizer (global
gradient clip), epoch schedules and COCO AP + oLRP evaluation (``mayolact.engine.Trainer``).

Examples::

    python tools/train_net.py --config-file configs/COCO-InstanceSegmentation/mayolact_R_50_FPN_550.yaml \
        --num-gpus 4
    python tools/train_net.py --config-file <cfg> --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file configs/quick_schedules/yolact_R_50_FPN_quick_atss_maiou.yaml \
        MODEL.DEVICE cpu
"""
import logging
import sys

from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

import mayolact  # noqa: F401  (registers the model, backbones and datasets)
from mayolact.checkpoint import YOLACTCheckpointer
from mayolact.config import ConfigError, load_config
from mayolact.engine import Trainer


def setup(args):
    """Create the config from ``args`` and run Detectron2's default setup (logging, output dir)."""
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        YOLACTCheckpointer.from_config(cfg, model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv=None):
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    try:
        load_config(args.config_file, args.opts)  # fail here, not in each worker, on a bad config
        return launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except ConfigError as e:
        logging.getLogger("mayolact").error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
