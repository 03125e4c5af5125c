"""Ids to embedding rows (docs/model.md, "Hashing"): splitmix64, on torch int64 tensors.

Field ``i`` (0-based, counted separately for features and persona) with ``buckets`` rows maps an
int64 id to ``splitmix64(uint64(id) + 0x9E3779B97F4A7C15 * (i + 1)) % buckets``; a field with
``"hash": false`` uses the id itself and refuses ids outside ``[0, buckets)``.

torch has no uint64 arithmetic: the 64-bit products wrap in int64 (two's complement, the same
bits as uint64), right shifts are made logical with a mask, and the unsigned remainder is
assembled from the two 32-bit halves, so hashing runs on any device.
"""
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


def slots(ids, field_index, buckets, hash=True, name=None):
    """Embedding rows [*] (int64) of ids [*] (int64 tensor) in one field.

    ``field_index`` is the 0-based position of the field in its list, ``buckets`` its row count.
    Raises ValueError for an id outside [0, buckets) of an unhashed field.
    """
    ids = torch.as_tensor(ids, dtype=torch.int64)
    if not hash:
        if ids.numel():
            bad = (ids < 0) | (ids >= buckets)
            if bool(bad.any()):
                raise ValueError("id %d of unhashed field %s is outside [0, %d)"
                                 % (int(ids[bad].flatten()[0]), name if name else field_index, buckets))
        return ids
    z = ids + _s64(GOLDEN * (field_index + 1))
    return _umod(_splitmix64_t(z), int(buckets))
