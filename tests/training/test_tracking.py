from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pytest

from tests.training.synth_frames import make_frame
from training import tracking
from training.classifiers import LGBMCalibratedClassifier
from training.evaluate import classifier_metrics

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_and_data():
    X, y = make_frame(3000, 21)
    Xc, yc = make_frame(2000, 22)
    Xt, yt = make_frame(2000, 23)
    m = LGBMCalibratedClassifier(n_estimators=60, num_leaves=15).fit(X, y, calib_set=(Xc, yc))
    return m, Xt, yt


def test_default_store_is_local_sqlite_with_artifacts_beside_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    uri = tracking.tracking_uri()
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlruns.db"
    assert tracking.artifact_root(uri) == (tmp_path / "mlartifacts").resolve().as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/other.db")
    assert tracking.tracking_uri().endswith("other.db")


def test_logged_model_loads_back_identically_without_pickle(model_and_data, tmp_path):
    m, Xt, yt = model_and_data
    with tracking.start_run("siyu-test", run_name="roundtrip", tags={"model": "churn"}) as run:
        run.log_metrics({"auc": 0.7, "bad": float("nan")})
        logged = run.log_classifier(m)
    loaded = mlflow.pyfunc.load_model(logged.model_uri)
    assert np.array_equal(loaded.predict(Xt), m.predict_proba(Xt)[:, 1])
    local = Path(mlflow.artifacts.download_artifacts(logged.model_uri, dst_path=str(tmp_path / "dl")))
    files = [p.name for p in local.rglob("*") if p.is_file()]
    assert "model.txt" in files and "meta.json" in files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle", ".joblib"))]
    mlmodel = (local / "MLmodel").read_text()
    # "models from code": the loader runs a code stub; no pickled python_model is stored.
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in mlmodel
    assert "python_model:" not in mlmodel and ".pkl" not in mlmodel
    assert (local / "artifacts" / "model.txt").read_text().startswith("tree\n")  # LightGBM text format
    root = Path(tracking.tracking_uri()[len("sqlite:///"):]).parent / "mlartifacts"
    assert any(root.rglob("model.txt"))  # artifacts live beside the sqlite file


def test_register_gate_and_load_by_alias(model_and_data):
    m, Xt, yt = model_and_data
    good = classifier_metrics(yt, m.predict_proba(Xt)[:, 1]).as_dict()
    worse = {**good, "auc": good["auc"] - 0.05, "brier": good["brier"] + 0.01}
    th = tracking.GateThresholds(max_ece=0.2)
    decisions = []
    for metrics in (good, worse):
        with tracking.start_run("siyu-test") as run:
            logged = run.log_classifier(m)
            decisions.append(tracking.register_and_gate("siyu-churn", logged, metrics, th, run_id=run.run_id))
    first, second = decisions
    assert first.promoted and first.alias == "champion" and first.reason == "no champion yet"
    assert not second.promoted and second.alias == "challenger" and "AUC" in second.reason
    champ = tracking.load_model("models:/siyu-churn@champion")
    assert champ.version == first.version
    assert np.array_equal(champ.predict(Xt), m.predict_proba(Xt)[:, 1])
    versions = tracking.model_versions("siyu-churn")
    assert versions.loc[versions.version == int(second.version), "promotion_decision"].item() == "challenger"
    run_tags = tracking.client().get_run(tracking.client().get_model_version("siyu-churn", second.version)
                                         .run_id).data.tags
    assert "AUC" in run_tags["promotion_reason"]


def test_checksum_mismatch_is_refused(model_and_data):
    m, Xt, yt = model_and_data
    metrics = classifier_metrics(yt, m.predict_proba(Xt)[:, 1]).as_dict()
    with tracking.start_run("siyu-test") as run:
        logged = run.log_classifier(m)
        d = tracking.register_and_gate("siyu-churn", logged, metrics, tracking.GateThresholds(max_ece=1))
    tracking.client().set_model_version_tag("siyu-churn", d.version, "artifact_sha256", "0" * 64)
    with pytest.raises(ValueError, match="checksum"):
        tracking.load_model(f"models:/siyu-churn/{d.version}")


def test_gate_rules():
    th = tracking.GateThresholds()
    champ = {"auc": 0.80, "brier": 0.150, "ece": 0.01}
    ok, why = tracking.gate({"auc": 0.796, "brier": 0.150, "ece": 0.02}, champ, th, tracking.KIND_CLASSIFIER)
    assert ok, why
    for cand, word in [({"auc": 0.794, "brier": 0.14, "ece": 0.01}, "AUC"),
                       ({"auc": 0.82, "brier": 0.151, "ece": 0.01}, "Brier"),
                       ({"auc": 0.82, "brier": 0.14, "ece": 0.06}, "ECE")]:
        ok, why = tracking.gate(cand, champ, th, tracking.KIND_CLASSIFIER)
        assert not ok and word in why[0]
    assert tracking.gate({"spearman": 0.5}, {"spearman": 0.52}, th, tracking.KIND_BTYD)[0] is False


def test_run_failure_marks_run_failed():
    with pytest.raises(RuntimeError), tracking.start_run("siyu-test", run_name="boom") as run:
        raise RuntimeError("boom")
    assert tracking.client().get_run(run.run_id).info.status == "FAILED"


WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from tests.training.synth_frames import make_frame
    from training import tracking
    from training.classifiers import LGBMCalibratedClassifier
    X, y = make_frame(500, int(sys.argv[1]))
    m = LGBMCalibratedClassifier(n_estimators=10, num_leaves=7).fit(X, y)
    with tracking.start_run("siyu-concurrency", run_name=sys.argv[1]) as run:
        for i in range(5):
            run.log_metrics({"step_metric": float(i)}, step=i)
        run.log_params({"worker": sys.argv[1]})
        logged = run.log_classifier(m)
        d = tracking.register_and_gate("siyu-churn", logged, {"auc": 0.7, "brier": 0.2, "ece": 0.01},
                                       tracking.GateThresholds(), run_id=run.run_id)
    print("DONE", d.version)
    """
)


@pytest.mark.e2e
def test_four_processes_share_one_fresh_sqlite_store(tmp_path):
    uri = f"sqlite:///{tmp_path}/shared.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(i)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert "database is locked" not in err
    versions = sorted(int(o.split("DONE")[1]) for o, _ in outs)
    assert versions == [1, 2, 3, 4]
    runs = tracking.client(uri).search_runs(
        [tracking.client(uri).get_experiment_by_name("siyu-concurrency").experiment_id])
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    assert json.dumps(sorted(r.data.params["worker"] for r in runs)) == '["0", "1", "2", "3"]'
