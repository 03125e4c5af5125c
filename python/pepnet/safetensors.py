"""The safetensors format, read and written here (Debian ships no safetensors package).

A file is: 8 bytes, the header length N as a little-endian uint64; N bytes of JSON, an object
mapping each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (byte offsets into
the data that follows, relative to its start) plus an optional ``"__metadata__"`` object of strings;
then the data, every tensor's elements little-endian and row-major.

``dumps`` writes the same bytes as the extension's ``pepnet_export`` for the same tensors in the
same order (compact JSON, ``__metadata__`` ``{"format": "pt"}`` first, the header padded with
spaces to a multiple of 8), so export -> ``loads`` -> ``dumps`` gives back the exported blob.
``loads`` reads F32, F64, F16, BF16, I64, I32, I16, I8, U8 and BOOL and refuses anything malformed
with a SafetensorsError that says what is wrong.
"""
import json
import struct

import numpy as np
import torch

MAX_HEADER = 100 * 1024 * 1024

# dtype name -> (numpy little-endian dtype or None, torch dtype, bytes per element)
_DTYPES = {
    "F32": (np.dtype("<f4"), torch.float32, 4),
    "F64": (np.dtype("<f8"), torch.float64, 8),
    "F16": (np.dtype("<f2"), torch.float16, 2),
    "BF16": (None, torch.bfloat16, 2),
    "I64": (np.dtype("<i8"), torch.int64, 8),
    "I32": (np.dtype("<i4"), torch.int32, 4),
    "I16": (np.dtype("<i2"), torch.int16, 2),
    "I8": (np.dtype("i1"), torch.int8, 1),
    "U8": (np.dtype("u1"), torch.uint8, 1),
    "BOOL": (np.dtype("?"), torch.bool, 1),
}
_NAMES = {v[1]: k for k, v in _DTYPES.items()}


class SafetensorsError(ValueError):
    """Malformed safetensors input, or a tensor that cannot be written."""


def _header_of(tensors, metadata):
    """(header bytes padded to 8, list of raw data chunks) for {name: tensor}."""
    parts = ['{"__metadata__":%s' % json.dumps({str(k): str(v) for k, v in metadata.items()},
                                                separators=(",", ":"))] if metadata is not None else ["{"]
    chunks, off = [], 0
    for name, t in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise SafetensorsError("tensor name %r is not allowed: use a non-empty string other than __metadata__"
                                   % (name,))
        if isinstance(t, np.ndarray):
            t = torch.from_numpy(t)
        if not isinstance(t, torch.Tensor):
            raise SafetensorsError("value of tensor %r is a %s, expected a torch tensor or numpy array"
                                   % (name, type(t).__name__))
        if t.dtype not in _NAMES:
            raise SafetensorsError("tensor %r has dtype %s, which safetensors cannot hold here (use one of %s)"
                                   % (name, t.dtype, ", ".join(sorted(_DTYPES))))
        t = t.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            raw = t.view(torch.int16).numpy().astype("<i2").tobytes()
        else:
            raw = t.numpy().astype(_DTYPES[_NAMES[t.dtype]][0], copy=False).tobytes()
        sep = "," if len(parts) > 1 or metadata is not None else ""
        parts.append('%s%s:{"dtype":"%s","shape":[%s],"data_offsets":[%d,%d]}'
                     % (sep, json.dumps(name), _NAMES[t.dtype], ",".join(str(int(s)) for s in t.shape),
                        off, off + len(raw)))
        chunks.append(raw)
        off += len(raw)
    parts.append("}")
    h = "".join(parts).encode("utf-8")
    return h + b" " * (-len(h) % 8), chunks


def dumps(tensors, metadata={"format": "pt"}):
    """safetensors bytes of an ordered {name: tensor} (the order is kept); metadata None omits it."""
    h, chunks = _header_of(tensors, metadata)
    return struct.pack("<Q", len(h)) + h + b"".join(chunks)


def save(tensors, path, metadata={"format": "pt"}):
    """Write {name: tensor} to a .safetensors file."""
    with open(path, "wb") as f:
        f.write(dumps(tensors, metadata))


def _check_pairs(pairs):
    """object_pairs_hook refusing duplicate keys."""
    seen = set()
    for k, _ in pairs:
        if k in seen:
            raise SafetensorsError("safetensors header names %r twice" % k)
        seen.add(k)
    return dict(pairs)


def header(buf):
    """(header dict in file order, data start offset) of safetensors bytes, checked for shape only."""
    buf = memoryview(buf)
    if len(buf) < 8:
        raise SafetensorsError("not safetensors: %d bytes, too short for the 8-byte header length" % len(buf))
    (n,) = struct.unpack_from("<Q", buf, 0)
    if n > MAX_HEADER or n > len(buf) - 8:
        raise SafetensorsError("not safetensors: header length %d does not fit in %d bytes" % (n, len(buf)))
    try:
        h = json.loads(bytes(buf[8:8 + n]).decode("utf-8"), object_pairs_hook=_check_pairs)
    except SafetensorsError:
        raise
    except (UnicodeDecodeError, ValueError) as e:
        raise SafetensorsError("safetensors header is not valid UTF-8 JSON: %s" % e) from None
    if not isinstance(h, dict):
        raise SafetensorsError("safetensors header is a JSON %s, expected an object" % type(h).__name__)
    return h, 8 + n


def loads(buf, with_metadata=False):
    """{name: torch tensor} (file order) of safetensors bytes; also the metadata if with_metadata.

    Every tensor is checked: known dtype, a shape of non-negative integers, data_offsets inside the
    data whose length matches the shape; tensors may not overlap and must cover all the data.
    """
    buf = bytes(buf)
    h, start = header(buf)
    dlen = len(buf) - start
    meta = h.pop("__metadata__", None)
    if meta is not None and (not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values())):
        raise SafetensorsError("safetensors __metadata__ must be an object of strings")
    out, spans = {}, []
    for name, info in h.items():
        if not isinstance(info, dict):
            raise SafetensorsError("safetensors entry %r is not an object" % name)
        extra = set(info) - {"dtype", "shape", "data_offsets"}
        if extra:
            raise SafetensorsError("safetensors entry %r has unknown keys %s" % (name, sorted(extra)))
        dt = info.get("dtype")
        if dt not in _DTYPES:
            raise SafetensorsError("tensor %r has dtype %r, expected one of %s" % (name, dt, ", ".join(sorted(_DTYPES))))
        shape = info.get("shape")
        if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
            raise SafetensorsError("tensor %r has shape %r, expected a list of non-negative integers" % (name, shape))
        off = info.get("data_offsets")
        if (not isinstance(off, list) or len(off) != 2 or not all(type(o) is int for o in off)
                or not 0 <= off[0] <= off[1] <= dlen):
            raise SafetensorsError("tensor %r has data_offsets %r outside the %d bytes of data" % (name, off, dlen))
        npdt, tdt, size = _DTYPES[dt]
        numel = 1
        for s in shape:
            numel *= s
        if off[1] - off[0] != numel * size:
            raise SafetensorsError("tensor %r has %d bytes of data, its shape %s of %s needs %d"
                                   % (name, off[1] - off[0], shape, dt, numel * size))
        spans.append((off[0], off[1], name))
        chunk = buf[start + off[0]:start + off[1]]
        if npdt is None:  # BF16
            a = np.frombuffer(chunk, dtype="<i2").astype(np.int16)
            t = torch.from_numpy(a.copy()).view(torch.bfloat16)
        else:
            t = torch.from_numpy(np.frombuffer(chunk, dtype=npdt).astype(npdt.newbyteorder("="), copy=True))
        out[name] = t.reshape(shape)
    spans.sort()
    covered = 0
    for i, (b, e, name) in enumerate(spans):
        if i and b < spans[i - 1][1]:
            raise SafetensorsError("tensors %r and %r overlap in the data" % (spans[i - 1][2], name))
        covered += e - b
    if covered != dlen:
        raise SafetensorsError("safetensors data has %d bytes that no tensor uses" % (dlen - covered))
    return (out, meta) if with_metadata else out


def load(path, with_metadata=False):
    """{name: torch tensor} of a .safetensors file."""
    with open(path, "rb") as f:
        return loads(f.read(), with_metadata)
