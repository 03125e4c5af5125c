"""pepnet for PyTorch: the STAR-PEPNet model of pepnet as a torch.nn.Module.

The module's ``state_dict`` maps one to one onto the tensor names of ``docs/model.md``
(``emb.feature.0``, ``pn.running_var``, ``tower.0.1.w``, ...), so weights move between PyTorch and
the PostgreSQL extension as safetensors without renaming:

    import pepnet
    m = pepnet.StarPepNet({"domains": 3, "features": [{"name": "item", "buckets": 100000}]})
    ...train...
    version = pepnet.db.import_module(conn, "ctr", m)        # pepnet_import, a new version
    m2 = pepnet.db.load_module(conn, "ctr@%d" % version)      # pepnet_export + the stored config

Installed with ``pip install ./python`` (torch and numpy; the extras ``db`` for psycopg2, which
``pepnet.db`` needs, and ``plot`` for matplotlib, which ``pepnet-plot`` / ``python3 -m pepnet.plot``
needs); Debian's python3-torch, python3-numpy and python3-psycopg2 serve it as they are.
"""
from .config import Config, ConfigError
from .hashing import slots, splitmix64, text_id
from .model import StarPepNet, Optimizer, StateDictError, ColumnError, build_vocab, dense_stats, dense_transform, vocab_rows
from .safetensors import SafetensorsError, load, loads, save, dumps

__all__ = ["Config", "ConfigError", "StarPepNet", "Optimizer", "StateDictError", "ColumnError", "SafetensorsError",
           "build_vocab", "vocab_rows", "dense_stats", "dense_transform", "slots", "splitmix64", "text_id", "load", "loads", "save", "dumps"]
__version__ = "0.3.0"


def __getattr__(name):
    """Import pepnet.db (psycopg2) only when it is used."""
    if name in ("db", "plot"):
        import importlib
        return importlib.import_module(__name__ + "." + name)
    raise AttributeError("module 'pepnet' has no attribute %r" % name)
