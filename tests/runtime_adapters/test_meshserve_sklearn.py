"""meshserve's sklearn class for the MLServer a node starts: the first load
of a file is joblib's, later loads of the same file come from a kept plain
pickle (no joblib at all), and a changed file is never served from a stale
copy. Run in MLServer's venv, where the class lives."""

from __future__ import annotations

import pathlib
import textwrap

import joblib
from sklearn import datasets, linear_model

from tests.runtime_adapters import mlserver_venv

SCRIPT = textwrap.dedent(
    """
    import sys, joblib, numpy as np
    import meshserve_sklearn as ms
    path = __import__("pathlib").Path(sys.argv[1])
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    first = ms.load_model(path).predict(x).tolist()
    kept = ms.kept_path(path).is_file()

    def refuse(*a, **k):
        raise AssertionError("joblib.load called for a file with a kept pickle")

    real, joblib.load = joblib.load, refuse
    second = ms.load_model(path).predict(x).tolist()
    joblib.load = real
    print(first, kept, second)
    """
)


def run(path: pathlib.Path) -> str:
    return mlserver_venv.run(SCRIPT, str(path))


def test_a_second_load_of_the_same_file_reads_the_kept_pickle(tmp_path: pathlib.Path) -> None:
    x, y = datasets.load_iris(return_X_y=True)
    model = linear_model.LogisticRegression(max_iter=500).fit(x, y)
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    assert run(path) == "[0, 2] True [0, 2]"
    # A changed file (another model in its place) is loaded again, not served stale.
    joblib.dump(linear_model.LogisticRegression(max_iter=500).fit(x, (y == 2).astype(int)), path)
    assert run(path) == "[0, 1] True [0, 1]"
