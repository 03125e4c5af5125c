"""The Python package installs as a user installs it: `pip install ./python` in a virtual environment.

A virtual environment made with /usr/bin/python3 -m venv --system-site-packages (torch, numpy and
psycopg2 come from Debian's packages; setuptools too), then pip install --no-index
--no-build-isolation of a copy of python/ (offline: nothing from PyPI; the copy keeps build files
out of the repository). Then, in that environment and outside the repository: `import pepnet` is
the installed copy, its metadata (version 0.3.0, torch and numpy required, psycopg2 an extra), a
model scores, float ids are refused, the named form (text ids, NULL ids) scores and refuses float ids
the same way, the pepnet-plot command runs, and ./python[db] resolves.
Prints one line per check and ends with "N passed, M failed"; exit 1 if any check failed.
"""
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = []


def check(name, ok, detail=""):
    RESULTS.append(bool(ok))
    print("%s - %s%s" % ("ok" if ok else "not ok", name, (" (%s)" % detail) if detail else ""), flush=True)


def run(cmd, cwd):
    """(exit code, stdout + stderr) of a command; PYTHONPATH cleared so only installed code counts."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_INDEX_URL", "PIP_FIND_LINKS")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return p.returncode, p.stdout


CHECK = r'''
import importlib.metadata as md, os, sys
import numpy as np, pepnet
print("file", pepnet.__file__)
print("version", pepnet.__version__, md.version("pepnet"))
req = md.requires("pepnet")
print("requires", "|".join(sorted(req)))
m = pepnet.StarPepNet({"domains": 3, "features": [{"name": "item", "buckets": 1000}],
                       "persona": [{"name": "user", "buckets": 100}], "hidden": [8], "emb_dim": 4}, seed=7)
p = m.predict([0, 2], [[5], [6]], np.array([[1001], [1002]], dtype=np.int64))
print("scores", tuple(p.shape), bool(((p >= 0) & (p <= 1)).all()))
try:
    m.predict([0], [[5]], np.array([[float("nan")]]))
    print("floatids accepted")
except ValueError as e:
    print("floatids refused", "nan" in str(e) and "astype" in str(e))
n = pepnet.StarPepNet({"inputs": "columns", "domains": 2, "features": [{"name": "item", "buckets": 1000}],
                       "hidden": [8], "emb_dim": 4}, seed=7)
q = n.predict({"domain": [0, 1, 1], "item": ["zürich", None, 17]})
print("named", tuple(q.shape), pepnet.text_id("zürich"))
try:
    n.predict({"domain": [0], "item": np.array([float("nan")])})
    print("namedfloat accepted")
except ValueError as e:
    print("namedfloat refused", '(column "item") holds nan' in str(e) and "astype" in str(e))
'''


def main():
    py = "/usr/bin/python3"
    with tempfile.TemporaryDirectory(prefix="pepnet-venv-") as tmp:
        venv, src, elsewhere = os.path.join(tmp, "venv"), os.path.join(tmp, "src"), os.path.join(tmp, "cwd")
        shutil.copytree(os.path.join(ROOT, "python"), src,
                        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
        os.mkdir(elsewhere)
        rc, out = run([py, "-m", "venv", "--system-site-packages", venv], tmp)
        check("python3 -m venv --system-site-packages", rc == 0, out.strip()[-300:])
        if rc:
            return
        vpy, pip = os.path.join(venv, "bin", "python"), os.path.join(venv, "bin", "pip")
        rc, out = run([pip, "install", "--no-index", "--no-build-isolation", src], elsewhere)
        check("pip install --no-index --no-build-isolation ./python", rc == 0 and "Successfully installed pepnet-0.3.0" in out,
              out.strip().splitlines()[-1] if out.strip() else "")
        if rc:
            print(out)
            return
        rc, out = run([vpy, "-c", CHECK], elsewhere)
        lines = dict(l.split(" ", 1) for l in out.splitlines() if " " in l)
        check("import pepnet in the venv runs", rc == 0, out.strip()[-300:] if rc else "")
        site = os.path.join(venv, "lib")
        check("pepnet is the installed copy (venv site-packages, not the repository)",
              lines.get("file", "").startswith(site), lines.get("file"))
        control = open(os.path.join(ROOT, "pepnet.control")).read()
        ext = control.split("default_version", 1)[1].split("'")[1]
        check("pepnet.__version__ and the distribution's version are the extension's (%s)" % ext,
              lines.get("version") == "%s %s" % (ext, ext), lines.get("version"))
        req = lines.get("requires", "")
        items = [r.translate(str.maketrans("", "", " ()'\"")) for r in req.split("|")]
        check("metadata: torch and numpy required, psycopg2 an optional extra (db)",
              "torch>=1.12" in items and "numpy>=1.21" in items and "psycopg2>=2.8;extra==db" in items, req)
        check("a model scores in the venv: [2, 1] probabilities", lines.get("scores") == "(2, 1) True", lines.get("scores"))
        check("float ids refused in the venv (NaN: ValueError with the cast to make)",
              lines.get("floatids") == "refused True", lines.get("floatids"))
        check("the named form in the venv: a batch of text, NULL and integer ids scores; text_id('zürich')",
              lines.get("named") == "(3, 1) -7350671518096820925", lines.get("named"))
        check("named float ids refused in the venv as in the arrays form (NaN: ValueError with the cast)",
              lines.get("namedfloat") == "refused True", lines.get("namedfloat"))
        rc, out = run([os.path.join(venv, "bin", "pepnet-plot"), "--help"], elsewhere)
        check("the pepnet-plot command is installed", rc == 0 and "lineage" in out, out.strip()[-200:])
        rc, out = run([pip, "install", "--no-index", "--no-build-isolation", src + "[db]"], elsewhere)
        check("pip install './python[db]' resolves psycopg2 offline", rc == 0, out.strip()[-300:] if rc else "")
        rc, out = run([vpy, "-c", "import pepnet.db, psycopg2; print(pepnet.db.__file__)"], elsewhere)
        check("pepnet.db imports in the venv", rc == 0 and out.strip().startswith(site), out.strip()[-200:])
        rc, out = run([pip, "uninstall", "-y", "pepnet"], elsewhere)
        rc2, out2 = run([vpy, "-c", "import pepnet"], elsewhere)
        check("pip uninstall pepnet removes it", rc == 0 and rc2 != 0, out2.strip()[-120:])


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001
        check("test ran without error", False, "%s: %s" % (type(e).__name__, e))
    print("%d passed, %d failed" % (RESULTS.count(True), RESULTS.count(False)))
    sys.exit(0 if all(RESULTS) and RESULTS else 1)
