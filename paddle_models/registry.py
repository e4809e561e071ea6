"""Registering our components in PaddleSeg's component manager.

PaddleSeg's ``ComponentManager.add_component`` warns when a name exists already.  Our components are meant to
replace PaddleSeg's entries of the same name (``HarDNet``, ``CrossEntropyLoss`` ...) so that unchanged PaddleSeg
YAML files build our code; these decorators replace an entry quietly.
"""
import inspect

from paddleseg.cvlibs import manager

from paddle_models.errors import UserError
from paddle_models.utils.validate import did_you_mean


def _register(component_manager, component):
    if not (inspect.isclass(component) or inspect.isfunction(component)):
        raise TypeError(f"can only register a class or function, got {type(component)!r}")
    component_manager.components_dict[component.__name__] = component
    return component


def register_model(component):
    """Register ``component`` in ``manager.MODELS`` under its ``__name__``, replacing any previous entry."""
    return _register(manager.MODELS, component)


def register_backbone(component):
    """Register ``component`` in ``manager.BACKBONES``, replacing any previous entry."""
    return _register(manager.BACKBONES, component)


def register_loss(component):
    """Register ``component`` in ``manager.LOSSES``, replacing any previous entry."""
    return _register(manager.LOSSES, component)


def register_dataset(component):
    """Register ``component`` in ``manager.DATASETS``, replacing any previous entry."""
    return _register(manager.DATASETS, component)


def register_transform(component):
    """Register ``component`` in ``manager.TRANSFORMS``, replacing any previous entry."""
    return _register(manager.TRANSFORMS, component)


def register_variant(register, base, name, doc, build=None, rest_to=None, defaults=None, **fixed):
    """Register ``name`` with ``register`` (``register_backbone``, ``register_model``): a size variant of ``base``
    (``VAN_B0``, ``ResNet50_vd``, ``SegFormer_B0`` ...), the one way the package makes them.

    The variant is a factory taking keyword arguments. Its signature lists what it takes with the variant's values
    as defaults, so that ``core/config.py`` checks a config against it before anything is built. Called with an
    argument it does not take, with one the size fixes, positionally or without a required one, it raises a
    one-line UserError naming the variant and the argument:
    ``"VAN_B0 takes no argument 'depth' (did you mean depths?)"``,
    ``"VAN_B0: depths is fixed by the variant; use VAN to set it"``.

    Args:
        register (callable): The registry decorator.
        base (type): The class the variant is a size of (named in messages: set a fixed argument there).
        name (str): The registered name (also the factory's ``__name__``).
        doc (str): The factory's docstring.
        build (callable|None): What builds the variant from the arguments (``fixed`` and ``defaults`` merged in):
            ``base`` by default; a model variant passes a function building its backbone variant and the model.
        rest_to (callable|None): The registered backbone variant that ``build``'s ``**kwargs`` go to
            (``SegFormer_B0``'s ``MixVisionTransformer_B0``): its arguments are this variant's too, and what it
            fixes is fixed here.
        defaults (dict|None): Arguments the variant sets and a caller may override (MSCAN-L's drop path rate).
        **fixed: Arguments that make the size (widths, depths); a caller may not pass them.

    Returns:
        function: The registered factory.
    """
    build = build or base
    defaults = dict(defaults or {})
    values = dict(defaults, **fixed)
    params = {n: p.replace(kind=p.KEYWORD_ONLY, default=values.get(n, p.default))
              for n, p in inspect.signature(build).parameters.items()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    where_fixed = {key: base.__name__ for key in fixed}  # where a caller sets what the variant fixes
    if rest_to is not None:
        for n, p in inspect.signature(rest_to).parameters.items():
            params.setdefault(n, p)
        for key, owner in rest_to.variant_fixed.items():
            where_fixed.setdefault(key, f"{base.__name__} with a {owner} backbone")

    def factory(*args, **kwargs):
        if args:
            raise UserError(f"{name} takes keyword arguments only, got {len(args)} positional")
        for key in kwargs:
            if key in where_fixed:
                raise UserError(f"{name}: {key} is fixed by the variant; use {where_fixed[key]} to set it")
            if key not in params:
                raise UserError(f"{name} takes no argument {key!r}{did_you_mean(key, params)}")
        missing = [n for n, p in params.items() if p.default is p.empty and n not in kwargs]
        if missing:
            raise UserError(f"{name}: missing argument {missing[0]!r}")
        return build(**dict(values, **kwargs))

    factory.__module__ = base.__module__  # the variant belongs to its class's file (where its converters live)
    factory.__signature__ = inspect.Signature(list(params.values()))
    factory.variant_fixed = where_fixed
    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = doc
    return register(factory)


CONVERTERS = {}
"""{architecture name: {format: key-map function}}: the foreign checkpoints ``tools/convert_weights.py`` can convert.

Filled by ``register_converter`` beside each model family, so renaming a function cannot silently drop a format."""


def register_converter(fmt, *arch_names):
    """Register the decorated key map ``fn(state, arch) -> (new_state, build_kwargs)`` as the ``fmt`` converter
    (e.g. ``'timm'``, ``'hf'``) of every architecture in ``arch_names`` (registered backbone or model names)."""
    if not arch_names:
        raise TypeError("register_converter needs at least one architecture name")

    def decorate(fn):
        for arch in arch_names:
            formats = CONVERTERS.setdefault(arch, {})
            if fmt in formats and formats[fmt] is not fn:
                raise ValueError(f"two {fmt!r} converters registered for {arch}")
            formats[fmt] = fn
        return fn
    return decorate
