"""Registering the released sizes of a backbone (``VAN_B0``, ``MSCAN_T``, ``HRNet_W18`` ...) as factories of its
class."""
import inspect

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
    # The class's arguments with the variant's values as defaults, so that a config's arguments are checked against
    # them before anything is built (core/config.py: check_arguments); giving a fixed one is refused by build.
    values = dict(defaults, **fixed)
    params = [p.replace(kind=p.KEYWORD_ONLY, default=values.get(n, p.default))
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) else p
              for n, p in inspect.signature(cls).parameters.items() if p.kind != p.VAR_POSITIONAL]
    build.__signature__ = inspect.Signature(params)
    return register_variant(register_backbone, build, name, doc)
