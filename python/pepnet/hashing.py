"""Ids to embedding rows (docs/model.md, "Hashing"): splitmix64, on torch int64 tensors.

Field ``i`` (0-based, counted separately for features and persona) with ``buckets`` rows maps an
int64 id to ``splitmix64(uint64(id) + 0x9E3779B97F4A7C15 * (i + 1)) % buckets``; a field with
``"hash": false`` uses the id itself and refuses ids outside ``[0, buckets)``.

torch has no uint64 arithmetic: the 64-bit products wrap in int64 (two's complement, the same
bits as uint64), right shifts are made logical with a mask, and the unsigned remainder is
assembled from the two 32-bit halves, so hashing runs on any device.
"""
import torch

GOLDEN = 0x9E3779B97F4A7C15
MASK64 = (1 << 64) - 1


def _s64(u):
    """A uint64 constant as the int64 with the same bits."""
    u &= MASK64
    return u - (1 << 64) if u >= 1 << 63 else u


_M1 = _s64(0xBF58476D1CE4E5B9)
_M2 = _s64(0x94D049BB133111EB)


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
