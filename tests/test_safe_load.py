"""Weight files cannot run code (paddle_models/safe_load.py): what paddle.save writes on Paddle 3.3.1 and 2.6.2
loads exactly as paddle.load loads it; a file whose pickle would run code is refused by every tool with one line
naming the file and the global, and the code never runs; truncated weight, optimizer and inference files are one
line naming the file.

tests/data/paddle26/ holds small files written by Paddle 2.6.2 with ``write_reference_files`` below; regenerate them
with ``.venv26/bin/python tests/test_safe_load.py tests/data/paddle26``.
"""
import glob
import os
import pickle
import shlex
import shutil
import subprocess
import sys

from conftest import REPO  # first: it loads the package, which preloads zlib before paddle (run as a script too)

import numpy as np
import paddle
import pytest
import yaml
from PIL import Image

from helpers import assert_one_line_error, run_tool, tiny_config, tiny_hardnet
from paddle_models.errors import UserError
from paddle_models.safe_load import load_paddle_file

FIXTURES = os.path.join(REPO, 'tests', 'data', 'paddle26')
SYSTEM = f"{os.system.__module__}.system"  # how a pickle names os.system: posix.system on Linux
TRUNCATED = "not a complete Paddle weight file (truncated or corrupt)"

pytestmark = pytest.mark.paddle26  # every test here passes on Paddle 2.6.2 too (the torch ones skip without torch)


def refusal(label, global_name=SYSTEM):
    return (f"{label}: refusing to load: it references {global_name}, which a Paddle weight file never holds "
            f"(loading it could run code)")


class RunsCode:
    """Pickles to a call of ``os.system`` that creates ``marker``: what a trojan weight file does on load."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


class EvalsCode:
    """Pickles to ``eval(<code that creates marker>)``, the global Paddle itself uses for DenseTensors."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return eval, (f"open({self.marker!r}, 'w').close()",)


def write_trojan(path, marker, state=None, protocol=4):
    """A state dict (``state``'s arrays, as paddle.save lays them out) with one entry whose unpickling runs code."""
    state = {k: np.asarray(v) for k, v in (state or {'w': np.ones([2], 'float32')}).items()}
    state['StructuredToParameterName@@'] = {k: f'param_{i}' for i, k in enumerate(state)}
    state['trojan'] = RunsCode(marker)
    with open(path, 'wb') as f:
        pickle.dump(state, f, protocol=protocol)
    return str(path)


# ----------------------------------------------------------------------------------------------------------------
# Real files: written by paddle.save, read back exactly as paddle.load reads them

def _tiny_net():
    return paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.BatchNorm2D(4), paddle.nn.Conv2D(4, 2, 1))


def _steps(net, optimizer, scheduler, count):
    x = paddle.to_tensor(np.linspace(-1, 1, 2 * 3 * 6 * 6, dtype='float32').reshape([2, 3, 6, 6]))
    for _ in range(count):
        net(x).mean().backward()
        optimizer.step()
        optimizer.clear_grad()
        scheduler.step()


def _momentum(net):
    scheduler = paddle.optimizer.lr.PolynomialDecay(0.01, 10, end_lr=0.0, power=0.9)
    return paddle.optimizer.Momentum(scheduler, parameters=net.parameters(), momentum=0.9, weight_decay=4e-5), \
        scheduler


def _adamw(net):
    scheduler = paddle.optimizer.lr.LinearWarmup(paddle.optimizer.lr.CosineAnnealingDecay(0.001, 10), 3, 0.0, 0.001)
    return paddle.optimizer.AdamW(scheduler, parameters=net.parameters(), weight_decay=0.01), scheduler


def write_reference_files(folder):
    """Write, with the running Paddle's ``paddle.save``, one file of each kind we read; returns the tiny net.

    ``model*.pdparams`` (a Conv-BN-Conv state dict at pickle protocols 4, 3 and 2), ``momentum.pdopt``
    (Momentum + PolynomialDecay after 2 steps), ``adamw.pdopt`` (AdamW + LinearWarmup(CosineAnnealingDecay) after 1
    step), ``portable.pdopt`` (our checkpoints' optimizer file), ``master_weights.pdopt`` (an optimizer state with a
    ``master_weights`` dict as AMP O2 writes it: paddle.save pickles that one tensor by tensor), ``dtypes.pdparams``
    (bfloat16, float16, int64 and bool tensors), ``dense_tensor.pd`` (a bare DenseTensor) and ``written_by.txt``.
    """
    from paddle_models.core.checkpoint import portable_optimizer_state

    os.makedirs(folder, exist_ok=True)
    paddle.seed(7)
    net = _tiny_net()
    momentum, momentum_lr = _momentum(net)
    _steps(net, momentum, momentum_lr, 2)
    adamw, adamw_lr = _adamw(net)
    _steps(net, adamw, adamw_lr, 1)
    for protocol in (4, 3, 2):
        name = 'model.pdparams' if protocol == 4 else f'model_protocol{protocol}.pdparams'
        paddle.save(net.state_dict(), os.path.join(folder, name), protocol=protocol)
    paddle.save(momentum.state_dict(), os.path.join(folder, 'momentum.pdopt'))
    paddle.save(adamw.state_dict(), os.path.join(folder, 'adamw.pdopt'))
    paddle.save(portable_optimizer_state(net, adamw), os.path.join(folder, 'portable.pdopt'))
    master = dict(adamw.state_dict())
    master['master_weights'] = {p.name: p.astype('float32') for p in net.parameters()}
    paddle.save(master, os.path.join(folder, 'master_weights.pdopt'))
    paddle.save({'bf16': paddle.to_tensor([1.5, -2.0]).astype('bfloat16'),
                 'fp16': paddle.to_tensor([0.25, 3.0]).astype('float16'), 'int64': paddle.arange(4),
                 'bool': paddle.to_tensor([True, False])}, os.path.join(folder, 'dtypes.pdparams'))
    tensor = paddle.to_tensor([[1.0, 2.0], [3.0, 4.0]])  # kept alive: its DenseTensor is not a copy
    paddle.save(tensor.value().get_tensor(), os.path.join(folder, 'dense_tensor.pd'))
    with open(os.path.join(folder, 'written_by.txt'), 'w') as f:
        f.write(f"paddle {paddle.__version__}\n")
    return net


def _is_generated(name):
    return name.startswith('generated_tensor')  # Paddle's automatic names differ from call to call


def assert_same(ours, ref, where='loaded'):
    """``ours`` has the type, keys (in order), tensor names and dtypes, and values of ``ref``."""
    assert type(ours) is type(ref), f"{where}: {type(ours).__name__} vs {type(ref).__name__}"
    if isinstance(ref, dict):
        assert list(ours) == list(ref), where
        for key in ref:
            assert_same(ours[key], ref[key], f"{where}[{key!r}]")
    elif isinstance(ref, (list, tuple)):
        assert len(ours) == len(ref), where
        for i, (a, b) in enumerate(zip(ours, ref)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(ref, paddle.Tensor):
        assert ours.name == ref.name or _is_generated(ours.name) and _is_generated(ref.name), where
        assert ours.dtype == ref.dtype and ours.shape == ref.shape, where
        assert np.array_equal(ours.numpy(), ref.numpy()), where
    elif isinstance(ref, np.ndarray):
        assert ours.dtype == ref.dtype and np.array_equal(ours, ref), where
    else:
        assert ours == ref, where


def assert_loads_like_paddle(path):
    for return_numpy in (False, True):
        assert_same(load_paddle_file(path, return_numpy=return_numpy), paddle.load(path, return_numpy=return_numpy),
                    os.path.basename(path))


def _reference_paths(folder):
    paths = sorted(p for p in glob.glob(os.path.join(folder, '*')) if not p.endswith('.txt'))
    assert [os.path.basename(p) for p in paths] == [
        'adamw.pdopt', 'dense_tensor.pd', 'dtypes.pdparams', 'master_weights.pdopt', 'model.pdparams',
        'model_protocol2.pdparams', 'model_protocol3.pdparams', 'momentum.pdopt', 'portable.pdopt']
    return paths


def test_files_written_by_this_paddle_load_as_paddle_load_loads_them(tmp_path):
    net = write_reference_files(tmp_path)
    for path in _reference_paths(tmp_path):
        assert_loads_like_paddle(path)
    # the weights are the net's, bit for bit, at every protocol
    for name in ('model.pdparams', 'model_protocol3.pdparams', 'model_protocol2.pdparams'):
        state = load_paddle_file(tmp_path / name)
        assert list(state) == list(net.state_dict())
        for key, value in net.state_dict().items():
            assert state[key].name == value.name and np.array_equal(state[key].numpy(), value.numpy())


@pytest.mark.parametrize('kind', ['momentum', 'adamw'])
def test_loaded_optimizer_state_resumes_the_optimizer(tmp_path, kind):
    """An optimizer given the state we read continues exactly as one given paddle.load's: same LR, same update."""
    make = _momentum if kind == 'momentum' else _adamw
    paddle.seed(3)
    net = _tiny_net()
    path = str(tmp_path / f'{kind}.pdopt')
    # accumulator names come from a per-process counter: each optimizer's life runs in its own name scope, as in a
    # new process
    with paddle.utils.unique_name.guard():
        optimizer, scheduler = make(net)
        _steps(net, optimizer, scheduler, 2)
        paddle.save(optimizer.state_dict(), path)
    weights = {k: v.numpy() for k, v in net.state_dict().items()}

    results = []
    for state in (load_paddle_file(path), paddle.load(path)):
        net.set_state_dict(weights)
        with paddle.utils.unique_name.guard():
            resumed, resumed_lr = make(net)
            resumed.set_state_dict(state)
            assert resumed_lr.last_epoch == scheduler.last_epoch
            lr = resumed.get_lr()
            _steps(net, resumed, resumed_lr, 1)
        results.append((lr, {k: v.numpy() for k, v in net.state_dict().items()}))
    (lr_ours, after_ours), (lr_ref, after_ref) = results
    assert lr_ours == lr_ref == scheduler.get_lr()
    for key in after_ref:
        np.testing.assert_array_equal(after_ours[key], after_ref[key])
    assert any(not np.array_equal(after_ref[k], weights[k]) for k in weights)  # the step did change the weights


def test_paddle26_files_load_as_paddle_load_loads_them():
    """Files Paddle 2.6.2 wrote (committed fixtures) read the same here, whichever Paddle runs the test."""
    with open(os.path.join(FIXTURES, 'written_by.txt')) as f:
        assert f.read().startswith('paddle 2.6.')
    for path in _reference_paths(FIXTURES):
        assert_loads_like_paddle(path)
    momentum = load_paddle_file(os.path.join(FIXTURES, 'momentum.pdopt'))
    assert momentum['LR_Scheduler']['last_epoch'] == 2
    assert isinstance(load_paddle_file(os.path.join(FIXTURES, 'master_weights.pdopt'))['master_weights'], dict)


def test_split_big_arrays_are_joined(tmp_path):
    """paddle.save splits arrays over 1 GiB into slices at protocols 2 and 3 (too big to write here): the same
    layout, written by hand, is joined back as paddle.load joins it."""
    weight = np.arange(24, dtype='float32').reshape(2, 3, 4)
    flat = weight.reshape(-1)
    layout = {'w@@.0': flat[:10], 'w@@.1': flat[10:20], 'w@@.2': flat[20:], 'b': np.ones(3, 'float32'),
              'UnpackBigParamInfor@@': {'w': {'OriginShape': (2, 3, 4), 'slices': ['w@@.0', 'w@@.1', 'w@@.2']}},
              'StructuredToParameterName@@': {'w': 'conv.w_0', 'b': 'conv.b_0'}}
    path = str(tmp_path / 'split.pdparams')
    with open(path, 'wb') as f:
        pickle.dump(layout, f, protocol=2)
    assert_loads_like_paddle(path)
    state = load_paddle_file(path)
    assert sorted(state) == ['b', 'w'] and state['w'].name == 'conv.w_0'
    np.testing.assert_array_equal(state['w'].numpy(), weight)


# ----------------------------------------------------------------------------------------------------------------
# Refusals, in process: each way a pickle can reach code

def _raw(tmp_path, data, name='bad.pdparams'):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _refused(path, what=None):
    with pytest.raises(UserError) as err:
        load_paddle_file(path, what)
    message = str(err.value)
    assert '\n' not in message
    return message


@pytest.mark.parametrize('protocol', [2, 3, 4])
def test_a_global_that_runs_code_is_refused_and_never_runs(tmp_path, protocol):
    marker = tmp_path / 'MARKER'
    path = write_trojan(tmp_path / 'model.pdparams', marker, protocol=protocol)
    assert _refused(path, '--model_path') == refusal(f"--model_path {path}")
    assert not marker.exists()
    # the same file does run its code through paddle.load: the test's trojan is real
    try:
        paddle.load(path)
    except Exception:  # noqa: BLE001  (whatever paddle.load makes of the rest does not matter)
        pass
    assert marker.exists()


def test_eval_with_code_is_refused(tmp_path):
    """builtins.eval is what paddle.save writes for a DenseTensor; only that exact ('data', {'data': array}) call is
    accepted, and eval itself never runs."""
    marker = tmp_path / 'MARKER'
    path = _raw(tmp_path, pickle.dumps({'w': EvalsCode(marker)}, protocol=4))
    assert _refused(path) == (f"{path}: refusing to load: it calls builtins.eval with arguments other than the "
                              f"('data', {{'data': array}}) that paddle.save writes for a DenseTensor (loading it "
                              f"could run code)")
    assert not marker.exists()


@pytest.mark.parametrize('global_name', ['builtins.getattr', 'builtins.exec', 'subprocess.Popen', 'os.system',
                                         'numpy.load', 'paddle.load', 'collections.namedtuple'])
def test_any_other_global_is_refused(tmp_path, global_name):
    module, name = global_name.rsplit('.', 1)
    data = b'\x80\x02c' + f'{module}\n{name}\n'.encode() + b')R.'  # GLOBAL, EMPTY_TUPLE, REDUCE
    path = _raw(tmp_path, data)
    assert _refused(path) == refusal(path, global_name)


def _allowed_global(module='numpy', name='ndarray'):
    return b'c' + f'{module}\n{name}\n'.encode()


@pytest.mark.parametrize('body, reason', [
    # calling numpy.ndarray (an array of any size) is not what paddle.save writes: only _reconstruct may take it
    (_allowed_global() + b'K\x05\x85R', "it calls numpy.ndarray with arguments paddle.save never writes"),
    (_allowed_global('numpy.core.multiarray', '_reconstruct') + _allowed_global('numpy', 'dtype') +
     b'K\x00\x85C\x01b\x87R', "it calls numpy.core.multiarray._reconstruct with arguments paddle.save never writes"),
    # numpy always reconstructs from shape (0,): a large placeholder would allocate memory before any check
    (_allowed_global('numpy.core.multiarray', '_reconstruct') + _allowed_global() + b'J\x00\x00\x00\x40\x85C\x01b\x87R',
     "it calls numpy.core.multiarray._reconstruct with arguments paddle.save never writes"),
    (_allowed_global('_codecs', 'encode') + b'X\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R',
     "it calls _codecs.encode with arguments paddle.save never writes"),
    (_allowed_global('builtins', 'tuple') + b'K\x01K\x02\x86R',
     "it calls builtins.tuple with arguments paddle.save never writes"),
    # NEWOBJ: cls.__new__(cls) on an allowed name
    (_allowed_global('collections', 'OrderedDict') + b')\x81',
     "it creates objects with pickle opcodes (NEWOBJ/INST/OBJ/EXT) that a Paddle weight file never uses (loading "
     "it could run code)"),
    # INST: protocol 0's "import and call" (module and name follow the opcode)
    (b'(i' + b'posix\nsystem\n',
     "it creates objects with pickle opcodes (NEWOBJ/INST/OBJ/EXT) that a Paddle weight file never uses (loading "
     "it could run code)"),
    (b'\x82\x01', "it creates objects with pickle opcodes (NEWOBJ/INST/OBJ/EXT) that a Paddle weight file never "
                  "uses (loading it could run code)"),  # EXT1 1: copyreg's extension registry
    # BUILD on anything but an array or dtype (BUILD calls __setstate__ or fills __dict__)
    (b'}}b', "it sets the state of a dict object, which a Paddle weight file never does"),
    (b'X\x01\x00\x00\x00xQ', "it uses pickle persistent IDs, which a Paddle weight file never holds (a PyTorch "
                             "checkpoint? convert it with tools/convert_weights.py)"),  # BINPERSID
    (b'K\x01K\x02R', "it calls an object of type int, which a Paddle weight file never does"),
])
def test_pickle_features_that_could_reach_code_are_refused(tmp_path, body, reason):
    path = _raw(tmp_path, b'\x80\x02' + body + b'.')
    assert _refused(path) == f"{path}: refusing to load: {reason}"


# ----------------------------------------------------------------------------------------------------------------
# numpy dtypes: whatever a pickled dtype claims about itself (flags, fields, sizes, byte order) is checked field by
# field and rebuilt by numpy; Python objects anywhere are refused

_RECONSTRUCT_FN = np.zeros(0).__reduce__()[0]  # numpy's _reconstruct, under the module name of this numpy


class ForgedDtype:
    """Pickles as numpy pickles a dtype, ``numpy.dtype(code, False, copy)`` + BUILD ``state``, with any state."""

    def __init__(self, code, state, copy=True):
        self.code, self.state, self.copy = code, state, copy

    def __reduce__(self):
        return np.dtype, (self.code, False, self.copy), self.state


class ForgedArray:
    """Pickles as numpy pickles an array: ``_reconstruct(ndarray, (0,), b'b')`` + BUILD ``(1, shape, dtype, False,
    raw)``, with any shape, dtype and data."""

    def __init__(self, shape, dtype, raw):
        self.shape, self.dtype, self.raw = shape, dtype, raw

    def __reduce__(self):
        return _RECONSTRUCT_FN, (np.ndarray, (0,), b'b'), (1, self.shape, self.dtype, False, self.raw)


def _struct_state(names, fields, size, flags=0):
    return 3, '|', None, names, fields, size, 1, flags


OBJECTS = "holds Python objects (numpy dtype object), which a Paddle weight file never does"
# an object dtype with its "holds objects" flags cleared, and a structure with an object field whose flags say none
HIDDEN_OBJECT = ForgedDtype('O8', (3, '|', None, None, None, -1, -1, 0))
FORGED_STRUCT = ForgedDtype('V8', _struct_state(('a',), {'a': (HIDDEN_OBJECT, 0)}, 8))


def _write(tmp_path, obj, name='bad.pdparams'):
    return _raw(tmp_path, pickle.dumps({'w': obj}, protocol=4), name)


def test_the_forged_object_field_crashes_numpy_and_is_refused(tmp_path):
    """The issue's file: a structured array whose object field hides behind a cleared flag. numpy's own unpickler
    believes the flag and dereferences the file's bytes as object pointers (the process dies); ours refuses it."""
    path = _write(tmp_path, ForgedArray((2,), FORGED_STRUCT, b'\x41' * 16))
    crash = subprocess.run([sys.executable, '-c', f"import pickle; print(pickle.load(open({path!r}, 'rb')))"],
                           capture_output=True, timeout=120)
    assert crash.returncode < 0, crash  # killed by a signal (SIGSEGV): the file is a real crasher
    assert _refused(path) == f"{path}: refusing to load: a numpy dtype {OBJECTS}"
    with pytest.raises(UserError):
        load_paddle_file(path, return_numpy=True)


@pytest.mark.parametrize('dtype, reason', [
    # Python objects: as a whole, in a field, in a nested structure's field, in a sub-array, behind forged flags
    (ForgedDtype('O8', (3, '|', None, None, None, -1, -1, 0)), f"a numpy dtype {OBJECTS}"),
    (np.dtype([('a', 'f4'), ('b', 'O')]), f"a numpy dtype {OBJECTS}"),
    (np.dtype([('a', 'f4'), ('n', [('x', 'i2'), ('y', 'O')])]), f"a numpy dtype {OBJECTS}"),
    (np.dtype(('O', (2, 2))), f"a numpy dtype {OBJECTS}"),
    (ForgedDtype('V16', (3, '|', (HIDDEN_OBJECT, (2,)), None, None, 16, 8, 0)), f"a numpy dtype {OBJECTS}"),
    (ForgedDtype('V8', _struct_state(('n',), {'n': (FORGED_STRUCT, 0)}, 8)), f"a numpy dtype {OBJECTS}"),
    # a title is a second key for a field: it may not lead to another dtype
    (ForgedDtype('V8', _struct_state(('a',), {'a': (np.dtype('f4'), 0, 'T'), 'T': (np.dtype('f8'), 0, 'T')}, 8)),
     "a numpy dtype has a field 'T' that its names do not list (a hidden field)"),
    # a field numpy keeps but the names do not list
    (ForgedDtype('V8', _struct_state(('a',), {'a': (np.dtype('f4'), 0), 'hid': (np.dtype('f4'), 4)}, 8)),
     "a numpy dtype has a field 'hid' that its names do not list (a hidden field)"),
    # fields outside the item: negative, overflowing, past the end
    (ForgedDtype('V8', _struct_state(('a',), {'a': (np.dtype('f8'), -4)}, 8)),
     "a numpy dtype field 'a' lies outside its 8-byte item (offset -4, 8 bytes)"),
    (ForgedDtype('V8', _struct_state(('a',), {'a': (np.dtype('f4'), 2 ** 63 - 2)}, 8)),
     f"a numpy dtype field 'a' lies outside its 8-byte item (offset {2 ** 63 - 2}, 4 bytes)"),
    (ForgedDtype('V8', _struct_state(('a', 'b'), {'a': (np.dtype('f4'), 0), 'b': (np.dtype('f8'), 4)}, 8)),
     "a numpy dtype field 'b' lies outside its 8-byte item (offset 4, 8 bytes)"),
    # sizes that do not fit the type
    (ForgedDtype('f4', (3, '<', None, None, None, 1, 1, 0)), "a numpy dtype claims 1 bytes per float32 item, "
                                                              "which has 4"),
    (ForgedDtype('V8', (3, '|', (np.dtype('f4'), (4,)), None, None, 8, 4, 0)),
     "a numpy dtype claims 8 bytes for a sub-array of shape (4,) of 4-byte items"),
    (ForgedDtype('V8', (3, '|', (np.dtype('f4'), (-2,)), None, None, 8, 4, 0)),
     "a numpy dtype is a sub-array of shape (-2,)"),
    (ForgedDtype('U2', (3, '<', None, None, None, 7, 4, 8)), "a numpy dtype claims 7 bytes per str item, not a "
                                                              "multiple of 4"),
    # fields or a sub-array on a dtype that is not a structure
    (ForgedDtype('f4', _struct_state(('a',), {'a': (np.dtype('i1'), 0)}, 4)),
     "a numpy dtype of type float32 is given fields or a sub-array"),
    # byte orders numpy never writes
    (ForgedDtype('f4', (3, 'x', None, None, None, -1, -1, 0)), "a numpy dtype has byte order 'x', which numpy "
                                                                "never writes"),
    (ForgedDtype('f4', (3, 1, None, None, None, -1, -1, 0)), "a numpy dtype has byte order 1, which numpy never "
                                                              "writes"),
    # kinds a weight file never holds
    (np.dtype('M8[s]'), "a numpy dtype has numpy dtype datetime64, which a Paddle weight file never holds"),
    (ForgedDtype('M8', (3, '<', None, None, None, -1, -1, 0)),
     "a numpy dtype has numpy dtype datetime64, which a Paddle weight file never holds"),
])
def test_unsafe_dtypes_are_refused(tmp_path, dtype, reason):
    itemsize = 8 if isinstance(dtype, ForgedDtype) else dtype.itemsize
    path = _write(tmp_path, ForgedArray((1,), dtype, b'\x41' * itemsize))
    assert _refused(path) == f"{path}: refusing to load: {reason}"


def test_nesting_too_deep_is_refused(tmp_path):
    dtype = np.dtype('f4')
    for _ in range(20):
        dtype = np.dtype([('n', dtype)])
    path = _write(tmp_path, ForgedArray((1,), dtype, b'\0' * 4))
    fields = "field 'n' " * 17
    assert _refused(path) == f"{path}: refusing to load: a numpy dtype {fields}nests structures more than 16 deep"


def test_dtypes_reused_as_fields_at_every_level_are_refused_quickly(tmp_path):
    """One zero-size structure reused as each of 100 fields, ten levels deep: a few kB of pickle, 100**10 fields
    when walked (numpy prints or converts such a dtype in exponential time). The walk stops counting at 10000."""
    names = tuple(f'f{i}' for i in range(100))
    dtype = np.dtype([])
    for _ in range(10):
        dtype = ForgedDtype('V0', _struct_state(names, {name: (dtype, 0) for name in names}, 0))
    path = _write(tmp_path, ForgedArray((1,), dtype, b''))
    assert os.path.getsize(path) < 20000
    assert _refused(path) == f"{path}: refusing to load: a numpy dtype has more than 10000 fields and sub-arrays in all"


@pytest.mark.parametrize('shape, raw', [((2 ** 40,), b'\0' * 8), ((2 ** 62, 2 ** 62), b'\0' * 8), ((3,), b'\0' * 8),
                                        ((2, 1), b'\0' * 7)])
def test_array_shapes_must_fit_the_data(tmp_path, shape, raw):
    path = _write(tmp_path, ForgedArray(shape, np.dtype('f4'), raw))
    assert _refused(path) == f"{path}: {TRUNCATED}"


@pytest.mark.parametrize('shape', [(-1,), (1.5,), ('2',), 2])
def test_array_shapes_must_be_counts(tmp_path, shape):
    path = _write(tmp_path, ForgedArray(shape, np.dtype('f4'), b'\0' * 4))
    assert _refused(path) == f"{path}: refusing to load: an array has shape {shape!r}"


def test_zero_size_items_cannot_make_huge_arrays(tmp_path):
    path = _write(tmp_path, ForgedArray((10 ** 15,), np.dtype([]), b''))
    assert _refused(path) == f"{path}: {TRUNCATED}"


def test_a_dtype_build_cannot_change_numpys_shared_dtypes(tmp_path):
    """dtype('f4', False, False) is numpy's one shared float32; a BUILD on it must not turn every float32 of the
    process big-endian: the file gets a copy (and numpy stores a big-endian array's data in native order)."""
    big = ForgedDtype('f4', (3, '>', None, None, None, -1, -1, 0), copy=False)
    path = _raw(tmp_path, pickle.dumps({'d': big, 'w': ForgedArray((1,), big, np.array([1.5], '>f4').tobytes())},
                                       protocol=4))
    state = load_paddle_file(path, return_numpy=True)
    assert state['d'] == np.dtype('>f4') and state['w'].dtype == np.dtype('float32') and state['w'][0] == 1.5
    assert np.dtype('float32').byteorder == '=' and np.zeros(1, 'float32').dtype.isnative


SAFE_DTYPES = [
    np.dtype('>f4'), np.dtype('<u2'), np.dtype('?'), np.dtype('c16'), np.dtype('S5'), np.dtype('>U3'), np.dtype('V3'),
    np.dtype([('a', '<f4'), ('b', '>i8', (2, 3)), ('c', 'S2')]),
    np.dtype([('a', 'u1'), ('b', 'f8')], align=True),
    np.dtype({'names': ['a', 'b'], 'formats': ['f4', 'i2'], 'offsets': [8, 0], 'titles': ['Alpha', None],
              'itemsize': 16}),
    np.dtype([('outer', [('inner', [('x', 'f2', (2,))]), ('y', '?')])]),
    np.dtype(('i4', (2, 2))),
]


@pytest.mark.parametrize('dtype', SAFE_DTYPES, ids=str)
def test_safe_dtypes_load_as_numpy_loads_them(tmp_path, dtype):
    """Structured, nested, titled, aligned, sub-array, big-endian, bytes and str arrays: the same dtype and bytes
    as numpy's own unpickling, and a dtype whose flags numpy computed (equal to a fresh one's)."""
    array = np.frombuffer(np.random.default_rng(0).bytes(3 * dtype.itemsize), dtype)
    if dtype.kind == 'U':  # a valid str needs code points
        array = np.array(['a', 'bc', 'xyz'], dtype)
    data = pickle.dumps({'w': array, 'd': dtype, 's': array[0]}, protocol=4)
    path = _raw(tmp_path, data)
    ours, ref = load_paddle_file(path, return_numpy=True), pickle.loads(data)
    assert ours['w'].dtype == ref['w'].dtype and ours['w'].shape == ref['w'].shape
    assert ours['w'].tobytes() == ref['w'].tobytes()
    assert ours['d'] == dtype and ours['d'].flags == dtype.flags and ours['d'].isalignedstruct == dtype.isalignedstruct
    assert ours['w'].dtype.flags == ref['w'].dtype.flags and ours['w'].dtype.alignment == ref['w'].dtype.alignment
    assert type(ours['s']) is type(ref['s']) and ours['s'].tobytes() == ref['s'].tobytes()


def test_truncated_and_foreign_files(tmp_path):
    paddle.seed(1)
    good = str(tmp_path / 'good.pdparams')
    paddle.save(_tiny_net().state_dict(), good)
    data = open(good, 'rb').read()
    for cut in (0, 1, 2, 3, 20, len(data) // 2, len(data) - 200, len(data) - 1):
        path = _raw(tmp_path, data[:cut], f'cut{cut}.pdparams')
        assert _refused(path, '--model_path') == f"--model_path {path}: {TRUNCATED}", cut
    path = _raw(tmp_path, b'just some text\n')
    assert _refused(path) == f"{path}: not a Paddle weight file (not a pickle written by paddle.save)"
    path = _raw(tmp_path, b'PK\x03\x04' + b'\0' * 60, 'model.pth')
    assert _refused(path) == (f"{path}: not a Paddle weight file (not a pickle written by paddle.save) (a zip "
                              f"archive: a PyTorch checkpoint? convert it with tools/convert_weights.py)")
    path = _raw(tmp_path, pickle.dumps({'w': 1}, protocol=5))
    assert _refused(path) == f"{path}: not a Paddle weight file (not a pickle written by paddle.save)"
    loop = []
    loop.append(loop)
    path = _raw(tmp_path, pickle.dumps({'w': loop}, protocol=4))
    assert _refused(path) == f"{path}: {TRUNCATED}"
    assert _refused(str(tmp_path / 'absent.pdparams'), 'x') == f"x {tmp_path / 'absent.pdparams'} not found"


def test_checkpoint_resume_refuses_a_trojan_ema_file(tmp_path):
    """--use_ema resumes read ema_model.pdparams too."""
    from paddle_models.core.checkpoint import resume, save_checkpoint
    from paddle_models.core.ema import ModelEMA

    paddle.seed(2)
    net = _tiny_net()
    optimizer, _ = _momentum(net)
    folder = save_checkpoint(str(tmp_path), 'iter_4', net, optimizer)
    marker = tmp_path / 'MARKER'
    write_trojan(os.path.join(folder, 'ema_model.pdparams'), marker, net.state_dict())
    with pytest.raises(UserError) as err:
        resume(net, optimizer, folder, ema=ModelEMA(net))
    assert str(err.value) == refusal(f"--resume_model {folder}/ema_model.pdparams")
    assert not marker.exists()


def test_paddleseg_models_read_pretrained_files_safely(tmp_path):
    """A PaddleSeg model built from one of our configs loads ``pretrained`` through PaddleSeg's own loader, which
    importing paddle_models routes through load_paddle_file: a trojan is refused, real weights still load."""
    import paddleseg.models
    import paddleseg.models.backbones.vision_transformer as vit
    import paddleseg.utils.utils as seg_utils

    assert seg_utils.paddle.load.__func__.__module__ == 'paddle_models.safe_load'
    assert vit.paddle.load.__func__.__module__ == 'paddle_models.safe_load'
    marker = tmp_path / 'MARKER'
    trojan = write_trojan(tmp_path / 'unet.pdparams', marker)
    with pytest.raises(UserError) as err:
        paddleseg.models.ENet(num_classes=2, pretrained=trojan)
    assert str(err.value) == refusal(trojan)
    assert not marker.exists()

    paddle.seed(4)
    source = paddleseg.models.ENet(num_classes=2)
    good = str(tmp_path / 'enet.pdparams')
    paddle.save(source.state_dict(), good)
    loaded = paddleseg.models.ENet(num_classes=2, pretrained=good)
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key].numpy(), value.numpy())


# ----------------------------------------------------------------------------------------------------------------
# Every tool, as a subprocess: exit 2, one line naming the file and the global, the code never runs

@pytest.fixture(scope='module')
def hardnet_state():
    return {k: v.numpy() for k, v in tiny_hardnet(seed=5).state_dict().items()}


def _image(tmp_path):
    path = tmp_path / 'image.png'
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(path)
    return path


def _linknet_config(tmp_path):
    cfg = yaml.safe_load(open(tiny_config(tmp_path)))
    cfg['model'] = {'type': 'LinkNet', 'num_classes': 5, 'backbone': {'type': 'ResNet18'}}
    path = tmp_path / 'linknet.yml'
    path.write_text(yaml.safe_dump(cfg))
    return path


def _checkpoint(tmp_path, hardnet_state, weights_trojan, marker):
    """An iter_3 checkpoint of the tiny HarDNet whose model.pdparams or model.pdopt is a trojan."""
    folder = tmp_path / 'out' / 'iter_3'
    folder.mkdir(parents=True)
    if weights_trojan:
        write_trojan(folder / 'model.pdparams', marker, hardnet_state)
        paddle.save({'LR_Scheduler': {'last_epoch': 3, 'last_lr': 0.01}}, str(folder / 'model.pdopt'))
    else:
        paddle.save({k: paddle.to_tensor(v) for k, v in hardnet_state.items()}, str(folder / 'model.pdparams'))
        write_trojan(folder / 'model.pdopt', marker)
    return folder


TOOL_CASES = ['val', 'predict', 'export', 'train_pretrained', 'train_backbone_pretrained', 'train_resume_weights',
              'train_resume_optimizer']


@pytest.mark.parametrize('case', TOOL_CASES)
def test_every_tool_refuses_a_trojan_weight_file(tmp_path, hardnet_state, case):
    marker = tmp_path / 'MARKER'
    trojan = write_trojan(tmp_path / 'model.pdparams', marker, hardnet_state)
    config = tiny_config(tmp_path)
    out = tmp_path / 'out'
    train = ['train.py', '--config', config, '--save_dir', out, '--iters', '2', '--device', 'cpu']
    if case == 'val':
        proc = run_tool('val.py', '--config', config, '--model_path', trojan, '--device', 'cpu')
        expected = refusal(f"--model_path {trojan}")
    elif case == 'predict':
        proc = run_tool('predict.py', '--config', config, '--model_path', trojan, '--image_path', _image(tmp_path),
                        '--save_dir', out, '--device', 'cpu')
        expected = refusal(f"--model_path {trojan}")
    elif case == 'export':
        proc = run_tool('export.py', '--config', config, '--model_path', trojan, '--save_dir', out)
        expected = refusal(f"--model_path {trojan}")
    elif case == 'train_pretrained':
        proc = run_tool(*train, '--opts', f'model.pretrained={trojan}')
        expected = refusal(f"HarDNet: cannot read pretrained weights {trojan}")
    elif case == 'train_backbone_pretrained':
        train[2] = _linknet_config(tmp_path)
        proc = run_tool(*train, '--opts', f'model.backbone.pretrained={trojan}')
        expected = refusal(f"ResNet: cannot read pretrained weights {trojan}")
    else:
        weights_trojan = case == 'train_resume_weights'
        folder = _checkpoint(tmp_path, hardnet_state, weights_trojan, marker)
        proc = run_tool(*train, '--iters', '6', '--resume_model', folder)
        file = folder / ('model.pdparams' if weights_trojan else 'model.pdopt')
        expected = refusal(f"--resume_model {file}")
    assert_one_line_error(proc, expected)
    assert not marker.exists()
    if case in ('predict', 'export'):
        assert not out.exists()


@pytest.mark.parametrize('suffix, zipped', [('.pth', True), ('.bin', False)])
def test_convert_weights_refuses_a_trojan_torch_checkpoint(tmp_path, suffix, zipped):
    """tools/convert_weights.py reads PyTorch files with torch.load(weights_only=True); its refusal is one line
    naming the file and the global."""
    torch = pytest.importorskip('torch')
    marker = tmp_path / 'MARKER'
    path = tmp_path / f'resnet18{suffix}'
    torch.save({'conv1.weight': torch.zeros(1), 'fc.bias': RunsCode(marker)}, str(path),
               _use_new_zipfile_serialization=zipped)
    out = tmp_path / 'out.pdparams'
    proc = run_tool('tools/convert_weights.py', '--arch', 'ResNet18', '--format', 'torchvision', '--input', path,
                    '--output', out)
    assert_one_line_error(proc, f"--input: {path}: refusing to load: it references {SYSTEM}, which a weights file "
                                f"never holds (loading it could run code)")
    assert not marker.exists() and not out.exists()


# ----------------------------------------------------------------------------------------------------------------
# Truncated files: a resumed optimizer state, an exported program or its params

def test_resume_with_a_truncated_optimizer_file(tmp_path, hardnet_state):
    folder = tmp_path / 'out' / 'iter_3'
    folder.mkdir(parents=True)
    paddle.save({k: paddle.to_tensor(v) for k, v in hardnet_state.items()}, str(folder / 'model.pdparams'))
    net = _tiny_net()
    optimizer, scheduler = _momentum(net)
    _steps(net, optimizer, scheduler, 1)
    paddle.save(optimizer.state_dict(), str(folder / 'model.pdopt'))
    data = (folder / 'model.pdopt').read_bytes()
    (folder / 'model.pdopt').write_bytes(data[:len(data) * 2 // 3])
    proc = run_tool('train.py', '--config', tiny_config(tmp_path), '--save_dir', tmp_path / 'out', '--iters', '6',
                    '--device', 'cpu', '--resume_model', folder)
    assert_one_line_error(proc, f"--resume_model {folder / 'model.pdopt'}: {TRUNCATED}")


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    from paddle_models.core.export import export_model
    model = tiny_hardnet(num_classes=3, seed=0)
    model.eval()
    save_dir = tmp_path_factory.mktemp('export') / 'inference_model'
    return export_model(model, str(save_dir), transforms=[{'type': 'Normalize'}])


@pytest.mark.parametrize('which', ['model', 'params'])
def test_infer_with_a_truncated_program_or_params_file(tmp_path, exported, which):
    copy = tmp_path / 'inference_model'
    shutil.copytree(exported['save_dir'], copy)
    broken = copy / os.path.basename(exported[which])
    data = broken.read_bytes()
    broken.write_bytes(data[:len(data) // 2])
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'deploy', 'python', 'infer.py'), '--config',
                           str(copy / 'deploy.yaml'), '--image_path', str(_image(tmp_path)), '--save_dir',
                           str(tmp_path / 'result'), '--device', 'cpu'], capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    kind = 'program' if which == 'model' else 'params file'
    assert_one_line_error(proc, f"{broken}: not a complete Paddle Inference {kind} (truncated or corrupt); export "
                                f"the model again")
    assert not (tmp_path / 'result').exists()


if __name__ == '__main__':  # regenerate the committed fixtures (run with Paddle 2.6.2)
    write_reference_files(sys.argv[1] if len(sys.argv) > 1 else FIXTURES)
    print(f"wrote {sys.argv[1] if len(sys.argv) > 1 else FIXTURES} with paddle {paddle.__version__}")
