"""Meta-architectures: importing this package registers ``YOLACT`` in ``META_ARCH_REGISTRY``."""
from .yolact import YOLACT

__all__ = ["YOLACT"]
