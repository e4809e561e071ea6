"""Reading Paddle weight files (``.pdparams``, ``.pdopt``, ``ema_model.pdparams``, pretrained and resume files)
without running code hidden in them.

``paddle.load`` unpickles with Python's ``pickle``, which calls whatever importable function a file names: a
``.pdparams`` whose pickle calls ``os.system`` runs its command the moment it is loaded. ``load_paddle_file`` reads
the same files with an unpickler that knows only what ``paddle.save`` writes and refuses everything else before any
of it runs.

What ``paddle.save`` writes, read from the files Paddle 2.6.2 and 3.3.1 produce (both write the same opcodes):

* Pickle protocol 2, 3 or 4 (4 is the default; Paddle refuses others). Protocol 2 spells each ``bytes`` object as a
  call of ``_codecs.encode(text, 'latin1')``.
* numpy arrays as ``numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b')`` followed by a BUILD with the
  array's state, and their dtypes as ``numpy.dtype(code, False, True)`` + BUILD (numpy 2 spells the module
  ``numpy._core.multiarray``; both are accepted). bfloat16 tensors are stored as uint16 arrays.
* A state dict (every value a tensor, or a dict holding no tensors, such as ``LR_Scheduler``'s numbers) becomes a
  plain dict of arrays plus ``StructuredToParameterName@@`` ({key: tensor name}); with protocol 2 or 3 an array over
  1 GiB is split into ``<key>@@.<i>`` slices listed under ``UnpackBigParamInfor@@``.
* Any other object (e.g. an optimizer state with ``master_weights``, or a dict with a plain-value entry) is pickled
  with each tensor as a call ``builtins.tuple(((name, array),))``, i.e. a ``(name, array)`` pair, and each
  ``DenseTensor`` as a call ``builtins.eval('data', {'data': array})``. The latter is accepted in exactly that form,
  and eval is never called: the array is taken from the arguments.

So the unpickler resolves only these globals (plus ``collections.OrderedDict``, ``builtins.set``/``frozenset`` and
numpy's scalar constructor, which plain state values pickle to), each to a checking stand-in rather than the real
function; any other global, pickle's object-creation opcodes (NEWOBJ, INST, OBJ), extension codes, persistent IDs,
a BUILD on anything but an array or dtype, and arrays of Python objects are refused with one line naming the file and
what it asked for.

A numpy dtype's pickled state (byte order, fields with offsets, sub-array, size, alignment and flags such as "holds
Python objects") is a claim, and numpy's ``__setstate__`` believes it: a structured dtype whose object field is
hidden behind a cleared flag reads raw file bytes as object pointers (a crash, or worse). So no dtype from a file is
used as it stands: ``_rebuilt`` walks its description (fields field by field, titles, sub-arrays, nested structures)
and has numpy build the same dtype afresh from it, which computes flags and alignment itself; objects anywhere, kinds
other than bool/int/float/complex/bytes/str/void, fields outside the item or not listed in its names, sizes that do
not fit the type and odd byte orders are refused. Arrays, numpy scalars and dtypes get only rebuilt dtypes, and an
array's shape must fit its data exactly.

The result is then turned into what ``paddle.load`` returns: the same structure, arrays as Paddle tensors (named as
``paddle.load`` names them) unless ``return_numpy``.

``guard_paddleseg()`` routes PaddleSeg's own weight loading (``paddleseg.utils.load_pretrained_model``,
``load_entire_model``, ``resume``, and the ViT/CAE backbones' position-embedding loaders) through the same reader,
so a PaddleSeg component built from one of our configs cannot run code from its ``pretrained`` file either.
"""
import collections
import importlib
import os
import pickle
import struct

import numpy as np

from paddle_models.errors import UserError

_NAME_TABLE = 'StructuredToParameterName@@'  # paddle.save's {state-dict key: tensor name}
_BIG_ARRAYS = 'UnpackBigParamInfor@@'  # (sic) paddle.save's {key: {'OriginShape', 'slices'}} for split arrays
_PADDLE_PROTOCOLS = (2, 3, 4)


class _Refused(Exception):
    """The file asks for something a Paddle weight file never holds; ``str()`` says what."""


class _StandIn:
    """What an allowed global resolves to: its name and a function that checks REDUCE's arguments and builds the
    value without calling the real global where that could matter. ``build`` None means it may only be passed
    around (``numpy.ndarray`` as ``_reconstruct``'s first argument), never called."""

    __slots__ = ('name', 'build')

    def __init__(self, name, build=None):
        self.name = name
        self.build = build

    def __repr__(self):
        return self.name


def _misused(stand_in):
    return _Refused(f"it calls {stand_in.name} with arguments paddle.save never writes")


def _numpy_attr(name):
    """numpy's ``multiarray`` function ``name`` (the module is ``numpy.core.multiarray`` in numpy 1,
    ``numpy._core.multiarray`` in numpy 2, where the old name warns)."""
    module = 'numpy._core.multiarray' if int(np.__version__.split('.')[0]) >= 2 else 'numpy.core.multiarray'
    return getattr(importlib.import_module(module), name)


# the kinds of dtype a weight file may hold: bool, signed and unsigned integers, floats, complex, bytes, str and
# void (raw bytes, structures of these); never objects ('O'), datetimes or numpy 2's variable-width strings, whose
# items are or hold pointers or need metadata
_PLAIN_KINDS = 'biufcSUV'
_FIXED_SIZE_KINDS = 'biufc'
_BYTE_ORDERS = ('<', '>', '|', '=')
_ALIGNED_STRUCT = 0x80  # numpy's NPY_ALIGNED_STRUCT flag: the structure was laid out with align=True
_MAX_DTYPE_DEPTH = 16  # nested structures / sub-arrays; numpy's own pickles of real dtypes stay far below
# fields and sub-arrays in all, counted along every path: a pickle can reuse one dtype for many fields at every
# level, which would make the walk (and numpy's own printing of such a dtype) take exponential time
_MAX_DTYPE_PARTS = 10000


def _leaf(scalar_type, byteorder, size, where):
    """numpy's own dtype for a plain (unstructured) ``scalar_type`` item of ``size`` bytes in ``byteorder``."""
    base = np.dtype(scalar_type)
    if base.kind == 'O':
        raise _Refused(f"{where} holds Python objects (numpy dtype object), which a Paddle weight file never does")
    if base.kind not in _PLAIN_KINDS:
        raise _Refused(f"{where} has numpy dtype {base.name}, which a Paddle weight file never holds")
    if byteorder not in _BYTE_ORDERS:
        raise _Refused(f"{where} has byte order {byteorder!r}, which numpy never writes")
    if type(size) is not int or size < 0:
        raise _Refused(f"{where} has an item size of {size!r} bytes")
    if base.kind in _FIXED_SIZE_KINDS:
        if size != base.itemsize:
            raise _Refused(f"{where} claims {size} bytes per {base.name} item, which has {base.itemsize}")
        dtype = base
    elif base.kind == 'U':
        if size % 4:
            raise _Refused(f"{where} claims {size} bytes per str item, not a multiple of 4")
        dtype = np.dtype((np.str_, size // 4))
    else:
        dtype = np.dtype((base.type, size))
    return dtype.newbyteorder(byteorder) if byteorder in '<>' else dtype


def _rebuilt_subarray(base, shape, size, where, depth, budget):
    """numpy's own sub-array dtype ``(base, shape)`` of ``size`` bytes, ``base`` rebuilt too."""
    if type(shape) is not tuple or not all(type(n) is int and n >= 0 for n in shape):
        raise _Refused(f"{where} is a sub-array of shape {shape!r}")
    base = _rebuilt(base, f"{where} sub-array", depth + 1, budget)
    total = base.itemsize
    for n in shape:
        total *= n
    if total != size:
        raise _Refused(f"{where} claims {size} bytes for a sub-array of shape {shape} of {base.itemsize}-byte items")
    try:
        return np.dtype((base, shape))
    except (TypeError, ValueError) as err:
        raise _Refused(f"{where} is a sub-array numpy cannot build ({_first_line(err)})") from None


def _rebuilt_struct(names, fields, size, aligned, where, depth, budget):
    """numpy's own structured dtype with the fields ``names`` of ``fields`` ({name or title: (dtype, offset[,
    title])}) in ``size``-byte items; each field rebuilt, inside the item, and no entry of ``fields`` unlisted."""
    if type(names) is not tuple or not all(type(n) is str for n in names) or type(fields) is not dict:
        raise _Refused(f"{where} is a structured dtype with malformed fields")
    if type(size) is not int or size < 0:
        raise _Refused(f"{where} has an item size of {size!r} bytes")
    listed, formats, offsets, titles = {}, [], [], []
    for name in names:
        entry = fields.get(name)
        if type(entry) is not tuple or len(entry) not in (2, 3):
            raise _Refused(f"{where} lists field {name!r} without a (dtype, offset) entry")
        field = _rebuilt(entry[0], f"{where} field {name!r}", depth + 1, budget)
        offset = entry[1]
        if type(offset) is not int or offset < 0 or offset + field.itemsize > size:
            raise _Refused(f"{where} field {name!r} lies outside its {size}-byte item (offset {offset!r}, "
                           f"{field.itemsize} bytes)")
        title = entry[2] if len(entry) == 3 else None
        if title is not None and type(title) is not str:
            raise _Refused(f"{where} field {name!r} has a title of type {type(title).__name__}")
        listed[name] = entry
        if title is not None:
            listed[title] = entry
        formats.append(field)
        offsets.append(offset)
        titles.append(title)
    for key, entry in fields.items():  # a title's entry is its field's (the same tuple, as numpy pickles it)
        same = listed.get(key)
        if same is None or entry is not same and not (type(entry) is tuple and len(entry) == len(same) and
                                                       entry[0] is same[0] and entry[1:] == same[1:]):
            raise _Refused(f"{where} has a field {key!r} that its names do not list (a hidden field)")
    try:
        return np.dtype({'names': list(names), 'formats': formats, 'offsets': offsets, 'titles': titles,
                         'itemsize': size}, align=aligned)
    except (TypeError, ValueError) as err:
        raise _Refused(f"{where} is a structured dtype numpy cannot build ({_first_line(err)})") from None


def _spend(budget):
    """Count one more dtype in the walk of one top-level dtype (``budget``: [parts left, how to name the top])."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _Refused(f"{budget[1]} has more than {_MAX_DTYPE_PARTS} fields and sub-arrays in all")


def _rebuilt(dtype, where, depth=0, budget=None):
    """numpy's own dtype equal to ``dtype``, built afresh from its description, so that none of the flags,
    alignment or sizes stored with it is used; raises ``_Refused`` (naming ``where``) for anything a weight file
    never holds: objects in any field or sub-array, odd kinds, sizes or byte orders, fields out of place, nesting
    deeper than ``_MAX_DTYPE_DEPTH`` or more than ``_MAX_DTYPE_PARTS`` parts."""
    budget = [_MAX_DTYPE_PARTS, where] if budget is None else budget
    if not isinstance(dtype, np.dtype):
        raise _Refused(f"{where} has no numpy dtype")
    if depth > _MAX_DTYPE_DEPTH:
        raise _Refused(f"{where} nests structures more than {_MAX_DTYPE_DEPTH} deep")
    _spend(budget)
    if dtype.subdtype is not None or dtype.names is not None:
        if dtype.type is not np.void or dtype.subdtype is not None and dtype.names is not None:
            raise _Refused(f"{where} is a {dtype.type.__name__} dtype with fields or a sub-array")
        if dtype.subdtype is not None:
            return _rebuilt_subarray(*dtype.subdtype, dtype.itemsize, where, depth, budget)
        return _rebuilt_struct(dtype.names, dict(dtype.fields), dtype.itemsize, dtype.isalignedstruct, where, depth,
                               budget)
    return _leaf(dtype.type, dtype.byteorder, dtype.itemsize, where)


def _dtype_from_state(dtype, state):
    """numpy's own dtype for the ``(version, byte order, sub-array, names, fields, size, alignment, flags)`` state a
    pickle gives the dtype ``dtype`` (made from its type code): flags and alignment are not read, only whether the
    structure was aligned (which numpy checks)."""
    if type(state) is not tuple or len(state) != 8 or state[0] != 3:
        raise _Refused("it sets the state of a numpy dtype to something paddle.save never writes")
    _, byteorder, subarray, names, fields, size, _alignment, flags = state
    if type(byteorder) is not str:
        raise _Refused(f"a numpy dtype has byte order {byteorder!r}, which numpy never writes")
    where = "a numpy dtype"
    if subarray is not None or names is not None or fields is not None:
        if dtype.type is not np.void or subarray is not None and (names is not None or fields is not None):
            raise _Refused(f"{where} of type {dtype.type.__name__} is given fields or a sub-array")
        if type(size) is not int or type(flags) is not int:
            raise _Refused("it sets the state of a numpy dtype to something paddle.save never writes")
        if subarray is not None:
            if type(subarray) is not tuple or len(subarray) != 2:
                raise _Refused(f"{where} is a malformed sub-array")
            return _rebuilt_subarray(*subarray, size, where, 0, [_MAX_DTYPE_PARTS, where])
        return _rebuilt_struct(names, fields, size, bool(flags & _ALIGNED_STRUCT), where, 0,
                               [_MAX_DTYPE_PARTS, where])
    return _leaf(dtype.type, byteorder, dtype.itemsize if size == -1 else size, where)


def _first_line(err):
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _array_state(state):
    """The ``(version, shape, dtype, is_fortran, raw)`` state of an array, checked, with its dtype rebuilt; raises
    ValueError (corrupt) where the shape does not fit the data exactly."""
    if type(state) is not tuple or len(state) != 5 or state[0] != 1 or type(state[3]) is not bool:
        raise _Refused("it sets the state of a numpy array to something paddle.save never writes")
    version, shape, dtype, is_fortran, raw = state
    if type(shape) is not tuple or not all(type(n) is int and n >= 0 for n in shape):
        raise _Refused(f"an array has shape {shape!r}")
    dtype = _rebuilt(dtype, "an array")
    if not isinstance(raw, bytes):
        raise _Refused("it sets the state of a numpy array to something other than raw data")
    count = 1
    for n in shape:
        count *= n
    if count * dtype.itemsize != len(raw) or count and not dtype.itemsize:
        raise ValueError(f"an array of shape {shape} and {dtype.itemsize}-byte items holds {len(raw)} bytes")
    return version, shape, dtype, is_fortran, raw


def _build_reconstruct(args):
    # _reconstruct(numpy.ndarray, (0,), typecode): the empty placeholder array numpy's pickling always starts
    # from (no other shape, which could allocate any amount of memory), filled by the BUILD that follows
    if len(args) != 3 or args[0] is not _NDARRAY or args[1] != (0,) or type(args[1][0]) is not int or \
            not isinstance(args[2], bytes):
        raise _misused(_RECONSTRUCT)
    return _numpy_attr('_reconstruct')(np.ndarray, args[1], args[2])


def _build_dtype(args):
    # numpy.dtype(code, align, copy): a dtype from its type code; always a copy (copy=False would hand out numpy's
    # shared built-in dtype, which a BUILD would then change for the whole process), rebuilt like any other
    if not 1 <= len(args) <= 3 or type(args[0]) is not str or not all(type(a) is bool for a in args[1:]):
        raise _misused(_DTYPE)
    try:
        made = np.dtype(args[0], bool(args[1]) if len(args) > 1 else False, True)
    except (TypeError, ValueError, SyntaxError) as err:
        raise _Refused(f"it asks for an unknown numpy dtype {args[0]!r} ({_first_line(err)})") from None
    fresh = _rebuilt(made, "a numpy dtype")
    made.__setstate__(fresh.__reduce__()[2])
    return made


def _build_scalar(args):
    # numpy.core.multiarray.scalar(dtype, raw bytes): a numpy scalar such as numpy.float32(0.5)
    if len(args) != 2 or not isinstance(args[1], bytes):
        raise _misused(_SCALAR)
    dtype = _rebuilt(args[0], "a numpy scalar")
    if len(args[1]) != dtype.itemsize:
        raise ValueError("numpy scalar of the wrong size")
    return _numpy_attr('scalar')(dtype, args[1])


def _build_encode(args):
    # protocol 2's spelling of bytes: _codecs.encode(text, 'latin1')
    if len(args) != 2 or not isinstance(args[0], str) or args[1] not in ('latin1', 'latin-1'):
        raise _misused(_ENCODE)
    return args[0].encode('latin1')


def _container_builder(kind, stand_in_name):
    """REDUCE of tuple/set/frozenset/OrderedDict: no argument, or one list/tuple of items (of pairs for a dict)."""
    def build(args):
        if len(args) == 0:
            return kind()
        if len(args) == 1 and type(args[0]) in (list, tuple):
            if kind is collections.OrderedDict and \
                    not all(type(item) in (list, tuple) and len(item) == 2 for item in args[0]):
                raise _misused(_ALLOWED_BY_NAME[stand_in_name])
            try:
                return kind(args[0])
            except TypeError:  # an unhashable set member or dict key
                raise ValueError(f"bad {stand_in_name} items") from None
        raise _misused(_ALLOWED_BY_NAME[stand_in_name])
    return build


def _build_dense_tensor(args):
    # Paddle pickles a DenseTensor as eval('data', {'data': array}); take the array, never call eval
    if len(args) == 2 and args[0] == 'data' and type(args[1]) is dict and list(args[1]) == ['data'] and \
            type(args[1]['data']) is np.ndarray:
        return args[1]['data']
    raise _Refused("it calls builtins.eval with arguments other than the ('data', {'data': array}) that paddle.save "
                   "writes for a DenseTensor (loading it could run code)")


_NDARRAY = _StandIn('numpy.ndarray')
_RECONSTRUCT = _StandIn('numpy.core.multiarray._reconstruct', _build_reconstruct)
_DTYPE = _StandIn('numpy.dtype', _build_dtype)
_SCALAR = _StandIn('numpy.core.multiarray.scalar', _build_scalar)
_ENCODE = _StandIn('_codecs.encode', _build_encode)
_EVAL = _StandIn('builtins.eval', _build_dense_tensor)

_ALLOWED_BY_NAME = {s.name: s for s in (_NDARRAY, _RECONSTRUCT, _DTYPE, _SCALAR, _ENCODE, _EVAL)}
for _kind, _name in ((tuple, 'builtins.tuple'), (set, 'builtins.set'), (frozenset, 'builtins.frozenset'),
                     (collections.OrderedDict, 'collections.OrderedDict')):
    _ALLOWED_BY_NAME[_name] = _StandIn(_name, _container_builder(_kind, _name))

# (module, name) as a pickle spells it -> stand-in; numpy 2 and Python 2 spellings included
_ALLOWED = {}
for _full, _stand_in in _ALLOWED_BY_NAME.items():
    _module, _, _attr = _full.rpartition('.')
    _ALLOWED[(_module, _attr)] = _stand_in
    if _module == 'numpy.core.multiarray':
        _ALLOWED[('numpy._core.multiarray', _attr)] = _stand_in
    if _module == 'builtins':
        _ALLOWED[('__builtin__', _attr)] = _stand_in
del _kind, _name, _full, _stand_in, _module, _attr


class _SafeUnpickler(pickle._Unpickler):
    """Python's own (pure-Python) unpickler with every opcode that could reach code replaced by a checked one."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module, name):
        stand_in = _ALLOWED.get((module, name))
        if stand_in is None:
            raise _Refused(f"it references {module}.{name}, which a Paddle weight file never holds "
                           f"(loading it could run code)")
        return stand_in

    def persistent_load(self, pid):
        raise _Refused("it uses pickle persistent IDs, which a Paddle weight file never holds (a PyTorch "
                       "checkpoint? convert it with tools/convert_weights.py)")

    def load_reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if not isinstance(func, _StandIn):
            raise _Refused(f"it calls an object of type {type(func).__name__}, which a Paddle weight file never "
                           f"does")
        if func.build is None or type(args) is not tuple:
            raise _misused(func)
        self.stack[-1] = func.build(args)
    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) is np.ndarray:
            # ndarray state: (version, shape, dtype, is_fortran, raw bytes)
            inst.__setstate__(_array_state(state))
        elif isinstance(inst, np.dtype):
            # the dtype takes the state of the one numpy builds from the description, never the file's own
            inst.__setstate__(_dtype_from_state(inst, state).__reduce__()[2])
        else:
            raise _Refused(f"it sets the state of a {type(inst).__name__} object, which a Paddle weight file never "
                           f"does")
    dispatch[pickle.BUILD[0]] = load_build

    def _refuse_opcode(self):
        raise _Refused("it creates objects with pickle opcodes (NEWOBJ/INST/OBJ/EXT) that a Paddle weight file "
                       "never uses (loading it could run code)")
    for _opcode in (pickle.NEWOBJ, pickle.NEWOBJ_EX, pickle.INST, pickle.OBJ, pickle.EXT1, pickle.EXT2,
                    pickle.EXT4):
        dispatch[_opcode[0]] = _refuse_opcode
    del _opcode


# errors the pure-Python unpickler (or numpy) raises on data that ends early or makes no sense
_CORRUPT = (EOFError, pickle.UnpicklingError, struct.error, ValueError, KeyError, IndexError, TypeError,
            AttributeError, UnicodeDecodeError, OverflowError, MemoryError, RecursionError)


def _label(path, what):
    return f"{what} {path}" if what else str(path)


def _unpickle(path, what):
    """The raw object in ``path``, read with ``_SafeUnpickler`` (numpy arrays not yet tensors)."""
    label = _label(path, what)
    try:
        f = open(path, 'rb')
    except FileNotFoundError:
        raise UserError(f"{label} not found") from None
    except IsADirectoryError:
        raise UserError(f"{label} is a folder, not a Paddle weight file") from None
    except OSError as err:
        raise UserError(f"{label}: cannot read: {err.strerror or err}") from None
    with f:
        head = f.read(2)
        if len(head) < 2:
            raise UserError(f"{label}: not a complete Paddle weight file (truncated or corrupt)")
        if head[0] != pickle.PROTO[0] or head[1] not in _PADDLE_PROTOCOLS:
            hint = " (a zip archive: a PyTorch checkpoint? convert it with tools/convert_weights.py)" \
                if head == b'PK' else ''
            raise UserError(f"{label}: not a Paddle weight file (not a pickle written by paddle.save){hint}")
        f.seek(0)
        try:
            return _SafeUnpickler(f, encoding='latin1').load()
        except _Refused as err:
            raise UserError(f"{label}: refusing to load: {err}") from None
        except _CORRUPT:
            raise UserError(f"{label}: not a complete Paddle weight file (truncated or corrupt)") from None


def _join_big_arrays(obj):
    """Undo paddle.save's splitting of arrays over 1 GiB (protocol 2/3) in a top-level dict."""
    info = obj.pop(_BIG_ARRAYS)
    if not isinstance(info, dict):
        raise ValueError(f"{_BIG_ARRAYS} is not a dict")
    for key, entry in info.items():
        parts = [obj.pop(name) for name in entry['slices']]
        if not parts or not all(type(p) is np.ndarray for p in parts):
            raise ValueError(f"bad slices of {key}")
        obj[key] = np.concatenate(parts).reshape(entry['OriginShape'])


def _tensor(array, name, return_numpy):
    if return_numpy:
        return array
    import paddle

    tensor = paddle.to_tensor(array)
    if name:
        tensor.name = name
    return tensor


def _is_named_array(obj):
    return type(obj) is tuple and len(obj) == 2 and isinstance(obj[0], str) and type(obj[1]) is np.ndarray


_CONTAINERS = (list, tuple, set, frozenset)


def _convert(obj, match, make, done=None):
    """``obj`` with every value for which ``match`` holds replaced by ``make(value)``, through dicts, lists, tuples
    and sets (the containers paddle.load walks).

    Args:
        done (dict): {id: converted} of the containers converted so far, so that an object the pickle shares
            between places (its memo) is converted once, not once per path to it (exponentially many).
    """
    done = {} if done is None else done
    if id(obj) in done:
        return done[id(obj)]
    if match(obj):
        result = make(obj)
    elif isinstance(obj, dict):  # dict and OrderedDict, changed in place
        done[id(obj)] = obj
        for key in list(obj):
            obj[key] = _convert(obj[key], match, make, done)
        return obj
    elif type(obj) in _CONTAINERS:
        result = type(obj)(_convert(v, match, make, done) for v in obj)
    else:
        return obj
    done[id(obj)] = result
    return result


def _contains(obj, match, seen=None):
    """Whether ``match`` holds for ``obj`` or anything inside it (each shared container visited once)."""
    seen = set() if seen is None else seen
    if match(obj):
        return True
    if id(obj) in seen or not (isinstance(obj, dict) or type(obj) in _CONTAINERS):
        return False
    seen.add(id(obj))
    return any(_contains(v, match, seen) for v in (obj.values() if isinstance(obj, dict) else obj))


def _as_loaded(obj, return_numpy):
    """What ``paddle.load`` makes of the unpickled ``obj``: split arrays joined; in a state dict (one with a name
    table) the tabled arrays become tensors named from the table, which is dropped; elsewhere ``(name, array)``
    pairs become named tensors where the file has any, else every array becomes a tensor."""
    if isinstance(obj, dict):
        if _BIG_ARRAYS in obj:
            _join_big_arrays(obj)
        if _NAME_TABLE in obj:
            table = obj.pop(_NAME_TABLE)
            if not isinstance(table, dict):
                raise ValueError(f"{_NAME_TABLE} is not a dict")
            for key, name in table.items():
                if type(obj.get(key)) is np.ndarray:
                    obj[key] = _tensor(obj[key], name if isinstance(name, str) else None, return_numpy)
            return obj
    if _contains(obj, _is_named_array):
        return _convert(obj, _is_named_array, lambda pair: _tensor(pair[1], pair[0], return_numpy))
    return _convert(obj, lambda v: type(v) is np.ndarray, lambda a: _tensor(a, None, return_numpy))


def load_paddle_file(path, what=None, return_numpy=False):
    """Read a file written by ``paddle.save`` (a ``.pdparams`` state dict, a ``.pdopt`` optimizer state with its LR
    scheduler's, an EMA or resume state) like ``paddle.load`` does, but without running any code the file holds.

    Args:
        path (str | os.PathLike): The file.
        what (str): How the user named it (``--model_path``, ``ResNet: pretrained weights``); starts every error
            message, before the path, so that the one line says which flag or key to fix.
        return_numpy (bool): Give numpy arrays instead of Paddle tensors (``paddle.load``'s ``return_numpy``);
            tensors, the default, are what ``paddle.load`` returns and what an optimizer's ``set_state_dict`` needs.

    Returns:
        The same structure ``paddle.load(path)`` returns for files that ``paddle.save`` wrote.

    Raises:
        UserError: One line naming the file: it does not exist or cannot be read; it is not a ``paddle.save``
            pickle; it ends early or is corrupt ("not a complete Paddle weight file (truncated or corrupt)"); or it
            references a global or uses a pickle feature that ``paddle.save`` never writes ("refusing to load: it
            references posix.system, ..."). Nothing in the file has run when this is raised.
    """
    path = os.fspath(path)
    obj = _unpickle(path, what)
    try:
        return _as_loaded(obj, return_numpy)
    except (KeyError, TypeError, ValueError, RecursionError):
        raise UserError(f"{_label(path, what)}: not a complete Paddle weight file (truncated or corrupt)") from None


# ----------------------------------------------------------------------------------------------------------------
# PaddleSeg's own loaders

_PADDLESEG_LOADING_MODULES = ('paddleseg.utils.utils', 'paddleseg.models.backbones.vision_transformer',
                              'paddleseg.models.backbones.cae')


class _PaddleWithSafeLoad:
    """Stands for the ``paddle`` module inside PaddleSeg modules that call ``paddle.load`` on weight files: every
    attribute is Paddle's, except ``load``, which reads with ``load_paddle_file``."""

    def __init__(self, paddle):
        self._paddle = paddle

    def __getattr__(self, name):
        return getattr(self._paddle, name)

    def load(self, path, **configs):
        """``paddle.load`` for a weight file PaddleSeg reads (accepts ``return_numpy``; other options are
        ``paddle.load``'s for other kinds of file and are refused)."""
        unknown = set(configs) - {'return_numpy'}
        if unknown:
            raise TypeError(f"load() got unsupported options {sorted(unknown)}")
        return load_paddle_file(path, return_numpy=bool(configs.get('return_numpy', False)))


def guard_paddleseg():
    """Make PaddleSeg's weight loading (pretrained files of PaddleSeg's own models and backbones, its ``resume``)
    use ``load_paddle_file``, by giving the PaddleSeg modules that call ``paddle.load`` a ``paddle`` whose ``load``
    is the safe one. Idempotent; modules not imported yet are imported here."""
    for module_name in _PADDLESEG_LOADING_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # another PaddleSeg version without this module
            continue
        current = getattr(module, 'paddle', None)
        if current is not None and not isinstance(current, _PaddleWithSafeLoad):
            module.paddle = _PaddleWithSafeLoad(current)


__all__ = ['load_paddle_file', 'guard_paddleseg']
