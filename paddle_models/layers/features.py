"""Reading a backbone's outputs: which feature maps a head takes and how many channels they have.

Every backbone offers ``feat_channels`` (the channels of each map its forward returns); a model names the maps its
head reads with ``backbone_indices``. The check is written once here so every model words it the same way (the
vocabulary of ``paddle_models.utils.validate``).
"""
from paddle_models.errors import UserError
from paddle_models.utils.validate import check_backbone_indices

__all__ = ['backbone_channels']


def backbone_channels(owner, backbone, backbone_indices, length=None, min_length=1, allow_negative=False):
    """The validated ``backbone_indices`` and the channels of the backbone maps they pick.

    Args:
        owner (str): The model's name, for messages.
        backbone (nn.Layer): A backbone with ``feat_channels``.
        backbone_indices (list[int]): The indices from the config.
        length (int | tuple[int] | None): The number of indices the model needs (a tuple: any of those counts);
            None takes any count of at least ``min_length``.
        min_length (int): The fewest indices the model can use.
        allow_negative (bool): Accept Python's negative indices (``-1`` = the last map), as PaddleSeg's configs of
            that model do; they are returned as the equivalent non-negative indices.

    Returns:
        (list[int], list[int]): The indices and the channels of the picked maps.

    Raises:
        UserError: The backbone has no ``feat_channels``, or the indices are not ``length`` valid indices (one line
            naming the model, the argument, the backbone's number of outputs and the value).
    """
    channels = getattr(backbone, 'feat_channels', None)
    if channels is None:
        raise UserError(f"{owner}: the backbone {type(backbone).__name__} has no feat_channels")
    indices = check_backbone_indices(owner, backbone_indices, len(channels), length, min_length=min_length,
                                     allow_negative=allow_negative)
    return indices, [channels[i] for i in indices]
