"""The deploy protocol: the form of a model that an export traces, asked of each layer.

A layer whose exported form differs from its training form says so with a method ``to_deploy(target)`` that
returns the layer to trace in its place: itself (possibly changed), or a new layer that shares or derives its
weights (a batch norm folded into its convolution, Mix-FFN's linear layers as 1x1 convolutions, SegFormer's summed
decoder, the pyramid modules' fused forms). :func:`deploy_form` deep-copies a model, puts the copy in eval mode
and asks every layer, top-down: a layer is asked before its children (a parent's form may take its children's
training-form weights, e.g. the ASPP folds its fusion block's batch norm itself), then the children of whatever it
returned are asked in turn. The user's model is never changed, and every ``forward`` has one behaviour per layer
object: no forward asks which kind of graph it is being traced into. This is the re-parameterisation pattern of
RepVGG-style code (timm's ``reparameterize``/``switch_to_deploy``).

:class:`DeployTarget` describes what the export writes: the program format Paddle traces (``program``: 'pir' on
Paddle 3, 'legacy' on Paddle 2.6 or under ``FLAGS_enable_pir_api=0``), the runtime that will run it
(``runtime``: 'paddle' for Paddle Inference, 'onnx' for paddle2onnx's model), whether batch norms are folded
(``fold_norms``) and whether resizes take the portable form Paddle Inference's oneDNN executor accepts
(``portable_resize``). ``core/export`` builds the target from the format it writes and traces the deploy form
inside :func:`tracing_for`, which sets the resize forms of ``layers/resize.py`` for the trace (the one place that
sets them). Every deploy form computes the same values as the model in eval mode (tests check each one).
"""
import contextlib
import copy
import dataclasses

import paddle.nn as nn

from paddle_models.errors import UserError
from paddle_models.layers.resize import trace_forms
from paddle_models.utils.validate import check_bool, check_choice

__all__ = ['DeployTarget', 'deploy_form', 'tracing_for', 'PROGRAMS', 'RUNTIMES']

PROGRAMS = ('pir', 'legacy')
RUNTIMES = ('paddle', 'onnx')


@dataclasses.dataclass(frozen=True)
class DeployTarget:
    """What an export traces for.

    Args:
        program (str): The static program format: 'pir' (Paddle 3) or 'legacy' (Paddle 2.6; Paddle 3 under
            ``FLAGS_enable_pir_api=0``, as tools/quantize.py and ``--format openvino`` trace). Default: 'pir'.
        runtime (str): 'paddle' (Paddle Inference) or 'onnx' (converted by paddle2onnx). Default: 'paddle'.
        fold_norms (bool): Fold each ``ConvBNAct``'s batch norm into its convolution. Default: False.
        portable_resize (bool): Resize with the ops Paddle Inference's oneDNN executor accepts under PIR
            (``layers/resize.py``); Paddle Inference only. Default: False.
    """
    program: str = 'pir'
    runtime: str = 'paddle'
    fold_norms: bool = False
    portable_resize: bool = False

    def __post_init__(self):
        check_choice('DeployTarget', 'program', self.program, PROGRAMS)
        check_choice('DeployTarget', 'runtime', self.runtime, RUNTIMES)
        check_bool('DeployTarget', 'fold_norms', self.fold_norms)
        check_bool('DeployTarget', 'portable_resize', self.portable_resize)
        if self.portable_resize and self.runtime != 'paddle':
            raise UserError("DeployTarget: portable_resize applies to the Paddle Inference runtime ('paddle') only, "
                            f"got runtime {self.runtime!r}")


def deploy_form(model, target):
    """A copy of ``model`` in eval mode in which every layer that defines ``to_deploy(target)`` is replaced by what
    it returns (see the module docstring); ``model`` itself is left as it was (weights, train/eval state).

    A layer may also be held, unregistered, in a plain list, tuple or dict attribute of a layer, for its forward
    (HRNet's transition ``ops`` and fusion ``paths``): those references are moved to the replacement too, so no
    forward reaches a layer the form no longer holds."""
    if not isinstance(target, DeployTarget):
        raise TypeError(f"deploy_form: target must be a DeployTarget, got {type(target).__name__}")
    form = copy.deepcopy(model)
    form.eval()
    replaced = {}  # id(layer) -> (layer, its form); the layer kept alive so that its id is not reused
    form = _converted(form, target, replaced)
    if replaced:
        for layer in form.sublayers(include_self=True):
            for name, value in list(vars(layer).items()):
                if name not in _LAYER_STATE and isinstance(value, (list, tuple, dict)):
                    relinked = _relinked(value, replaced)
                    if relinked is not value:
                        object.__setattr__(layer, name, relinked)
    form.eval()  # a form built by to_deploy is in eval mode too
    return form


# a Layer's own bookkeeping, never a user's container of layers
_LAYER_STATE = frozenset({'_parameters', '_buffers', '_sub_layers', '_non_persistable_buffer_names_set',
                          '_forward_pre_hooks', '_forward_post_hooks', '_loaddict_holder', '_casted_by_pure_fp16',
                          '_state_dict_hooks'})


def _converted(layer, target, replaced):
    """``layer``'s deploy form, its children (and theirs) converted in turn; each replaced layer recorded in
    ``replaced``."""
    to_deploy = getattr(layer, 'to_deploy', None)
    if callable(to_deploy):
        new = to_deploy(target)
        if new is not layer:
            replaced[id(layer)] = (layer, new)
        layer = new
    for name, child in list(layer.named_children()):
        new = _converted(child, target, replaced)
        if new is not child:
            setattr(layer, name, new)
    return layer


def _relinked(value, replaced):
    """``value`` with every layer in ``replaced`` swapped for its form, through nested lists (changed in place),
    tuples (rebuilt) and dicts (changed in place); ``value`` itself where nothing changed."""
    if isinstance(value, nn.Layer):
        return replaced[id(value)][1] if id(value) in replaced else value
    if isinstance(value, list):
        items = [_relinked(v, replaced) for v in value]
        if any(a is not b for a, b in zip(items, value)):
            value[:] = items
        return value
    if isinstance(value, tuple):
        items = tuple(_relinked(v, replaced) for v in value)
        return items if any(a is not b for a, b in zip(items, value)) else value
    if isinstance(value, dict):
        for key, item in list(value.items()):
            new = _relinked(item, replaced)
            if new is not item:
                value[key] = new
        return value
    return value


@contextlib.contextmanager
def tracing_for(target):
    """The context an export traces ``deploy_form(model, target)`` in: the resize forms of ``layers/resize.py``
    that ``target`` asks for (the portable resize for Paddle Inference, the ONNX forms for paddle2onnx), restored
    on exit. Forms that a single layer owns are chosen by its ``to_deploy``; resizing is a free function that
    model code calls everywhere, so its form is set here, for the duration of one trace."""
    with trace_forms(portable=target.portable_resize, onnx=target.runtime == 'onnx'):
        yield
