"""Registering the released sizes of a backbone (``VAN_B0``, ``MSCAN_T``, ``HRNet_W18`` ...) as factories of its
class."""
from paddle_models.errors import UserError
from paddle_models.registry import register_backbone, register_variant

__all__ = ['backbone_variant']


def backbone_variant(cls, name, doc, defaults=None, **fixed):
    """Register ``name`` in ``manager.BACKBONES``: a factory building ``cls(**fixed, **kwargs)``.

    Args:
        cls (type): The backbone class.
        name (str): The registered name (also the factory's ``__name__``).
        doc (str): The factory's docstring.
        defaults (dict|None): Keyword arguments a caller may override (MSCAN-L's drop path rate).
        **fixed: Keyword arguments that make the size (widths, depths). Passing one of them to the factory is a
            UserError "<name>: <key> is fixed by the variant; use <cls> to set it".

    Returns:
        function: The registered factory.
    """
    defaults = dict(defaults or {})

    def build(**kwargs):
        clash = sorted(set(kwargs) & set(fixed))
        if clash:
            raise UserError(f"{name}: {clash[0]} is fixed by the variant; use {cls.__name__} to set it")
        return cls(**fixed, **dict(defaults, **kwargs))

    build.__module__ = cls.__module__  # the variant belongs to its class's file (where its converters live)
    return register_variant(register_backbone, build, name, doc)
