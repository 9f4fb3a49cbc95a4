"""meshserve's sklearn class for the MLServer a node starts: an uncompressed
joblib file is read by the C unpickler into the very model ``joblib.load``
gives (plain arrays, same predictions), with no joblib; a model it had to
copy, or a file it leaves to joblib (compressed), is loaded once and later
from a kept plain pickle, and a changed file is never served from a stale
copy. Run in MLServer's venv, where the class lives."""

from __future__ import annotations

import pathlib
import textwrap

import joblib
import numpy as np
from sklearn import datasets, ensemble, linear_model, neighbors

from tests.runtime_adapters import mlserver_venv

LOAD_TWICE = textwrap.dedent(
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

READ_WITHOUT_JOBLIB = textwrap.dedent(
    """
    import sys, joblib, numpy as np
    import meshserve_sklearn as ms
    path = __import__("pathlib").Path(sys.argv[1])
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]])
    expected = joblib.load(path)

    def refuse(*a, **k):
        raise AssertionError("joblib.load called for an uncompressed file")

    joblib.load = refuse
    model = ms.load_model(path)
    arrays = [a for a in vars(model).values() if isinstance(a, np.ndarray)]
    for part in getattr(model, "estimators_", []):
        arrays += [a for a in vars(part).values() if isinstance(a, np.ndarray)]
    if hasattr(model, "_tree"):
        arrays += list(model._tree.get_arrays())
    kept = ms.kept_path(path).exists()
    if kept:  # read again from the kept pickle alone
        ms.read_joblib = refuse
        model = ms.load_model(path)
    print(
        np.array_equal(model.predict_proba(x), expected.predict_proba(x)),
        len(arrays) > 0 and all(type(a) is np.ndarray for a in arrays),
        kept,
    )
    """
)


def iris_model(kind: str) -> object:
    x, y = datasets.load_iris(return_X_y=True)
    if kind == "forest":
        return ensemble.RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    return neighbors.KNeighborsClassifier().fit(x, y)


def test_an_uncompressed_joblib_file_is_read_into_the_same_model_without_joblib(
    tmp_path: pathlib.Path,
) -> None:
    # A forest's arrays sit in its estimators' attributes: nothing is kept.
    # A KNN's sit in a compiled KD-tree, which the reader cannot reach into:
    # it copies the model through a pickle, kept for the next load.
    for kind, kept in (("forest", False), ("knn", True)):
        path = tmp_path / f"{kind}.joblib"
        joblib.dump(iris_model(kind), path)
        assert mlserver_venv.run(READ_WITHOUT_JOBLIB, str(path)) == f"True True {kept}", kind


def test_a_compressed_file_is_loaded_by_joblib_once_then_from_the_kept_pickle(
    tmp_path: pathlib.Path,
) -> None:
    x, y = datasets.load_iris(return_X_y=True)
    model = linear_model.LogisticRegression(max_iter=500).fit(x, y)
    path = tmp_path / "model.joblib"
    joblib.dump(model, path, compress=3)
    assert mlserver_venv.run(LOAD_TWICE, str(path)) == "[0, 2] True [0, 2]"
    # A changed file (another model in its place) is loaded again, not served stale.
    other = linear_model.LogisticRegression(max_iter=500).fit(x, (y == 2).astype(int))
    joblib.dump(other, path, compress=3)
    assert mlserver_venv.run(LOAD_TWICE, str(path)) == "[0, 1] True [0, 1]"


FREED_AT_ONCE = textwrap.dedent(
    """
    import gc, sys, tracemalloc
    import meshserve_sklearn as ms
    gc.disable()
    tracemalloc.start()
    model = ms.load_model(__import__("pathlib").Path(sys.argv[1]))
    held = tracemalloc.get_traced_memory()[0]
    del model
    print(held > 40_000_000, tracemalloc.get_traced_memory()[0] < 1_000_000)
    """
)


def test_a_dropped_models_arrays_are_freed_without_waiting_for_the_collector(
    tmp_path: pathlib.Path,
) -> None:
    # An unloaded model's memory must come back when MLServer drops it (the
    # node measures what a model takes), not at the next full collection.
    path = tmp_path / "model.joblib"
    joblib.dump({"weights": np.ones(6_000_000)}, path)
    assert mlserver_venv.run(FREED_AT_ONCE, str(path)) == "True True"
