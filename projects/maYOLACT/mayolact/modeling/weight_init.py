"""Weight initialisation shared by the FPNs, the head and the protonet.

The official code initialises every such conv xavier-uniform (gain 1) with zero bias
(docs/REFERENCE.md §11, "Initialisation"). fvcore's ``c2_xavier_fill`` is Caffe2's
XavierFill, a different (fan-in only) uniform bound, so it is not used here.
"""
from torch import nn

__all__ = ["xavier_init_convs"]


def xavier_init_convs(*modules: nn.Module) -> None:
    """Xavier-uniform (gain 1) weights and zero biases for every ``nn.Conv2d`` in ``modules``.

    Convs are visited in ``module.modules()`` order, module after module (this fixes the random
    stream, so the order is part of the behaviour).

    Args:
        modules (nn.Module): modules (or None, skipped) whose convolutions are initialised.
    """
    for module in modules:
        if module is None:
            continue
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
