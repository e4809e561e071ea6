"""A weighted combination of several losses applied to the same output (PaddleSeg's ``MixedLoss``).

Registered as ``MixedLoss`` with PaddleSeg 2.8.0's arguments and return value (the list of weighted parts, which our
engine and PaddleSeg's both add up), so that configs such as ``[RMILoss, CrossEntropyLoss]`` or
``[CrossEntropyLoss, LovaszSoftmaxLoss]`` build unchanged.
"""
import paddle.nn as nn

from paddle_models.errors import UserError
from paddle_models.registry import register_loss
from paddle_models.utils.validate import check_numbers

__all__ = ['MixedLoss']


@register_loss
class MixedLoss(nn.Layer):
    """``[coef[i] * losses[i](logits, labels) for each i]``.

    Args:
        losses (list): The loss layers (or callables ``(logits, labels) -> scalar``), each applied to the same
            logits and labels; a config gives them as a list of ``{type: ...}`` entries.
        coef (list[float]): One weight per loss.
    """

    def __init__(self, losses, coef):
        super().__init__()
        if not isinstance(losses, (list, tuple)) or not losses or not all(callable(loss) for loss in losses):
            raise UserError(f"MixedLoss: losses must be a non-empty list of losses, got {losses!r}")
        coef = check_numbers('MixedLoss', 'coef', coef)
        if len(coef) != len(losses):
            raise UserError(f"MixedLoss: coef has {len(coef)} entries but losses has {len(losses)}; give one coef "
                            f"per loss")
        self.losses = list(losses)
        self.coef = list(coef)

    def forward(self, logits, labels):
        """Returns the list of weighted losses (one per entry of ``losses``)."""
        return [loss(logits, labels) * coef for loss, coef in zip(self.losses, self.coef)]
