"""MLflow tracking and registry for siyu — the only module in the project that imports mlflow.

* Store: a local sqlite tracking + registry store, ``sqlite:///mlruns.db`` by default, overridden by
  ``MLFLOW_TRACKING_URI``; artifacts go to ``mlartifacts/`` beside the database file (explicit and
  local, never wherever the current directory happens to be).
* Concurrency: several ``siyu train`` processes may share one sqlite file. Every write to the store
  runs under an exclusive file lock beside the database (``<db>.lock``) and is retried with
  exponential backoff if sqlite still reports "database is locked"; MLflow itself sets
  ``PRAGMA busy_timeout`` on each session. The lock also serialises first-time schema creation and the
  read-decide-write of the promotion gate.
* Models are stored without pickle: a "models from code" pyfunc whose code is a three-line stub, with
  LightGBM's text model format (``model.txt``) and JSON metadata (calibrator, category codes) or the
  BTYD parameters (JSON) as artifacts. Every artifact's SHA-256 is recorded on the model version and
  checked on load.
* Registry: ``siyu-churn``, ``siyu-repurchase-7d``, ``siyu-clv`` with aliases ``champion`` /
  ``challenger``; :func:`register_and_gate` decides between them and logs the reason as a tag.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

T = TypeVar("T")

DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
CHAMPION, CHALLENGER = "champion", "challenger"
KIND_CLASSIFIER, KIND_BTYD = "lgbm_classifier", "btyd"

_MODEL_CODE = '''"""siyu pyfunc entry point (models from code: no pickled objects)."""
import mlflow
from training.tracking import SiyuPyfuncModel

mlflow.models.set_model(SiyuPyfuncModel())
'''


# ------------------------------------------------------------------------------ store & locking


def tracking_uri(default: str = DEFAULT_TRACKING_URI) -> str:
    """The tracking URI in force: ``MLFLOW_TRACKING_URI`` if set, else ``default``.

    A relative sqlite path is made absolute (against the current directory) so that every process
    and the artifact root agree on one file.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or default
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        if not path.is_absolute():
            uri = f"sqlite:///{(Path.cwd() / path).resolve()}"
    return uri


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def artifact_root(uri: str) -> str | None:
    """Artifact location beside a sqlite store (``<db dir>/mlartifacts``); None for remote servers."""
    db = _sqlite_path(uri)
    if db is not None:
        return (db.parent / "mlartifacts").resolve().as_uri()
    if urlparse(uri).scheme in ("", "file"):
        return (Path(urlparse(uri).path or uri) / "artifacts").resolve().as_uri()
    return None


class _StoreLock:
    """Re-entrant (per process) exclusive lock on ``<db>.lock``; a no-op for non-sqlite stores."""

    def __init__(self, path: Path | None):
        self.path = path
        self._depth = 0
        self._fh: Any = None
        self._mutex = threading.RLock()

    def __enter__(self) -> _StoreLock:
        self._mutex.acquire()
        if self.path is not None and self._depth == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a+")  # noqa: SIM115 - held across __enter__/__exit__
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
        self._mutex.release()


@functools.cache
def _lock_for(uri: str) -> _StoreLock:
    db = _sqlite_path(uri)
    return _StoreLock(db.with_name(db.name + ".lock") if db is not None else None)


def _is_transient(err: BaseException) -> bool:
    text = f"{type(err).__name__}: {err}".lower()
    needles = ("database is locked", "database table is locked", "busy", "operationalerror")
    return any(s in text for s in needles)


def with_retry(fn: Callable[[], T], uri: str, attempts: int = 8, base_delay: float = 0.2) -> T:
    """Run ``fn`` under the store lock, retrying transient sqlite errors with jittered backoff."""
    for i in range(attempts):
        try:
            with _lock_for(uri):
                return fn()
        except (MlflowException, Exception) as err:  # sqlalchemy errors arrive wrapped or bare
            if i == attempts - 1 or not _is_transient(err):
                raise
            time.sleep(base_delay * 2**i * (1 + random.random()))
    raise AssertionError("unreachable")


def client(uri: str | None = None) -> MlflowClient:
    """An MlflowClient on the tracking store (also the registry)."""
    uri = uri or tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _use_store(uri: str) -> None:
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def get_or_create_experiment(name: str, uri: str | None = None) -> str:
    """Experiment id for ``name``, created with an explicit local artifact location if needed."""
    uri = uri or tracking_uri()

    def _do() -> str:
        c = client(uri)
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        root = artifact_root(uri)
        location = f"{root}/{name}" if root else None
        return c.create_experiment(name, artifact_location=location)

    return with_retry(_do, uri)


# ------------------------------------------------------------------------------------ run handle


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex digest of one file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def artifacts_checksum(files: dict[str, str | Path]) -> str:
    """One SHA-256 over named artifact files (name-sorted), identifying a model's content."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode())
        h.update(sha256_file(files[name]).encode())
    return h.hexdigest()


@dataclass
class LoggedModel:
    """A model logged in a run: its URI and the checksum of its artifacts."""

    model_uri: str
    checksum: str
    kind: str


@dataclass
class RunHandle:
    """Logging helpers bound to one active MLflow run (every write locked and retried)."""

    run_id: str
    experiment_id: str
    uri: str

    def _retry(self, fn: Callable[[], T]) -> T:
        return with_retry(fn, self.uri)

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set string tags on the run."""
        self._retry(lambda: mlflow.set_tags({k: str(v) for k, v in tags.items()}))

    def log_params(self, params: dict[str, Any]) -> None:
        """Log parameters (values stringified, truncated by MLflow at 6000 chars)."""
        self._retry(lambda: mlflow.log_params({k: str(v)[:6000] for k, v in params.items()}))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log finite numeric metrics (NaN/inf are skipped and listed in a tag)."""
        good = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(float(v))}
        bad = sorted(set(metrics) - set(good))
        self._retry(lambda: mlflow.log_metrics(good, step=step))
        if bad:
            self.set_tags({"non_finite_metrics": ",".join(bad)[:5000]})

    def log_config(self, config: Any, name: str = "config") -> None:
        """Log a pydantic config: resolved YAML + JSON artifacts and flattened params."""
        resolved = config.resolved() if hasattr(config, "resolved") else config.model_dump(mode="json")
        self.log_dict(resolved, f"{name}.json")
        text = config.to_yaml() if hasattr(config, "to_yaml") else json.dumps(resolved, indent=1)
        self.log_text(text, f"{name}.yaml")
        self.log_params(_flatten(resolved, prefix=""))

    def log_dict(self, data: Any, artifact_file: str) -> None:
        """Log JSON-serialisable data as an artifact file."""
        self._retry(lambda: mlflow.log_dict(data, artifact_file))

    def log_text(self, text: str, artifact_file: str) -> None:
        """Log text (YAML, HTML, Markdown …) as an artifact file."""
        self._retry(lambda: mlflow.log_text(text, artifact_file))

    def log_file(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a local file (figure, HTML report, parquet …)."""
        self._retry(lambda: mlflow.log_artifact(str(path), artifact_path))

    def log_figure(self, path: str | Path) -> None:
        """Log a PNG figure under ``figures/``."""
        self.log_file(path, "figures")

    def log_frame(self, df: pd.DataFrame, artifact_file: str) -> None:
        """Log a small table as CSV."""
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / Path(artifact_file).name
            df.to_csv(p, index=False)
            parent = str(Path(artifact_file).parent)
            self.log_file(p, None if parent == "." else parent)

    def log_data_fingerprint(self, fingerprint: str, manifest: dict[str, Any] | None = None) -> None:
        """Stamp the run with the training data's fingerprint (tag + param, manifest as JSON)."""
        self.set_tags({"data_fingerprint": fingerprint})
        self.log_params({"data_fingerprint": fingerprint})
        if manifest is not None:
            self.log_dict(manifest, "data_manifest.json")

    def log_classifier(self, estimator: Any, name: str = "model") -> LoggedModel:
        """Log a fitted LGBMCalibratedClassifier as a no-pickle pyfunc (model.txt + meta.json)."""
        with tempfile.TemporaryDirectory() as d:
            txt = Path(d) / "model.txt"
            txt.write_text(estimator.model_text())
            meta = Path(d) / "meta.json"
            meta.write_text(json.dumps({"kind": KIND_CLASSIFIER, **estimator.meta_dict()}, sort_keys=True))
            return self._log_pyfunc(name, {"model_txt": txt, "meta": meta}, KIND_CLASSIFIER, ["lightgbm"])

    def log_btyd(self, params: dict[str, Any], name: str = "model") -> LoggedModel:
        """Log a BTYD bundle (``BTYDBundle.to_dict()``: BG/NBD + Gamma-Gamma parameters) as a JSON pyfunc."""
        with tempfile.TemporaryDirectory() as d:
            meta = Path(d) / "meta.json"
            meta.write_text(json.dumps({"kind": KIND_BTYD, "btyd": params}, sort_keys=True, default=float))
            return self._log_pyfunc(name, {"meta": meta}, KIND_BTYD, ["lifetimes", "scipy"])

    def _log_pyfunc(self, name: str, files: dict[str, Path], kind: str, extra: list[str]) -> LoggedModel:
        checksum = artifacts_checksum(files)
        with tempfile.TemporaryDirectory() as d:
            code = Path(d) / "siyu_model.py"
            code.write_text(_MODEL_CODE)
            reqs = _pinned(["mlflow", "numpy", "pandas", "scikit-learn", *extra])

            def _do() -> Any:
                return mlflow.pyfunc.log_model(
                    name=name,
                    python_model=str(code),
                    artifacts={k: str(v) for k, v in files.items()},
                    pip_requirements=reqs,
                    metadata={"siyu_kind": kind, "artifact_sha256": checksum},
                )

            info = self._retry(_do)
        self.set_tags({f"{name}_artifact_sha256": checksum})
        return LoggedModel(model_uri=info.model_uri, checksum=checksum, kind=kind)


def _pinned(names: list[str]) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for n in names:
        try:
            out.append(f"{n}=={version(n)}")
        except PackageNotFoundError:
            out.append(n)
    return out


def _flatten(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list) else v
    return out


@contextlib.contextmanager
def start_run(
    experiment: str,
    run_name: str | None = None,
    tags: dict[str, Any] | None = None,
    uri: str | None = None,
) -> Iterator[RunHandle]:
    """Open a run in ``experiment`` (created if needed) and yield its :class:`RunHandle`.

    The run ends FINISHED on success and FAILED if the block raises.
    """
    uri = uri or tracking_uri()
    _use_store(uri)
    exp_id = get_or_create_experiment(experiment, uri)
    run = with_retry(
        lambda: mlflow.start_run(experiment_id=exp_id, run_name=run_name,
                                 tags={k: str(v) for k, v in (tags or {}).items()}),
        uri,
    )
    handle = RunHandle(run_id=run.info.run_id, experiment_id=exp_id, uri=uri)
    status = "FAILED"
    try:
        yield handle
        status = "FINISHED"
    finally:
        with_retry(lambda: mlflow.end_run(status=status), uri)


# --------------------------------------------------------------------------- pyfunc (no pickle)


class SiyuPyfuncModel(mlflow.pyfunc.PythonModel):
    """Loads siyu models from their text/JSON artifacts; returned by ``mlflow.pyfunc.load_model``.

    Classifiers predict the calibrated probability of the positive class (1-D array). BTYD models
    predict the frame returned by the clv model's ``predict_frame`` for the input frame.
    """

    def load_context(self, context):  # noqa: ANN001 - MLflow rejects non-list type hints here
        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        self.kind = meta["kind"]
        if self.kind == KIND_CLASSIFIER:
            from training.classifiers import LGBMCalibratedClassifier

            text = Path(context.artifacts["model_txt"]).read_text()
            self.model = LGBMCalibratedClassifier.from_text(text, meta)
        elif self.kind == KIND_BTYD:
            from training.btyd_baseline import BTYDBundle

            self.model = BTYDBundle.from_dict(meta["btyd"])
        else:
            raise ValueError(f"unknown siyu model kind {self.kind!r}")

    def predict(self, context, model_input, params=None):  # noqa: ANN001 - see load_context
        if self.kind == KIND_CLASSIFIER:
            return self.model.predict_proba(model_input)[:, 1]
        return self.model.predict_frame(model_input)


# ------------------------------------------------------------------------------------- registry


@dataclass
class LoadedModel:
    """A registered model loaded back: predicts, and says which version and content it is."""

    name: str
    version: str
    alias: str | None
    model: Any  # mlflow.pyfunc.PyFuncModel
    checksum: str
    run_id: str | None

    def predict(self, X: Any) -> Any:
        """Predict with the loaded pyfunc."""
        return self.model.predict(X)

    def unwrap(self) -> Any:
        """The underlying siyu model (LGBMCalibratedClassifier or a clv model)."""
        return self.model.unwrap_python_model().model


def load_model(model_uri: str, uri: str | None = None) -> LoadedModel:
    """Load ``models:/name@alias`` (or ``models:/name/version``), verifying the artifact checksum."""
    uri = uri or tracking_uri()
    _use_store(uri)
    c = client(uri)
    name, version, alias = _parse_models_uri(model_uri)
    mv = (
        with_retry(lambda: c.get_model_version_by_alias(name, alias), uri)
        if alias
        else with_retry(lambda: c.get_model_version(name, version), uri)
    )
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}"))
    model = mlflow.pyfunc.load_model(str(local))
    arts = local / "artifacts"
    files = {k: arts / v for k, v in {"model_txt": "model.txt", "meta": "meta.json"}.items()
             if (arts / v).exists()}
    checksum = artifacts_checksum(files)
    expected = mv.tags.get("artifact_sha256")
    if expected and expected != checksum:
        raise ValueError(f"{name} v{mv.version}: artifact checksum {checksum} != registered {expected}")
    return LoadedModel(name=name, version=str(mv.version), alias=alias, model=model, checksum=checksum,
                       run_id=mv.run_id)


def load_run_dict(run_id: str, artifact_file: str, uri: str | None = None) -> dict[str, Any]:
    """A JSON artifact of a run (e.g. the ``config.json`` a model was trained with)."""
    uri = uri or tracking_uri()
    _use_store(uri)
    return with_retry(lambda: mlflow.artifacts.load_dict(f"runs:/{run_id}/{artifact_file}"), uri)


def _parse_models_uri(model_uri: str) -> tuple[str, str | None, str | None]:
    if not model_uri.startswith("models:/"):
        raise ValueError(f"expected models:/name@alias or models:/name/version, got {model_uri!r}")
    rest = model_uri[len("models:/"):]
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, None, alias
    name, _, version = rest.partition("/")
    if not version:
        raise ValueError(f"{model_uri!r}: give a version or an alias")
    return name, version, None


@dataclass(frozen=True)
class GateThresholds:
    """Promotion thresholds (mirrors training.config.PromotionThresholds)."""

    auc_tolerance: float = 0.005
    brier_tolerance: float = 0.0
    max_ece: float = 0.05
    spearman_tolerance: float = 0.01


@dataclass
class GateDecision:
    """Outcome of the promotion gate for one new model version."""

    name: str
    version: str
    promoted: bool
    alias: str
    reasons: list[str] = field(default_factory=list)
    champion_version: str | None = None

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def gate(candidate: dict[str, float], champion: dict[str, float] | None, th: GateThresholds,
         kind: str) -> tuple[bool, list[str]]:
    """Pure decision: does ``candidate`` pass against ``champion`` (None = no champion yet)?

    Classifiers: AUC ≥ champion − tol, Brier ≤ champion + tol, ECE ≤ max. CLV: Spearman ≥ champion − tol.
    """
    reasons: list[str] = []
    ok = True
    if kind == KIND_CLASSIFIER:
        ece = candidate["ece"]
        if ece > th.max_ece:
            ok = False
            reasons.append(f"ECE {ece:.4f} > max {th.max_ece:.4f}")
        if champion is not None:
            if candidate["auc"] < champion["auc"] - th.auc_tolerance:
                ok = False
                reasons.append(f"AUC {candidate['auc']:.4f} < champion {champion['auc']:.4f} - "
                               f"{th.auc_tolerance}")
            if candidate["brier"] > champion["brier"] + th.brier_tolerance:
                ok = False
                reasons.append(f"Brier {candidate['brier']:.5f} > champion {champion['brier']:.5f}")
    else:
        if champion is not None and candidate["spearman"] < champion["spearman"] - th.spearman_tolerance:
            ok = False
            reasons.append(f"Spearman {candidate['spearman']:.4f} < champion {champion['spearman']:.4f} - "
                           f"{th.spearman_tolerance}")
    if ok:
        reasons.append("no champion yet" if champion is None else "passes every threshold vs champion")
    return ok, reasons


def register_and_gate(
    name: str,
    logged: LoggedModel,
    metrics: dict[str, float],
    thresholds: GateThresholds,
    run_id: str | None = None,
    tags: dict[str, Any] | None = None,
    uri: str | None = None,
) -> GateDecision:
    """Register ``logged`` as a new version of ``name`` and set ``champion`` or ``challenger``.

    The gate metrics are stored as ``metric.*`` tags on the version, so the next candidate is compared
    with exactly the figures the champion was promoted on. The decision and its reason are tagged on
    the version and on the run. The whole read-decide-write is one locked critical section.
    """
    uri = uri or tracking_uri()
    _use_store(uri)
    c = client(uri)

    def _do() -> GateDecision:
        mv = mlflow.register_model(logged.model_uri, name, await_registration_for=0)
        version = str(mv.version)
        vtags = {"artifact_sha256": logged.checksum, "siyu_kind": logged.kind,
                 **{f"metric.{k}": repr(float(v)) for k, v in metrics.items()},
                 **{k: str(v) for k, v in (tags or {}).items()}}
        for k, v in vtags.items():
            c.set_model_version_tag(name, version, k, v)
        champ_mv = _alias_version(c, name, CHAMPION)
        champ_metrics = None
        if champ_mv is not None:
            champ_metrics = {k[len("metric."):]: float(v) for k, v in champ_mv.tags.items()
                             if k.startswith("metric.")}
        promoted, reasons = gate(metrics, champ_metrics, thresholds, logged.kind)
        alias = CHAMPION if promoted else CHALLENGER
        c.set_registered_model_alias(name, alias, version)
        decision = GateDecision(name=name, version=version, promoted=promoted, alias=alias, reasons=reasons,
                                champion_version=str(champ_mv.version) if champ_mv else None)
        c.set_model_version_tag(name, version, "promotion_decision", alias)
        c.set_model_version_tag(name, version, "promotion_reason", decision.reason[:5000])
        if run_id:
            c.set_tag(run_id, "promotion_decision", alias)
            c.set_tag(run_id, "promotion_reason", decision.reason[:5000])
            c.set_tag(run_id, "registered_version", f"{name}/{version}")
        return decision

    return with_retry(_do, uri)


def _alias_version(c: MlflowClient, name: str, alias: str) -> Any:
    try:
        return c.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def promote(name: str, version: str, uri: str | None = None) -> None:
    """Manually make ``version`` the champion (an operator's override of the gate), tagged as such."""
    uri = uri or tracking_uri()
    c = client(uri)

    def _do() -> None:
        c.set_registered_model_alias(name, CHAMPION, str(version))
        c.set_model_version_tag(name, str(version), "promotion_decision", CHAMPION)
        c.set_model_version_tag(name, str(version), "promotion_reason", "manual promotion")

    with_retry(_do, uri)


def model_versions(name: str, uri: str | None = None) -> pd.DataFrame:
    """Versions of ``name`` with their aliases, decision tags and gate metrics."""
    uri = uri or tracking_uri()
    c = client(uri)
    rows = []
    # search_model_versions leaves ``aliases`` empty on the SQL store; the registered model has them all.
    alias_map = with_retry(lambda: c.get_registered_model(name), uri).aliases
    by_version: dict[int, list[str]] = {}
    for alias, version in sorted(alias_map.items()):
        by_version.setdefault(int(version), []).append(alias)
    for mv in with_retry(lambda: c.search_model_versions(f"name='{name}'"), uri):
        aliases = ",".join(by_version.get(int(mv.version), []))
        rows.append({"version": int(mv.version), "aliases": aliases, "run_id": mv.run_id,
                     **{k: v for k, v in mv.tags.items()}})
    return pd.DataFrame(rows).sort_values("version").reset_index(drop=True) if rows else pd.DataFrame()
