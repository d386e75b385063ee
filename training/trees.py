"""The classifiers' LightGBM boosters compiled to native code (tl2cgen), for the scoring hot path.

A nightly job walks two boosters of up to 1,500 trees over a million rows, and the HTTP service walks
them for every request; LightGBM interprets each tree node by node. tl2cgen — treelite's code
generator — turns a booster into C with the thresholds inlined, and gcc compiles it into a shared
library that predicts the very same IEEE doubles (the sigmoid included: ``tests/serving/test_trees.py``
checks bit equality on missing values, categorical splits and unseen categories) several times faster.

Compilation takes seconds to tens of seconds per model, so libraries are cached on disk under the
sha256 of the model text and the compiler settings (``$SIYU_CACHE_DIR/trees``, else
``~/.cache/siyu/trees``) and written atomically, so concurrent processes share one build. Where no C
compiler is available, :func:`native_booster` returns None with a warning and callers keep LightGBM:
the same values, only slower.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger("siyu.training.trees")
CACHE_ENV = "SIYU_CACHE_DIR"


@dataclass(frozen=True)
class CompileSettings:
    """How boosters are compiled (part of the cache key: a change rebuilds the libraries)."""

    #: gcc optimisation level: -O1 compiles in about two thirds of -O3's time and predicts as fast here.
    optimisation: str = "-O1"
    #: Translation units per model, compiled in parallel.
    parallel_units: int = 2
    #: Threshold quantisation in the generated code (an index lookup per feature instead of float compares).
    quantize: bool = True

    def key(self) -> str:
        """A stable text of the settings and the compiler versions, for the cache key."""
        import tl2cgen
        import treelite

        versions = f"tl2cgen {tl2cgen.__version__}, treelite {treelite.__version__}"
        return f"{self.optimisation}|{self.parallel_units}|{self.quantize}|{versions}"


def cache_dir() -> Path:
    """Where compiled libraries live: ``$SIYU_CACHE_DIR/trees`` or ``~/.cache/siyu/trees``."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root) if root else Path.home() / ".cache" / "siyu") / "trees"


def library_path(model_text: str, settings: CompileSettings) -> Path:
    """The cached library's path for one booster text (it may not exist yet)."""
    digest = hashlib.sha256(f"{settings.key()}\n{model_text}".encode()).hexdigest()
    return cache_dir() / f"{digest}.so"


def compile_booster(model_text: str, settings: CompileSettings | None = None) -> Path:
    """Compile a LightGBM model text into a shared library (cached); returns its path.

    Raises whatever the C toolchain raises when it cannot build (e.g. no gcc on PATH).
    """
    import tl2cgen
    import treelite

    settings = settings or CompileSettings()
    target = library_path(model_text, settings)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="siyu-trees-", dir=target.parent) as tmp:
        model_file = Path(tmp) / "model.txt"
        model_file.write_text(model_text)
        model = treelite.frontend.load_lightgbm_model(str(model_file))
        built = Path(tmp) / target.name
        with _quiet_native_logs():
            tl2cgen.export_lib(
                model,
                toolchain="gcc",
                libpath=str(built),
                params={"parallel_comp": settings.parallel_units, "quantize": int(settings.quantize)},
                options=[settings.optimisation],
                nthread=max(1, os.cpu_count() or 1),
            )
        os.replace(built, target)  # atomic: a concurrent builder's identical library may be replaced
    logger.info("compiled a booster of %d bytes of model text into %s", len(model_text), target.name)
    return target


class NativeBooster:
    """A compiled booster: :meth:`predict` equals ``lightgbm.Booster.predict`` (probabilities) bit for bit."""

    def __init__(self, library: Path, threads: int = 0):
        self.library = library
        self.threads = threads
        self._predictor = None

    def _loaded(self):  # noqa: ANN202 - tl2cgen.Predictor
        if self._predictor is None:
            import tl2cgen

            with _quiet_native_logs():
                self._predictor = tl2cgen.Predictor(
                    str(self.library), nthread=self.threads or max(1, os.cpu_count() or 1)
                )
        return self._predictor

    def predict(self, X: np.ndarray) -> np.ndarray:
        """P(y = 1) of each row of the float64 matrix ``X`` (NaN = missing, categories as codes)."""
        import tl2cgen

        if len(X) == 0:
            return np.empty(0)
        matrix = tl2cgen.DMatrix(np.ascontiguousarray(X, dtype=np.float64), dtype="float64")
        return np.asarray(self._loaded().predict(matrix), dtype=np.float64).reshape(len(X))


def native_booster(
    model_text: str, threads: int = 0, settings: CompileSettings | None = None
) -> NativeBooster | None:
    """The compiled booster of ``model_text`` (built on first use, then cached), or None when it cannot
    be built here — then the caller predicts with LightGBM and only speed is lost."""
    if shutil.which("gcc") is None:
        logger.warning("no gcc on PATH: scoring with LightGBM's own predictor (same values, slower)")
        return None
    try:
        booster = NativeBooster(compile_booster(model_text, settings), threads)
        booster._loaded()
    except Exception as err:  # noqa: BLE001 - any toolchain failure only costs speed
        logger.warning("could not compile a booster (%s: %s); scoring with LightGBM", type(err).__name__, err)
        return None
    return booster


@contextlib.contextmanager
def _quiet_native_logs():  # noqa: ANN202
    """tl2cgen's native logger prints progress lines to stdout; keep them out of the job's output (whose
    last line benchmarks and scripts read), passing them to the log at debug level instead."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    for line in buffer.getvalue().splitlines():
        logger.debug("tl2cgen: %s", line)
