"""Weight files that are damaged or edited on purpose (paddle_models/safe_load.py, tools/convert_weights.py): a
property-based test mutates valid files of each kind the loaders accept and asserts that loading either returns
plain values and arrays or raises one UserError, never another exception, never a crash, and never runs code.

hypothesis drives the mutations (bytes flipped or set, spans cut, inserted or repeated, the file truncated; pickle
opcodes, strings such as dtype codes and byte orders, and integers such as sizes, shapes and offsets replaced;
safetensors headers' dtypes, shapes and offsets edited). It is derandomized (the same examples on every run) and
bounded in examples and per-example time, so that it takes a few seconds.

A crash cannot be caught in the process that crashes: pytest's faulthandler (enabled here if it is not) prints the
test's traceback when the process dies, and the file being loaded at that moment is left in the folder the test
prints at its start (``current.pdparams`` / ``current.safetensors``), ready to be loaded again to reproduce.

Not in the paddle26 subset: the Paddle 2.6.2 venv has no hypothesis; the same loader code is covered there by
tests/test_safe_load.py.
"""
import collections
import faulthandler
import json
import os
import pickle
import pickletools
import re
import struct
import sys

from conftest import REPO  # first: it loads the package, which preloads zlib before paddle

import numpy as np
import paddle
import pytest

if paddle.__version__.startswith('2.'):  # CI's Paddle 2.6.2 venv has no hypothesis; everywhere else it must be there
    pytest.importorskip('hypothesis', reason="the Paddle 2.6.2 venv has no hypothesis (tests/test_safe_load.py "
                                             "covers the loader there)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from paddle_models.errors import UserError
from paddle_models.safe_load import load_paddle_file

FIXTURES = os.path.join(REPO, 'tests', 'data', 'paddle26')

# audit events that mean code from the file is running, or that the unpickler resolved a global the normal way
_CODE_EVENTS = {'exec', 'compile', 'os.system', 'os.exec', 'os.posix_spawn', 'os.spawn', 'os.fork',
                'subprocess.Popen', 'pickle.find_class', 'ctypes.dlopen', 'socket.connect', 'os.remove',
                'shutil.rmtree', 'builtins.input'}
_seen_events = None  # a list while a load is being watched


def _watch(event, args):
    if _seen_events is not None and event in _CODE_EVENTS:
        _seen_events.append((event, repr(args)[:200]))


sys.addaudithook(_watch)  # hooks cannot be removed; it records only while _seen_events is a list


def _split_layout():
    """paddle.save's layout of an array over 1 GiB (protocol 2), written small."""
    flat = np.arange(12, dtype='float32')
    return pickle.dumps({'w@@.0': flat[:5], 'w@@.1': flat[5:], 'b': np.ones(2, 'float16'),
                         'UnpackBigParamInfor@@': {'w': {'OriginShape': (3, 4), 'slices': ['w@@.0', 'w@@.1']}},
                         'StructuredToParameterName@@': {'w': 'conv.w_0', 'b': 'conv.b_0'}}, protocol=2)


def _numpy_values():
    """Plain values a state may hold next to tensors: numpy scalars, a structured array with a sub-array field,
    big-endian and str arrays (numpy's own pickles of them)."""
    struct_dtype = np.dtype([('a', '<f4'), ('b', '>i2', (2,)), ('c', 'S3')], align=True)
    return pickle.dumps({'epoch': np.int64(3), 'lr': np.float32(0.5), 'names': np.array(['ab', 'c']),
                         'table': np.zeros(2, struct_dtype), 'big': np.arange(3, dtype='>f8'),
                         'nested': collections.OrderedDict([('t', (1, 2.5, 'x')), ('s', {1, 2}),
                                                            ('f', frozenset({'a'}))])}, protocol=4)


def _seeds():
    """{name: bytes} of valid files: what Paddle 2.6.2 wrote (state dicts at protocols 2-4, optimizer states with
    named tensors and LR scheduler values, master weights, a DenseTensor, bfloat16/float16/int64/bool tensors),
    split big arrays, and numpy values."""
    seeds = {}
    for name in sorted(os.listdir(FIXTURES)):
        if not name.endswith('.txt'):
            with open(os.path.join(FIXTURES, name), 'rb') as f:
                seeds[name] = f.read()
    seeds['split.pdparams'] = _split_layout()
    seeds['numpy_values.pdparams'] = _numpy_values()
    return seeds


SEEDS = _seeds()
# per seed: the opcodes of its pickle as (position, opcode, argument)
OPCODES = {name: [(pos, op, arg) for op, arg, pos in pickletools.genops(data)] for name, data in SEEDS.items()}

# what a string in a weight file may be replaced with: dtype codes (objects, structures, datetimes, sizes that do
# not fit), byte orders, encodings, the names paddle.save's layout relies on
WORDS = ['O8', 'O', 'V8', 'V16', 'f4', 'f8', 'f2', 'i8', 'u2', 'u8', 'b1', 'c8', 'M8', 'm8[s]', 'U2', 'S3', 'S0',
         'V0', 'f4,O', '(2,)O', 'f4,(2,)i4', '(2,3)f8', '<', '>', '|', '=', 'x', '', 'latin1', 'rot13', 'data',
         'slices', 'OriginShape', 'StructuredToParameterName@@', 'UnpackBigParamInfor@@', 'b', 'O' * 300]
INTS = [-2 ** 63, -2 ** 31, -1, 0, 1, 2, 3, 4, 7, 8, 16, 127, 255, 2 ** 16, 2 ** 31 - 1, 2 ** 32, 2 ** 62]
# what a dtype's type code or byte order may become
DTYPE_WORDS = ['O8', 'O', 'V8', 'V4', 'V0', 'f4', 'f8', 'i2', 'u8', 'b1', 'c16', 'M8', 'U2', 'U1', 'S3', 'S1', 'f4,O',
               '(2,)O', 'O,V4', '<', '>', '|', '=', 'x']
_DTYPE_CODE = re.compile(r'^([<>|=]|[a-zA-Z]\d*)$')
# opcodes a byte may become (every one pickle knows)
OPCODE_BYTES = sorted({op.code.encode('latin1')[0] for op in pickletools.opcodes})


def _pickle_string(op, text):
    """``text`` as the string opcode ``op`` spells it (the same opcode, so that the rest of the file still
    parses)."""
    raw = text.encode('utf-8')
    if op.name == 'SHORT_BINUNICODE':
        return b'\x8c' + bytes([min(len(raw), 255)]) + raw[:255]
    if op.name == 'BINUNICODE':
        return b'X' + struct.pack('<I', len(raw)) + raw
    if op.name == 'SHORT_BINBYTES':
        return b'C' + bytes([min(len(raw), 255)]) + raw[:255]
    return b'B' + struct.pack('<I', len(raw)) + raw  # BINBYTES


def _pickle_int(value):
    if 0 <= value < 256:
        return b'K' + bytes([value])
    if -2 ** 31 <= value < 2 ** 31:
        return b'J' + struct.pack('<i', value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, 'little', signed=True)
    return b'\x8a' + bytes([len(raw)]) + raw  # LONG1


def _opcode_end(name, index):
    ops = OPCODES[name]
    return ops[index + 1][0] if index + 1 < len(ops) else len(SEEDS[name])


@st.composite
def mutated_pickles(draw):
    """(seed name, bytes): a seed with one edit of a pickle opcode (a string, an integer or the opcode itself
    replaced, or the opcode removed) and up to three edits of raw bytes."""
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    ops = OPCODES[name]
    edit = draw(st.sampled_from(['dtype', 'string', 'int', 'opcode', 'drop', 'none']))
    strings = [i for i, (_, op, _) in enumerate(ops) if op.name in ('SHORT_BINUNICODE', 'BINUNICODE',
                                                                      'SHORT_BINBYTES', 'BINBYTES')]
    codes = [i for i in strings if isinstance(ops[i][2], str) and _DTYPE_CODE.match(ops[i][2])]
    ints = [i for i, (_, op, _) in enumerate(ops) if op.name in ('BININT1', 'BININT2', 'BININT', 'LONG1')]
    if edit in ('dtype', 'string') and strings:
        i = draw(st.sampled_from(codes if edit == 'dtype' and codes else strings))
        pos, op, _ = ops[i]
        words = DTYPE_WORDS if edit == 'dtype' else WORDS
        data[pos:_opcode_end(name, i)] = _pickle_string(op, draw(st.sampled_from(words)))
    elif edit == 'int' and ints:
        i = draw(st.sampled_from(ints))
        value = draw(st.one_of(st.sampled_from(INTS), st.integers(-2 ** 40, 2 ** 40)))
        data[ops[i][0]:_opcode_end(name, i)] = _pickle_int(value)
    elif edit in ('opcode', 'drop'):
        i = draw(st.integers(0, len(ops) - 1))
        if edit == 'opcode':
            data[ops[i][0]] = draw(st.sampled_from(OPCODE_BYTES))
        else:
            del data[ops[i][0]:_opcode_end(name, i)]
    if data[:3] == b'\x80\x04\x95' and len(data) >= 11:  # protocol 4: the one frame's length follows the edit
        data[3:11] = struct.pack('<Q', len(data) - 11)
    for _ in range(draw(st.integers(0 if edit != 'none' else 1, 3))):
        data = _raw_edit(draw, data)
    return name, bytes(data)


def _raw_edit(draw, data):
    """One edit of raw bytes: a bit flipped, a byte set, a span cut, inserted or repeated, or the end cut off."""
    if not data:
        return bytearray(draw(st.binary(max_size=8)))
    pos = draw(st.integers(0, len(data) - 1))
    kind = draw(st.sampled_from(['flip', 'set', 'cut', 'insert', 'repeat', 'truncate']))
    if kind == 'flip':
        data[pos] ^= 1 << draw(st.integers(0, 7))
    elif kind == 'set':
        data[pos] = draw(st.integers(0, 255))
    elif kind == 'cut':
        del data[pos:pos + draw(st.integers(1, 16))]
    elif kind == 'insert':
        data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    elif kind == 'repeat':
        span = data[pos:pos + draw(st.integers(1, 32))]
        data[draw(st.integers(0, len(data))):0] = span
    else:
        del data[pos:]
    return data


def _touch(value, depth=0):
    """Read every array's items (as Python values) and check that no dtype holds objects, walking the dtype
    itself rather than trusting its flags: a forged dtype that got through would crash or fail here."""
    assert depth < 200
    if isinstance(value, dict):
        for k, v in value.items():
            _touch(k, depth + 1)
            _touch(v, depth + 1)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            _touch(v, depth + 1)
    elif isinstance(value, paddle.Tensor):
        value.numpy()
    elif isinstance(value, (np.ndarray, np.generic)):
        _assert_no_objects(value.dtype)
        assert value.size <= 1 << 20  # small files hold small arrays
        value.tolist() if isinstance(value, np.ndarray) else value.item()
    elif isinstance(value, np.dtype):
        _assert_no_objects(value)
    else:
        assert value is None or type(value) in (bool, int, float, complex, str, bytes), type(value)


def _assert_no_objects(dtype, depth=0):
    assert depth < 64 and dtype.kind != 'O'
    if dtype.subdtype is not None:
        _assert_no_objects(dtype.subdtype[0], depth + 1)
    for entry in (dtype.fields or {}).values():
        _assert_no_objects(entry[0], depth + 1)


@pytest.fixture(scope='module')
def work_dir(tmp_path_factory):
    if not faulthandler.is_enabled():
        faulthandler.enable()
    folder = tmp_path_factory.mktemp('fuzz')
    print(f"fuzzed files are written to {folder}; after a crash the last one is still there")
    return folder


def _load_watched(load, path):
    """``load(path)``'s result (None after a UserError, whose message must be one line naming ``path``) and the
    code-running audit events seen meanwhile."""
    global _seen_events
    _seen_events = []
    try:
        try:
            return load(path), _seen_events
        except UserError as err:
            message = str(err)
            assert '\n' not in message and str(path) in message, message
            return None, _seen_events
    finally:
        _seen_events = None


# a few seconds: each example loads a file of a few kB
FUZZ = settings(max_examples=500, deadline=5000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def test_the_seeds_load(work_dir):
    """Every unmutated seed loads, with tensors and with numpy arrays (and warms Paddle up for the timed test);
    numpy_values only as numpy arrays (Paddle tensors hold no str, structured or big-endian arrays)."""
    for name, data in SEEDS.items():
        path = work_dir / name
        path.write_bytes(data)
        for return_numpy in (True,) if name == 'numpy_values.pdparams' else (False, True):
            result, events = _load_watched(lambda p: load_paddle_file(p, return_numpy=return_numpy), path)
            assert result is not None and events == [], name
            _touch(result)


@FUZZ
@given(case=mutated_pickles(), return_numpy=st.booleans())
def test_mutated_paddle_files_load_or_raise_one_user_error(work_dir, case, return_numpy):
    name, data = case
    path = work_dir / 'current.pdparams'
    path.write_bytes(data)
    result, events = _load_watched(lambda p: load_paddle_file(p, return_numpy=return_numpy), path)
    assert events == [], (name, events)
    if result is not None:
        _touch(result)


# ----------------------------------------------------------------------------------------------------------------
# safetensors files, read by tools/convert_weights.py (the safetensors library's numpy API, no pickle)

def _safetensors_seed():
    from safetensors.numpy import save

    return save({'stem.weight': np.arange(24, dtype='float32').reshape(2, 3, 2, 2),
                 'stem.bias': np.array([1.5, -2], 'float16'), 'steps': np.array([7], 'int64'),
                 'mask': np.array([True, False])})


SAFETENSORS = _safetensors_seed()
ST_DTYPES = ['F32', 'F16', 'BF16', 'F64', 'I64', 'I32', 'I8', 'U8', 'BOOL', 'F8_E4M3', 'C64', 'O', 'object', '', 1]


@st.composite
def mutated_safetensors(draw):
    """A safetensors file with its JSON header edited (a tensor's dtype, shape or data offsets replaced, or the
    header's length) and up to two raw edits."""
    (size,) = struct.unpack('<Q', SAFETENSORS[:8])
    header = json.loads(SAFETENSORS[8:8 + size])
    body = SAFETENSORS[8 + size:]
    key = draw(st.sampled_from(sorted(k for k in header if k != '__metadata__')))
    edit = draw(st.sampled_from(['dtype', 'shape', 'offsets', 'length', 'none']))
    number = st.one_of(st.sampled_from(INTS), st.integers(-10, 10 ** 6))
    if edit == 'dtype':
        header[key]['dtype'] = draw(st.sampled_from(ST_DTYPES))
    elif edit == 'shape':
        header[key]['shape'] = draw(st.lists(number, max_size=4))
    elif edit == 'offsets':
        header[key]['data_offsets'] = draw(st.lists(number, min_size=0, max_size=3))
    text = json.dumps(header).encode()
    length = len(text) if edit != 'length' else draw(st.sampled_from(INTS[3:] + [2 ** 64 - 1]))
    data = bytearray(struct.pack('<Q', length) + text + body)
    for _ in range(draw(st.integers(0 if edit != 'none' else 1, 2))):
        data = _raw_edit(draw, data)
    return bytes(data)


@FUZZ
@given(data=mutated_safetensors())
def test_mutated_safetensors_files_convert_or_raise_one_user_error(work_dir, data):
    from tools.convert_weights import read_checkpoint

    path = work_dir / 'current.safetensors'
    path.write_bytes(data)
    result, events = _load_watched(read_checkpoint, path)
    assert events == [], events
    if result is not None:
        assert all(type(v) is np.ndarray for v in result.values())
        _touch(result)
