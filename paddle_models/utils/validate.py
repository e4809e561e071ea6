"""Argument checks for layers, models, losses, datasets and transforms, with one vocabulary of messages.

Every check raises ``UserError("<owner>: <name> must be <what>, got <value>")`` — one line that names the component,
the argument and the value — and returns the value normalised to plain python types (numpy scalars become ints or
floats), so a config value read from YAML or built in numpy behaves the same. Booleans are never numbers here:
``True`` is a YAML typo for an integer far more often than a deliberate 1.
"""
import difflib
import numbers

from paddle_models.errors import UserError


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _bounds(minimum, maximum, below=False, above=False):
    """' >= 1', ' in [0, 1)', ... the range part of a message."""
    if minimum is not None and maximum is not None:
        return f" in {'(' if above else '['}{minimum}, {maximum}{')' if below else ']'}"
    if minimum is not None:
        return f" {'>' if above else '>='} {minimum}"
    if maximum is not None:
        return f" {'<' if below else '<='} {maximum}"
    return ''


def _inside(value, minimum, maximum, below=False, above=False):
    if minimum is not None and (value <= minimum if above else value < minimum):
        return False
    if maximum is not None and (value >= maximum if below else value > maximum):
        return False
    return True


def check_int(owner, name, value, minimum=1, maximum=None):
    """``value`` as an int in [minimum, maximum] (either end may be None); e.g. "VAN: depths must be an integer >= 1"."""
    if not _is_int(value) or not _inside(value, minimum, maximum):
        raise UserError(f"{owner}: {name} must be an integer{_bounds(minimum, maximum)}, got {value!r}")
    return int(value)


def check_number(owner, name, value, minimum=None, maximum=None, below_max=False, above_min=False):
    """``value`` as a float in the range; ``below_max``/``above_min`` make that end open ([0, 1) is
    ``minimum=0, maximum=1, below_max=True``)."""
    if not _is_number(value) or not _inside(value, minimum, maximum, below_max, above_min):
        raise UserError(f"{owner}: {name} must be a number{_bounds(minimum, maximum, below_max, above_min)}, "
                        f"got {value!r}")
    return float(value)


def _length_words(length):
    return ' of' if length is None else f" of {length}"


def check_ints(owner, name, values, length=None, minimum=1, maximum=None):
    """``values`` (list or tuple) as a list of ints, each in range, with ``length`` entries when given (else
    non-empty); e.g. "HRNet: stage2_num_channels must be a list of 2 integers >= 1, got [18]"."""
    if not isinstance(values, (list, tuple)) or not values or (length is not None and len(values) != length) or \
            not all(_is_int(v) and _inside(v, minimum, maximum) for v in values):
        shown = list(values) if isinstance(values, tuple) else values
        raise UserError(f"{owner}: {name} must be a list{_length_words(length)} integers{_bounds(minimum, maximum)}, "
                        f"got {shown!r}")
    return [int(v) for v in values]


def check_numbers(owner, name, values, length=None, minimum=None, maximum=None):
    """``values`` as a list of floats, each in [minimum, maximum], with ``length`` entries when given (else
    non-empty)."""
    if not isinstance(values, (list, tuple)) or not values or (length is not None and len(values) != length) or \
            not all(_is_number(v) and _inside(v, minimum, maximum) for v in values):
        shown = list(values) if isinstance(values, tuple) else values
        raise UserError(f"{owner}: {name} must be a list{_length_words(length)} numbers{_bounds(minimum, maximum)}, "
                        f"got {shown!r}")
    return [float(v) for v in values]


def check_bool(owner, name, value):
    """``value`` as a bool (only True or False: 0/1 and strings are refused)."""
    if not isinstance(value, bool):
        raise UserError(f"{owner}: {name} must be true or false, got {value!r}")
    return value


def did_you_mean(name, candidates):
    """`` (did you mean a, b?)`` with up to three of ``candidates`` close to ``name`` (difflib, else a match ignoring
    case), or '' where none is: the suggestion every "unknown name" message of the package ends with."""
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in candidates}
        close = [lowered[name.lower()]] if name.lower() in lowered else []
    return f" (did you mean {', '.join(close)}?)" if close else ''


def check_choice(owner, name, value, choices):
    """``value`` if it is one of ``choices`` (compared with ==, booleans never equal to ints)."""
    for choice in choices:
        if type(value) is type(choice) or (_is_number(value) and _is_number(choice)):
            if value == choice:
                return value
    listed = ', '.join(repr(c) for c in choices)
    raise UserError(f"{owner}: {name} must be one of {listed}, got {value!r}")


def check_backbone_indices(owner, indices, num_features, length=None, name='backbone_indices', min_length=1,
                           allow_negative=False):
    """``indices`` as a list of ints, each a valid index into a backbone's ``num_features`` outputs.

    Args:
        length (int | tuple[int] | None): The number of indices required (a tuple: any of those counts); None takes
            any count of at least ``min_length``.
        min_length (int): The fewest indices accepted when ``length`` is None.
        allow_negative (bool): Accept Python's negative indices (``-1`` = the last output), as some PaddleSeg configs
            give them; they are returned as the equivalent non-negative indices. Otherwise negatives are refused, so
            a config reads the same to every model.
    """
    lengths = (length,) if isinstance(length, numbers.Integral) else length
    lowest = -num_features if allow_negative else 0
    if not isinstance(indices, (list, tuple)) or len(indices) < max(min_length, 1) or \
            (lengths is not None and len(indices) not in lengths) or \
            not all(_is_int(i) and lowest <= i < num_features for i in indices):
        if lengths is not None:
            words = f" of {' or '.join(str(n) for n in lengths)}"
        else:
            words = f" of at least {min_length}" if min_length > 1 else ' of'
        shown = list(indices) if isinstance(indices, tuple) else indices
        raise UserError(f"{owner}: {name} must be a list{words} integers in [{lowest}, {num_features - 1}] "
                        f"(the backbone has {num_features} outputs), got {shown!r}")
    return [int(i) % num_features for i in indices]
