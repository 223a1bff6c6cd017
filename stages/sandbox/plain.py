"""Plain values across the sandbox boundary: a tagged JSON with no code in it.

What a sample's function returns comes back to the judge as data, never as an object of the
sample's: None, bool, str, 64-bit ints and finite floats as JSON (whose syntax tells 2 from 2.0);
every other value as a one-key object naming its type: {"i": hex} a larger int, {"f": repr}
nan and inf, {"c": [re, im]} complex, {"b": hex} bytes,
{"L": [...]} list, {"T": [...]} tuple ({"Ld"/"Td": [base64 doubles, [[i, int], ...]]} for
a long one of floats and ints), {"S": [...]} set, {"F": [...]} frozenset,
{"D": [[k, v], ...]} dict (any plain hashable key), {"n": [dtype, value]} a numpy scalar and
{"a": [dtype, shape, [values]]} a numpy array of a numeric or bool dtype. The judge decodes
with `decode`, which accepts nothing else, so an object with an `__eq__` of its own cannot
reach a comparison.

This file is also the encoder inside the sandbox: execute.py sends its text to the child
that runs the sample, so it imports only the standard library (numpy only when the value is
one of its types) and has no `from __future__` line.
"""

import array
import base64
import binascii
import itertools
import json
import math
import operator

NATIVE = frozenset({type(None), bool, int, float, str})  # what JSON holds as it is
NUMPY_KINDS = "biufc"
PACKED_MIN = 64  # a longer list of numbers with floats goes as packed doubles (C speed)  # bool, signed and unsigned ints, floats, complex: never object dtype
MAX_DEPTH = 200


class NotPlain(ValueError):
    """A value (or a message) that is not a plain value."""


def encode(value) -> str:
    """The tagged JSON text of `value`; NotPlain when it holds anything but plain values.
    Subclasses of the plain types (a namedtuple, an OrderedDict, an IntEnum) are sent as
    their base type's contents, so what crosses is the value, not the subclass."""
    try:
        return json.dumps(_tagged(value, 0), allow_nan=False, separators=(",", ":"))
    except RecursionError:
        raise NotPlain("nested too deeply (or contains itself)") from None


def _tagged(x, depth):
    if depth > MAX_DEPTH:
        raise NotPlain("nested too deeply (or contains itself)")
    t = type(x)
    if x is None or t is bool or t is str:
        return x
    if t is int:  # beyond 64 bits in hex: JSON's decimal ints stop at 4,300 digits
        return x if -(1 << 63) <= x < (1 << 63) else {"i": format(x, "x")}
    if t is float:  # JSON's own syntax (repr, exact) tells it from an int; nan, inf tagged
        return x if math.isfinite(x) else {"f": repr(x)}
    if t is complex:
        return {"c": [repr(x.real), repr(x.imag)]}
    if t is bytes:
        return {"b": x.hex()}
    if t is list or t is tuple:
        tag = "L" if t is list else "T"
        kinds = set(map(type, x))
        if len(x) >= PACKED_MIN and float in kinds and kinds <= {int, float}:
            where = itertools.compress(range(len(x)), map(operator.is_, map(type, x),
                                                          itertools.repeat(int)))
            ints = [[i, x[i]] for i in where] if int in kinds else []
            if all(-(1 << 63) <= v < (1 << 63) for _, v in ints):
                floats = array.array("d", x)  # ints too, exactly below 2**53; put back below
                return {tag + "d": [base64.b64encode(floats.tobytes()).decode(), ints]}
        if kinds <= NATIVE and (int not in kinds or all(
                -(1 << 63) <= v < (1 << 63) for v in x if type(v) is int)) and (
                float not in kinds or all(math.isfinite(v) for v in x if type(v) is float)):
            return {tag: list(x)}  # JSON as it is: the fast path for long outputs
        return {tag: [_tagged(v, depth + 1) for v in x]}
    if t is set or t is frozenset:
        return {"S" if t is set else "F": [_tagged(v, depth + 1) for v in x]}
    if t is dict:
        return {"D": [[_tagged(k, depth + 1), _tagged(v, depth + 1)] for k, v in x.items()]}
    numpy = _numpy_of(t)
    if numpy is not None:
        if isinstance(x, numpy.ndarray):
            if x.dtype.kind not in NUMPY_KINDS:
                raise NotPlain(f"a numpy array of dtype {x.dtype}")
            return {"a": [x.dtype.str, list(x.shape),
                          [_tagged(v, depth + 1) for v in x.ravel().tolist()]]}
        if isinstance(x, numpy.generic) and x.dtype.kind in NUMPY_KINDS:
            return {"n": [x.dtype.str, _tagged(x.item(), depth + 1)]}
    for base in (bool, int, float, str, bytes, complex, tuple, list, frozenset, set, dict):
        if isinstance(x, base):
            return _tagged(base(x), depth)
    raise NotPlain(f"a {t.__module__}.{t.__qualname__}")


def _numpy_of(t):
    if not t.__module__.startswith("numpy"):
        return None
    import numpy

    return numpy


def decode(text: str):
    """The plain value of a tagged JSON text; NotPlain for anything else (an unknown tag,
    a malformed payload, an unhashable key or set member, NaN spelled as JSON)."""
    try:
        raw = json.loads(text, parse_constant=_no_constant)
        return _untagged(raw, 0)
    except RecursionError:
        raise NotPlain("nested too deeply") from None
    except (TypeError, ValueError, binascii.Error) as err:
        if isinstance(err, NotPlain):
            raise
        raise NotPlain(f"{type(err).__name__}: {err}") from None


def _no_constant(name):
    raise NotPlain(f"bare {name} (floats are tagged)")


def _untagged(x, depth):
    if depth > MAX_DEPTH:
        raise NotPlain("nested too deeply")
    if type(x) in NATIVE:
        return x
    if type(x) is not dict or len(x) != 1:
        raise NotPlain(f"untagged {type(x).__name__}")
    (tag, v), = x.items()
    if tag == "f" and type(v) is str:
        return float(v)
    if tag == "i" and type(v) is str:
        return int(v, 16)
    if tag == "c" and _pair_of_str(v):
        return complex(float(v[0]), float(v[1]))
    if tag == "b" and type(v) is str:
        return bytes.fromhex(v)
    if tag in ("Ld", "Td") and type(v) is list and len(v) == 2 and type(v[0]) is str \
            and type(v[1]) is list:
        raw = base64.b64decode(v[0], validate=True)
        if len(raw) % 8:
            raise NotPlain("packed doubles of a length that is no multiple of 8")
        values = array.array("d", raw).tolist()
        for pair in v[1]:
            if not (type(pair) is list and len(pair) == 2 and type(pair[0]) is int
                    and type(pair[1]) is int and 0 <= pair[0] < len(values)):
                raise NotPlain("a malformed int in packed doubles")
            values[pair[0]] = pair[1]
        return values if tag == "Ld" else tuple(values)
    if tag in ("L", "T", "S", "F") and type(v) is list:
        items = v if set(map(type, v)) <= NATIVE else [_untagged(i, depth + 1) for i in v]
        return {"L": list, "T": tuple, "S": set, "F": frozenset}[tag](items)
    if tag == "D" and type(v) is list and all(type(p) is list and len(p) == 2 for p in v):
        return {_untagged(k, depth + 1): _untagged(i, depth + 1) for k, i in v}
    if tag == "n" and type(v) is list and len(v) == 2:
        dtype = _dtype(v[0])
        return dtype.type(_untagged(v[1], depth + 1))
    if tag == "a" and type(v) is list and len(v) == 3 and type(v[1]) is list \
            and all(type(n) is int and n >= 0 for n in v[1]) and type(v[2]) is list:
        import numpy

        dtype = _dtype(v[0])
        values = [_untagged(i, depth + 1) for i in v[2]]
        if math.prod(v[1]) != len(values):
            raise NotPlain(f"an array of shape {v[1]} with {len(values)} values")
        return numpy.array(values, dtype=dtype).reshape(v[1])
    raise NotPlain(f"an unknown or malformed tag {tag!r}")


def _pair_of_str(v):
    return type(v) is list and len(v) == 2 and all(type(i) is str for i in v)


def _dtype(name):
    import numpy

    if type(name) is not str:
        raise NotPlain("a dtype that is not a string")
    dtype = numpy.dtype(name)
    if dtype.kind not in NUMPY_KINDS:
        raise NotPlain(f"dtype {name!r}")
    return dtype
