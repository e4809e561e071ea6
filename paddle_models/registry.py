"""Registering our components in PaddleSeg's component manager.

PaddleSeg's ``ComponentManager.add_component`` warns when a name exists already.  Our components are meant to
replace PaddleSeg's entries of the same name (``HarDNet``, ``CrossEntropyLoss`` ...) so that unchanged PaddleSeg
YAML files build our code; these decorators replace an entry quietly.
"""
import inspect

from paddleseg.cvlibs import manager


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


def register_variant(register, build, name, doc):
    """Name a variant factory (``VAN_B0`` building ``VAN`` with fixed widths), give it its docstring and register
    it with ``register`` (e.g. ``register_backbone``)."""
    build.__name__ = build.__qualname__ = name
    build.__doc__ = doc
    return register(build)


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
