"""An exponential moving average (EMA) of a model's weights, kept beside training (``train.py --use_ema``)."""
import copy

import paddle


class ModelEMA:
    """A copy of ``model`` whose floating-point state follows the trained model as an exponential moving average.

    After training iteration ``step`` (counted from 1, over the whole run, resumed or not) every floating-point
    entry of the state dict (parameters and buffers such as BatchNorm's running mean and variance) becomes::

        ema = decay_t * ema + (1 - decay_t) * weight,   decay_t = min(1 - 1 / (step + 1), decay)

    which is PaddleSeg 2.8's ``--use_ema`` rule: the average starts as a plain mean of the first weights (decay 1/2,
    2/3, 3/4, ...) and settles at ``decay`` from step 999 on. Entries that are not floating point keep the copy's
    own value, as PaddleSeg's.

    Args:
        model (nn.Layer): The model being trained; it is deep-copied once (the copy holds the average, in eval
            mode and without gradients) and its current weights are the average's starting point.
        decay (float, optional): The largest decay, reached once ``1 - 1 / (step + 1)`` exceeds it. PaddleSeg's
            value. Default: 0.999.
    """

    def __init__(self, model, decay=0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay!r}")
        self.decay = decay
        self.model = copy.deepcopy(model)
        self.model.eval()
        for param in self.model.parameters():
            param.stop_gradient = True
        self.reset(model)

    def _pairs(self, model):
        """(own tensor, the model's tensor) for every floating-point state entry."""
        source = model.state_dict()
        for key, own in self.model.state_dict().items():
            if paddle.is_floating_point(own):
                yield own, source[key].detach().astype(own.dtype)

    @paddle.no_grad()
    def reset(self, model):
        """Make the average equal to ``model``'s current weights (the start of a run)."""
        for own, value in self._pairs(model):
            paddle.assign(value, output=own)

    @paddle.no_grad()
    def update(self, model, step):
        """Move the average towards ``model``'s weights after training iteration ``step`` (1-based)."""
        decay = min(1.0 - 1.0 / (step + 1), self.decay)
        for own, value in self._pairs(model):
            paddle.assign(own * decay + value * (1.0 - decay), output=own)

    def state_dict(self):
        return self.model.state_dict()
