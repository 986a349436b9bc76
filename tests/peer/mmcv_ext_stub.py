"""Stand-in for mmcv's compiled extension ``mmcv._ext`` in the mmdetection peer of the tests.

``mmcv-lite`` has no compiled ops, yet importing ``mmcv.ops`` (which mmdetection does for every
model) looks each op up in ``mmcv._ext``. YOLACT's inference calls none of them (its NMS is Fast NMS
in plain PyTorch). Importing this module installs it as ``mmcv._ext``: every op name resolves to a
function that raises, so no result can ever come through the stand-in.
"""
import sys


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)

    def missing(*args, **kwargs):
        raise NotImplementedError(f"mmcv._ext.{name}: compiled mmcv op called in the peer test")

    missing.__name__ = name
    return missing


sys.modules["mmcv._ext"] = sys.modules[__name__]
