"""One shared check of the scikit-learn contract basics for every estimator in training/."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from tests.training.synth_frames import make_frame
from training.classifiers import LGBMCalibratedClassifier, ProbabilityCalibrator, RFMRuleClassifier


def _fit_args(est):
    X, y = make_frame(600, 5)
    if isinstance(est, ProbabilityCalibrator):
        scores = np.random.default_rng(0).random(600)
        return (scores, y), lambda e: e.predict(scores[:10])
    return (X, y), lambda e: e.predict_proba(X.head(10))


ESTIMATORS = [
    LGBMCalibratedClassifier(n_estimators=20, num_leaves=7),
    ProbabilityCalibrator("isotonic"),
    ProbabilityCalibrator("sigmoid"),
    RFMRuleClassifier(),
]


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: type(e).__name__ + ":" + str(e.get_params())[:30])
def test_sklearn_contract(est):
    params = est.get_params()
    # __init__ only stores its arguments, under their own names.
    init_args = [p for p in inspect.signature(type(est).__init__).parameters if p != "self"]
    assert sorted(params) == sorted(init_args)
    assert set(vars(est)) - {"_sklearn_output_config"} == set(params)
    # clone / set_params round-trip.
    twin = clone(est)
    assert twin.get_params() == params and twin is not est
    assert twin.set_params(**params) is twin
    args, predict = _fit_args(est)
    with pytest.raises(NotFittedError):
        predict(twin)
    # fit returns self; fitted state ends in "_"; params untouched by fit.
    assert twin.fit(*args) is twin
    new_attrs = set(vars(twin)) - set(params) - {"_sklearn_output_config"}
    assert new_attrs and all(a.endswith("_") for a in new_attrs), new_attrs
    assert twin.get_params() == params
    # deterministic refit
    again = clone(est).fit(*args)
    assert np.array_equal(predict(twin), predict(again))
