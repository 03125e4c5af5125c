"""Ids to embedding rows (docs/model.md, "Hashing"): splitmix64, on torch int64 tensors.

Field ``i`` (0-based, counted separately for features and persona) with ``buckets`` rows maps an
int64 id to ``splitmix64(uint64(id) + 0x9E3779B97F4A7C15 * (i + 1)) % buckets``; a field with
``"hash": false`` uses the id itself and refuses ids outside ``[0, buckets)``.

torch has no uint64 arithmetic: the 64-bit products wrap in int64 (two's complement, the same
bits as uint64), right shifts are made logical with a mask, and the unsigned remainder is
assembled from the two 32-bit halves, so hashing runs on any device.

Ids must be integers: ``as_ids`` refuses floating-point, boolean and other non-integer inputs
(a float64 id column, what pandas makes of an id column with a missing value, holds integers
exactly only up to 2^53, so larger ids would hash differently from SQL; NaN has no id at all).
"""
import numbers
import uuid

import numpy as np
import torch

GOLDEN = 0x9E3779B97F4A7C15
MASK64 = (1 << 64) - 1


def _s64(u):
    """A uint64 constant as the int64 with the same bits."""
    u &= MASK64
    return u - (1 << 64) if u >= 1 << 63 else u


_M1 = _s64(0xBF58476D1CE4E5B9)
_M2 = _s64(0x94D049BB133111EB)
TEXT_SEED = 0x6A09E667F3BCC909


def _text_bytes(v):
    """The UTF-8 bytes a text id hashes: str as UTF-8, uuid.UUID as its canonical lower-case hyphenated
    text, bytes as they are (already UTF-8)."""
    if isinstance(v, str):
        try:
            return v.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError("text id %r is not valid Unicode (it cannot be encoded as UTF-8): %s" % (v, e)) from None
    if isinstance(v, uuid.UUID):
        return str(v).encode("ascii")
    if isinstance(v, (bytes, bytearray, np.bytes_)):
        return bytes(v)
    if v is None:
        raise TypeError("text id is None: a NULL id has no text id (a named field maps it to its missing row)")
    raise TypeError("a text id is a str, bytes (UTF-8) or uuid.UUID, got %s %r" % (type(v).__name__, v))


def _text_id_bytes(b):
    """text_id of one bytes value, as a Python int in [0, 2^64)."""
    state = TEXT_SEED
    for c in b:
        state = splitmix64(state ^ c)
    return state


def _splitmix64_np(z):
    """splitmix64 on a numpy uint64 array, wrapping."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _text_ids_np(values):
    """text_id of a sequence of text values: an int64 numpy array [n]. Distinct values are encoded and
    hashed once, all of them together, one byte position at a time (longest first)."""
    index = {}
    try:
        pos = np.fromiter((index.setdefault(v, len(index)) for v in values), np.int64, len(values))
    except TypeError:  # an unhashable value: _text_bytes says what it is
        for v in values:
            _text_bytes(v)
        raise
    uniq = [_text_bytes(v) for v in index]
    n = len(uniq)
    lens = np.fromiter(map(len, uniq), np.int64, n)
    order = np.argsort(-lens, kind="stable")          # longest first: rows still hashing are a prefix
    lens_s = lens[order]
    starts = np.zeros(n, np.int64)
    if n:
        starts[1:] = np.cumsum(lens)[:-1]
    starts_s = starts[order]
    buf = np.frombuffer(b"".join(uniq), np.uint8).astype(np.uint64)
    state = np.full(n, TEXT_SEED, np.uint64)
    maxlen = int(lens_s[0]) if n else 0
    neg = -lens_s                                     # ascending
    for j in range(maxlen):
        m = int(np.searchsorted(neg, -j, side="left"))  # rows with more than j bytes
        state[:m] = _splitmix64_np(state[:m] ^ buf[starts_s[:m] + j])
    out = np.empty(n, np.uint64)
    out[order] = state
    return out.view(np.int64)[pos]


def text_id(s):
    """The int64 id of a text id (docs/model.md, "Hashing ids": text ids, since 0.3.0).

    From the UTF-8 bytes of the text: ``state = 0x6A09E667F3BCC909``, then for each byte ``c``
    ``state = splitmix64(state ^ c)``; the id is ``state`` as an int64 (two's complement). The id is then
    hashed into its field's buckets like any integer id (``slots``). The extension computes the same
    (``pn_text_id``) for text, varchar, bpchar (trailing blanks removed) and uuid columns.

    s: a str (hashed as UTF-8), bytes (taken as UTF-8 bytes), uuid.UUID (its canonical lower-case
    hyphenated text, as PostgreSQL's uuid output), or an array-like of them (list, tuple, numpy array
    of str/bytes/objects, pandas Series): an int for a scalar, an int64 numpy array of the same shape
    otherwise. None (NULL) has no text id: TypeError.
    """
    if isinstance(s, (str, bytes, bytearray, uuid.UUID, np.str_, np.bytes_)):
        u = _text_id_bytes(_text_bytes(s))
        return u - (1 << 64) if u >= 1 << 63 else u
    if hasattr(s, "to_numpy") and not isinstance(s, np.ndarray):
        s = s.to_numpy()
    a = np.asarray(s, dtype=object) if not isinstance(s, np.ndarray) else s
    if a.ndim == 0:
        u = _text_id_bytes(_text_bytes(a.item()))
        return u - (1 << 64) if u >= 1 << 63 else u
    flat = a.reshape(-1)
    return _text_ids_np(flat.tolist()).reshape(a.shape)


def splitmix64(z):
    """splitmix64 finaliser of a Python int (uint64 wrapping); returns an int in [0, 2^64)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def _shr(z, s):
    """Logical right shift of int64 bits."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _splitmix64_t(z):
    """splitmix64 on an int64 tensor (bits as uint64)."""
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


def _umod(z, m):
    """uint64(z) % m for an int64 tensor z and 1 <= m <= 2^31."""
    hi = _shr(z, 32)
    lo = z & 0xFFFFFFFF
    return ((hi % m) * ((1 << 32) % m) + lo) % m


_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_CAST = ("fill or drop missing values, then cast to an integer dtype, e.g. "
         "df[col].fillna(0).astype('int64') or np.asarray(ids, dtype=np.int64)")


def _where(index, shape, fields):
    """' at [i, j] (field 'item')' for an element of an id array."""
    if not shape:
        return ""
    pos = np.unravel_index(index, shape)
    out = " at [%s]" % ", ".join(str(int(i)) for i in pos)
    if fields is not None and len(shape) >= 1 and int(pos[-1]) < len(fields):
        out += " (field %r)" % fields[int(pos[-1])]
    return out


def refuse_float_ids(a, what, where=None, hint=_CAST, ids_are="ids must have an integer dtype", dtype=None):
    """Raise for floating-point ids, the one refusal of both input forms (the arrays of ``as_ids`` and
    the id columns of a named batch): ValueError naming the first NaN/infinite element (a missing
    value) or non-integral one, else TypeError (integral floats are refused too: above 2^53 they are
    not the ids they show).

    a: a numpy float or complex array, or a 0-d one for one element of an object column; what: the
    argument or field ("features", 'feature field 0 "item" (column "item")'); where(i): the place of
    flat element i (" at [0, 1] (field 'item')", " at row 3"); hint: the fix to make; ids_are: what
    ids must be; dtype: the dtype (or the element's type) to name.
    """
    a = np.asarray(a)
    flat = a.reshape(-1)
    at = where or (lambda i: "")
    dtype = dtype or str(a.dtype)
    is_float = ("%s holds a %s%s" % (what, dtype, at(0))) if a.ndim == 0 else ("%s is %s" % (what, dtype))
    if np.iscomplexobj(flat):
        raise TypeError("%s: %s; %s" % (is_float, ids_are, hint))
    bad = np.flatnonzero(~np.isfinite(flat))
    if bad.size:
        raise ValueError("%s holds %r%s, which is not an id (a missing value?): %s"
                         % (what, float(flat[bad[0]]), at(bad[0]), hint))
    bad = np.flatnonzero(flat != np.trunc(flat))
    if bad.size:
        raise ValueError("%s holds %r%s, which is not an integer id: %s; %s"
                         % (what, float(flat[bad[0]]), at(bad[0]), ids_are, hint))
    raise TypeError("%s: %s (floating point holds integers exactly only up to 2^53 (float64) "
                    "or 2^24 (float32), so larger ids would hash differently from SQL); %s"
                    % (is_float, ids_are, hint))


def as_ids(v, what="ids", fields=None, device=None):
    """Ids (tensor, numpy array, list or scalar) as an int64 tensor, refusing what is not integer.

    Integer dtypes pass (uint64 only below 2^63); floating-point, complex and boolean inputs and
    object arrays with anything but ints in the int64 range raise TypeError (wrong dtype) or
    ValueError (NaN, non-integral or out-of-range values), naming ``what`` and, with ``fields``
    (the names of the last axis), the field.
    """
    if torch.is_tensor(v):
        if (v.dtype.is_floating_point or v.dtype.is_complex) and v.numel():
            a = v.detach().cpu().to(torch.float64 if not v.dtype.is_complex else torch.complex128).numpy()
            refuse_float_ids(a, what, lambda i: _where(i, a.shape, fields), dtype=str(v.dtype).replace("torch.", ""))
        if v.dtype == torch.bool:
            raise TypeError("%s is a bool tensor: ids must have an integer dtype" % what)
        return v.to(device=device if device is not None else v.device, dtype=torch.int64)
    a = np.asarray(v)
    kind = a.dtype.kind
    if kind == "i":
        a = a.astype(np.int64, copy=False)
    elif kind == "u":
        if a.size and int(a.max()) > _INT64_MAX:
            i = int(np.argmax(a.reshape(-1)))
            raise ValueError("%s holds %d%s, beyond the int8 ids SQL has (at most 2^63 - 1)"
                             % (what, int(a.reshape(-1)[i]), _where(i, a.shape, fields)))
        a = a.astype(np.int64)
    elif kind in "fc" and a.size:
        refuse_float_ids(a, what, lambda i: _where(i, a.shape, fields))
    elif kind in "fc" or (kind == "O" and not a.size):
        a = a.astype(np.int64)          # no ids at all (np.asarray([]) is float64)
    elif kind == "O":
        flat = a.reshape(-1)
        for i, x in enumerate(flat):
            if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral):
                if isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_)):
                    refuse_float_ids(np.array(float(x)), what, lambda _: _where(i, a.shape, fields),
                                     dtype=type(x).__name__)
                raise TypeError("%s holds %r%s (%s), which is not an integer id: %s"
                                % (what, x, _where(i, a.shape, fields), type(x).__name__, _CAST))
            if not _INT64_MIN <= int(x) <= _INT64_MAX:
                raise ValueError("%s holds %d%s, outside the int8 ids SQL has" % (what, int(x), _where(i, a.shape, fields)))
        a = np.array([int(x) for x in flat], dtype=np.int64).reshape(a.shape)
    else:
        raise TypeError("%s is of dtype %s: ids must have an integer dtype; %s" % (what, a.dtype, _CAST))
    return torch.as_tensor(a, device=device)


def slots(ids, field_index, buckets, hash=True, name=None):
    """Embedding rows [*] (int64) of ids [*] (int64 tensor) in one field.

    ``field_index`` is the 0-based position of the field in its list, ``buckets`` its row count.
    Raises ValueError for an id outside [0, buckets) of an unhashed field, and TypeError or
    ValueError for ids that are not integers (see ``as_ids``).
    """
    ids = as_ids(ids, "ids of field %s" % (repr(name) if name else field_index))
    if not hash:
        if ids.numel():
            bad = (ids < 0) | (ids >= buckets)
            if bool(bad.any()):
                raise ValueError("id %d of unhashed field %s is outside [0, %d)"
                                 % (int(ids[bad].flatten()[0]), name if name else field_index, buckets))
        return ids
    z = ids + _s64(GOLDEN * (field_index + 1))
    return _umod(_splitmix64_t(z), int(buckets))
