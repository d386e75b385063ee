"""Churn and 7-day repurchase classifiers (LightGBM, calibrated) and the baselines they must beat.

* :class:`LGBMCalibratedClassifier` — LightGBM with early stopping on a time-later fold and probabilities
  calibrated on a held-out, still later fold. Class weights are never used (they would distort the
  probabilities); recent cutoffs may be up-weighted through ``sample_weight``. String columns become
  LightGBM categoricals through a category→code table learned in ``fit`` (unseen categories → missing).
  Deterministic given ``seed`` (``deterministic=True``, fixed ``num_threads``, row-wise histograms).
  Its state is plain text: the booster's own model format plus JSON (no pickle).
* :class:`ProbabilityCalibrator` — centred isotonic regression (strictly increasing, so it keeps the
  booster's ranking) or Platt sigmoid; JSON round-trip.
* Baselines: :class:`RFMRuleClassifier` (quintile R+F+M score mapped to its training rate) and
  :func:`logistic_baseline` (impute + scale + one-hot logistic regression on the same features).
  BTYD baselines (P(alive), expected purchases over the horizon) come from :mod:`training.clv`.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted

_EPS = 1e-6


# ------------------------------------------------------------------------------------ validation


def _as_frame(X: Any, feature_names: list[str] | None = None) -> pd.DataFrame:
    """Accept a DataFrame or a 2-D array (columns named f0, f1, … unless names are given)."""
    if isinstance(X, pd.DataFrame):
        return X
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D feature matrix, got shape {arr.shape}")
    names = feature_names or [f"f{i}" for i in range(arr.shape[1])]
    return pd.DataFrame(arr, columns=names)


def category_codes(values: Any, categories: list[str]) -> np.ndarray:
    """Positions of ``values`` in ``categories`` as floats; NaN for a missing or unseen value."""
    values = np.asarray(values, dtype=object)
    index, positions = _category_lookup(tuple(categories))
    if len(values) <= _SMALL:  # a dict beats building a hash-table query for a request's few rows
        return np.array([positions.get(v, np.nan) for v in values.tolist()], dtype=np.float64)
    codes = index.get_indexer(values)
    return np.where(codes < 0, np.nan, codes)


_SMALL = 64
#: ``predictor="auto"`` walks the trees natively from this many rows (below, compiling costs more).
NATIVE_MIN_ROWS = 200_000
#: Rows encoded and predicted at a time (each row's prediction depends on that row alone).
PREDICT_BLOCK_ROWS = 200_000


@functools.lru_cache(maxsize=256)
def _category_lookup(categories: tuple[str, ...]) -> tuple[pd.Index, dict[str, float]]:
    # Kept per category list, so the hash tables are built once, not on every request.
    return pd.Index(categories, dtype=object), {c: float(i) for i, c in enumerate(categories)}


def numeric(values: Any) -> np.ndarray:
    """Values as float64; text that is not a number becomes NaN."""
    arr = values if isinstance(values, pd.Series) else np.asarray(values)
    if arr.dtype == object:
        arr = pd.to_numeric(arr, errors="coerce")
    return np.asarray(arr, dtype=float)


def _check_labels(y: Any, n: int) -> np.ndarray:
    arr = np.asarray(y, dtype=float).ravel()
    problems = []
    if arr.size != n:
        problems.append(f"{arr.size} labels for {n} rows")
    else:
        if np.isnan(arr).any():
            problems.append(f"{int(np.isnan(arr).sum())} missing labels (rows outside the label population?)")
        bad = ~np.isin(arr, (0.0, 1.0)) & ~np.isnan(arr)
        if bad.any():
            problems.append(f"{int(bad.sum())} labels not in {{0, 1}}, e.g. {arr[bad][:5].tolist()}")
        if not problems and len(np.unique(arr)) < 2:
            problems.append("labels have a single class")
    if problems:
        raise ValueError("bad labels: " + "; ".join(problems))
    return arr.astype(int)


def is_categorical(s: pd.Series) -> bool:
    """String-like columns (object, string, category, bool kept numeric) are LightGBM categoricals."""
    return isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(s) or (
        pd.api.types.is_string_dtype(s) and not pd.api.types.is_numeric_dtype(s)
    )


# ----------------------------------------------------------------------------------- calibration


class ProbabilityCalibrator(BaseEstimator):
    """Map raw scores in [0, 1] to calibrated probabilities.

    ``isotonic`` is centred isotonic regression (Oron & Flournoy 2017): the pool-adjacent-violators
    fit, with each constant block replaced by one point at the block's mean score, linearly
    interpolated — strictly increasing, so ranking (AUC) is kept while calibration is that of isotonic.
    ``sigmoid`` is Platt scaling on the logit of the score. ``none`` is the identity.
    """

    def __init__(self, method: Literal["isotonic", "sigmoid", "none"] = "isotonic"):
        self.method = method

    def fit(self, scores: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None):
        """Fit on held-out scores and 0/1 outcomes; returns self."""
        s = np.asarray(scores, dtype=float).ravel()
        yy = _check_labels(y, s.size)
        if self.method == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
            order = np.argsort(s, kind="stable")
            s_sorted, y_sorted = s[order], yy[order]
            w = np.ones_like(s_sorted) if sample_weight is None else np.asarray(sample_weight)[order]
            fitted = iso.fit(s_sorted, y_sorted, sample_weight=w).predict(s_sorted)
            # Blocks = runs of equal fitted value; each becomes (weighted mean score, value).
            starts = np.r_[0, np.flatnonzero(np.diff(fitted) != 0) + 1]
            wx = np.add.reduceat(w * s_sorted, starts)
            ww = np.add.reduceat(w, starts)
            self.x_ = (wx / ww).tolist()
            self.y_ = fitted[starts].tolist()
        elif self.method == "sigmoid":
            z = _logit(s).reshape(-1, 1)
            lr = LogisticRegression(C=1e6).fit(z, yy, sample_weight=sample_weight)
            self.a_, self.b_ = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        elif self.method != "none":
            raise ValueError(f"unknown calibration method {self.method!r}; use isotonic, sigmoid or none")
        self.fitted_method_ = self.method
        return self

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for raw scores."""
        check_is_fitted(self, "fitted_method_")
        s = np.asarray(scores, dtype=float).ravel()
        if self.fitted_method_ == "isotonic":
            if len(self.x_) == 1:
                return np.full_like(s, self.y_[0])
            return np.interp(s, self.x_, self.y_)
        if self.fitted_method_ == "sigmoid":
            return 1.0 / (1.0 + np.exp(-(self.a_ * _logit(s) + self.b_)))
        return s

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters."""
        check_is_fitted(self, "fitted_method_")
        out: dict[str, Any] = {"method": self.fitted_method_}
        if self.fitted_method_ == "isotonic":
            out.update(x=self.x_, y=self.y_)
        elif self.fitted_method_ == "sigmoid":
            out.update(a=self.a_, b=self.b_)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbabilityCalibrator:
        """Rebuild a fitted calibrator from :meth:`to_dict` output."""
        cal = cls(method=d["method"])
        cal.fitted_method_ = d["method"]
        if d["method"] == "isotonic":
            cal.x_, cal.y_ = list(d["x"]), list(d["y"])
        elif d["method"] == "sigmoid":
            cal.a_, cal.b_ = float(d["a"]), float(d["b"])
        return cal


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


# -------------------------------------------------------------------------------------- LightGBM


class LGBMCalibratedClassifier(ClassifierMixin, BaseEstimator):
    """LightGBM binary classifier with early stopping and post-hoc probability calibration.

    ``fit(X, y, sample_weight, eval_set=(X_val, y_val), calib_set=(X_cal, y_cal))``: trees are added
    until the log loss on ``eval_set`` (a later cutoff) stops improving; the calibrator is then fitted
    on ``calib_set`` (a still later, held-out cutoff). Without ``eval_set`` all ``n_estimators`` trees
    are grown; without ``calib_set`` probabilities are left uncalibrated.
    """

    def __init__(
        self,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        max_depth: int = -1,
        min_child_samples: int = 50,
        feature_fraction: float = 0.9,
        bagging_fraction: float = 0.9,
        bagging_freq: int = 1,
        lambda_l2: float = 1.0,
        n_estimators: int = 1000,
        early_stopping_rounds: int = 50,
        num_threads: int = 1,
        max_cat_to_onehot: int = 8,
        calibration: Literal["isotonic", "sigmoid", "none"] = "isotonic",
        seed: int = 7,
        predictor: Literal["auto", "lightgbm", "native"] = "auto",
    ):
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.max_depth = max_depth
        self.min_child_samples = min_child_samples
        self.feature_fraction = feature_fraction
        self.bagging_fraction = bagging_fraction
        self.bagging_freq = bagging_freq
        self.lambda_l2 = lambda_l2
        self.n_estimators = n_estimators
        self.early_stopping_rounds = early_stopping_rounds
        self.num_threads = num_threads
        self.max_cat_to_onehot = max_cat_to_onehot
        self.calibration = calibration
        self.seed = seed
        self.predictor = predictor

    # -- parameters --------------------------------------------------------------------------
    def lgb_params(self) -> dict[str, Any]:
        """LightGBM training parameters (deterministic, single objective, no class weighting)."""
        return {
            "objective": "binary",
            "metric": "binary_logloss",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "min_child_samples": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            "lambda_l2": self.lambda_l2,
            "max_cat_to_onehot": self.max_cat_to_onehot,
            "num_threads": self.num_threads,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }

    # -- encoding ----------------------------------------------------------------------------
    def _encode(self, X: Any) -> pd.DataFrame:
        """Select the training features in order, categoricals → stable integer codes."""
        df = _as_frame(X, self.feature_names_in_.tolist() if hasattr(self, "feature_names_in_") else None)
        return pd.DataFrame(self.encode_columns(df), columns=list(self.feature_names_in_), index=df.index)

    def encode_columns(self, columns: Any) -> np.ndarray:
        """The booster's input matrix from named columns (a DataFrame or a mapping of arrays).

        Features in training order, categories as their training codes, missing or unseen values as NaN.
        Works column by column without building a frame, so a request of a few rows costs microseconds.
        """
        missing = [c for c in self.feature_names_in_ if c not in columns]
        if missing:
            raise ValueError(f"{len(missing)} feature columns missing: {missing}")
        first = columns[self.feature_names_in_[0]]
        out = np.empty((len(first), len(self.feature_names_in_)), dtype=np.float64)
        for j, c in enumerate(self.feature_names_in_):
            col = columns[c]
            out[:, j] = category_codes(col, self.categories_[c]) if c in self.categories_ else numeric(col)
        return out

    def _learn_encoding(self, df: pd.DataFrame) -> None:
        self.feature_names_in_ = np.asarray(df.columns, dtype=object)
        self.n_features_in_ = len(df.columns)
        cats = [c for c in df.columns if is_categorical(df[c])]
        self.categories_ = {c: sorted(df[c].dropna().astype(str).unique().tolist()) for c in cats}

    # -- fit / predict -----------------------------------------------------------------------
    def fit(
        self,
        X: Any,
        y: Any,
        sample_weight: np.ndarray | None = None,
        *,
        eval_set: tuple[Any, Any] | None = None,
        calib_set: tuple[Any, Any] | None = None,
    ) -> LGBMCalibratedClassifier:
        """Train the booster (early stopping on ``eval_set``) and the calibrator (on ``calib_set``)."""
        df = _as_frame(X)
        if df.empty:
            raise ValueError("cannot fit on an empty training set")
        yy = _check_labels(y, len(df))
        self._learn_encoding(df)
        Xe = self._encode(df)
        cats = list(self.categories_)
        train = lgb.Dataset(Xe, yy, weight=sample_weight, categorical_feature=cats)
        valid_sets, callbacks = [], []
        if eval_set is not None:
            Xv = self._encode(eval_set[0])
            yv = _check_labels(eval_set[1], len(Xv))
            valid_sets = [lgb.Dataset(Xv, yv, reference=train, categorical_feature=cats)]
            callbacks = [lgb.early_stopping(self.early_stopping_rounds, verbose=False)]
            del Xv
        del Xe  # the Datasets keep their binned copies only (free_raw_data), not a float matrix each
        booster = lgb.train(
            self.lgb_params(), train, num_boost_round=self.n_estimators,
            valid_sets=valid_sets, callbacks=callbacks,
        )
        del train, valid_sets
        self.best_iteration_ = int(booster.best_iteration or booster.current_iteration())
        self.booster_ = booster
        self.classes_ = np.array([0, 1])
        cal = ProbabilityCalibrator(self.calibration if calib_set is not None else "none")
        if calib_set is not None:
            Xc = calib_set[0]
            cal.fit(self.predict_raw(Xc), calib_set[1])
        else:
            cal.fit(np.array([0.0, 1.0]), np.array([0, 1]))
        self.calibrator_ = cal
        return self

    def predict_raw(self, X: Any) -> np.ndarray:
        """Uncalibrated booster probability.

        ``predictor`` picks the tree walker: LightGBM's, or the booster compiled to native code
        (:mod:`training.trees`: the same doubles, several times faster, compiled once per model text
        and cached — the scoring jobs then find it built). ``auto`` compiles from
        :data:`NATIVE_MIN_ROWS` rows, where the compilation pays for itself.
        """
        check_is_fitted(self, "booster_")
        df = _as_frame(X, self.feature_names_in_.tolist())
        native = self._native_booster(len(df))
        out = np.empty(len(df))
        # Block by block: a million-row prediction never holds a second full-size matrix.
        for start in range(0, len(df), PREDICT_BLOCK_ROWS):
            Xe = self.encode_columns(df.iloc[start: start + PREDICT_BLOCK_ROWS])
            out[start: start + len(Xe)] = (
                native.predict(Xe) if native is not None
                else self.booster_.predict(Xe, num_iteration=self.best_iteration_)
            )
        return out

    def _native_booster(self, rows: int) -> Any:
        if self.predictor == "lightgbm" or (self.predictor == "auto" and rows < NATIVE_MIN_ROWS):
            return None
        text = self.model_text()
        cached = getattr(self, "_native", None)
        if cached is None or cached[0] != text:
            from training.trees import native_booster

            cached = (text, native_booster(text, self.num_threads))  # None without a C compiler
            self._native = cached
        return cached[1]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Calibrated class probabilities, shape (n, 2)."""
        check_is_fitted(self, "calibrator_")
        p = self.calibrator_.predict(self.predict_raw(X))
        return np.column_stack([1 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """Most likely class at threshold 0.5."""
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def contributions(self, X: Any) -> pd.DataFrame:
        """Per-feature SHAP contributions in log-odds (LightGBM ``pred_contrib``), plus ``bias``."""
        check_is_fitted(self, "booster_")
        Xe = self._encode(X)
        arr = self.booster_.predict(Xe, num_iteration=self.best_iteration_, pred_contrib=True)
        return pd.DataFrame(arr, columns=[*self.feature_names_in_, "bias"], index=Xe.index)

    # -- non-pickle persistence --------------------------------------------------------------
    def model_text(self) -> str:
        """The booster in LightGBM's own text format (only the trees kept by early stopping)."""
        check_is_fitted(self, "booster_")
        return self.booster_.model_to_string(num_iteration=self.best_iteration_)

    def meta_dict(self) -> dict[str, Any]:
        """Everything besides the trees, as JSON-ready data."""
        check_is_fitted(self, "booster_")
        return {
            "params": self.get_params(),
            "feature_names": list(self.feature_names_in_),
            "categories": self.categories_,
            "best_iteration": self.best_iteration_,
            "calibrator": self.calibrator_.to_dict(),
        }

    @classmethod
    def from_text(cls, model_text: str, meta: dict[str, Any]) -> LGBMCalibratedClassifier:
        """Rebuild a fitted classifier from :meth:`model_text` and :meth:`meta_dict`."""
        est = cls(**meta["params"])
        est.booster_ = lgb.Booster(model_str=model_text)
        est.feature_names_in_ = np.asarray(meta["feature_names"], dtype=object)
        est.n_features_in_ = len(meta["feature_names"])
        est.categories_ = {k: list(v) for k, v in meta["categories"].items()}
        # The saved text holds exactly the kept trees, so predict with all of them.
        est.best_iteration_ = int(est.booster_.current_iteration())
        est.calibrator_ = ProbabilityCalibrator.from_dict(meta["calibrator"])
        est.classes_ = np.array([0, 1])
        return est

    def meta_json(self) -> str:
        """:meth:`meta_dict` serialised (sorted keys, so equal models give equal bytes)."""
        return json.dumps(self.meta_dict(), sort_keys=True, indent=1)


def lgbm_from_config(params: Any, calibration: str, seed: int) -> LGBMCalibratedClassifier:
    """Build the classifier from a :class:`training.config.LightGBMParams`."""
    return LGBMCalibratedClassifier(**params.model_dump(), calibration=calibration, seed=seed)


# ------------------------------------------------------------------------------------- baselines


class RFMRuleClassifier(ClassifierMixin, BaseEstimator):
    """Classic RFM rule: quintile scores R (recent = 5), F and M (high = 5), summed to 3..15.

    ``fit`` learns the quintile edges and the observed positive rate of each summed score on the
    training rows, so ``predict_proba`` is the rule's empirical probability (unseen scores get the
    overall rate).
    """

    def __init__(
        self,
        recency_col: str = "recency_days",
        frequency_col: str = "frequency",
        monetary_col: str = "monetary",
        n_bins: int = 5,
    ):
        self.recency_col = recency_col
        self.frequency_col = frequency_col
        self.monetary_col = monetary_col
        self.n_bins = n_bins

    def _columns(self, df: pd.DataFrame) -> pd.DataFrame:
        cols = [self.recency_col, self.frequency_col, self.monetary_col]
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"RFM rule needs columns {missing}")
        return df[cols].apply(pd.to_numeric, errors="coerce").astype(float)

    def _bin(self, v: np.ndarray, edges: np.ndarray) -> np.ndarray:
        return np.searchsorted(edges, v, side="right") + 1

    def score(self, X: Any) -> np.ndarray:
        """Summed R+F+M score (higher = more recent, frequent, valuable)."""
        check_is_fitted(self, "edges_")
        df = self._columns(_as_frame(X))
        # Missing recency (never bought) → least recent; missing F/M → lowest.
        r = df.iloc[:, 0].fillna(np.inf).to_numpy()
        f = df.iloc[:, 1].fillna(-np.inf).to_numpy()
        m = df.iloc[:, 2].fillna(-np.inf).to_numpy()
        r_score = self.n_bins + 1 - self._bin(r, self.edges_[0])
        return r_score + self._bin(f, self.edges_[1]) + self._bin(m, self.edges_[2])

    def fit(self, X: Any, y: Any, sample_weight: np.ndarray | None = None) -> RFMRuleClassifier:
        """Learn quintile edges and the rate of each score; returns self."""
        df = self._columns(_as_frame(X))
        yy = _check_labels(y, len(df))
        qs = np.linspace(0, 1, self.n_bins + 1)[1:-1]
        self.edges_ = [np.unique(np.nanquantile(df[c].to_numpy(), qs)) if df[c].notna().any()
                       else np.array([]) for c in df.columns]
        s = self.score(X)
        tab = pd.DataFrame({"s": s, "y": yy}).groupby("s")["y"].mean()
        self.rate_by_score_ = {int(k): float(v) for k, v in tab.items()}
        self.base_rate_ = float(yy.mean())
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = 3
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Empirical training rate of each row's RFM score, shape (n, 2)."""
        s = self.score(X)
        p = np.array([self.rate_by_score_.get(int(v), self.base_rate_) for v in s], dtype=float)
        return np.column_stack([1 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """Most likely class at threshold 0.5."""
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


def logistic_baseline(X: pd.DataFrame, seed: int = 7) -> Pipeline:
    """Unfitted logistic regression on the same features: impute + scale numerics, one-hot strings."""
    cats = [c for c in X.columns if is_categorical(X[c])]
    nums = [c for c in X.columns if c not in cats]
    pre = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median", add_indicator=True),
                                  StandardScaler()), nums),
            ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"),
                                  OneHotEncoder(handle_unknown="ignore", min_frequency=20)), cats),
        ],
        verbose_feature_names_out=False,
    )
    return Pipeline([("pre", pre), ("lr", LogisticRegression(C=1.0, max_iter=2000, random_state=seed))])


def to_logistic_input(X: pd.DataFrame) -> pd.DataFrame:
    """Categoricals as object strings (NaN kept), numerics as float — what the logistic pipeline expects."""
    out = {}
    for c in X.columns:
        if is_categorical(X[c]):
            out[c] = X[c].astype("object").where(X[c].notna(), np.nan)
        else:
            out[c] = pd.to_numeric(X[c], errors="coerce").astype(float)
    return pd.DataFrame(out, index=X.index)


def recency_weights(cutoffs: pd.Series, half_life_months: float | None) -> np.ndarray:
    """Sample weights halving every ``half_life_months`` before the latest training cutoff."""
    c = pd.to_datetime(pd.Series(cutoffs)).reset_index(drop=True)
    if half_life_months is None:
        return np.ones(len(c))
    months = (c.max() - c).dt.days.to_numpy() / 30.4375
    return np.power(0.5, months / half_life_months)
