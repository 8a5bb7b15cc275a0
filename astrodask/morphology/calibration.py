"""Per-object morphology calibrated on simulated mosaics.

The U-Net's flux-weighted class probabilities (Morpheus eq. 16) are a fair
guess of a bright object's class, but not of a faint one's: where the noise
dominates a galaxy's pixels they look clumpy, and the dominant class of
faint galaxies is too often ``irregular`` (``morpheus_decam``: 41-47% of the
matched galaxies of S/N 5-10 on the test mosaics, against about 19% in
truth). A multinomial logistic model of the eq. 16 probabilities, the
object's S/N and their products (:class:`MorphologyCalibration`), fitted on
matched objects of simulated mosaics that are neither test nor validation
fields, turns them into a class that takes the S/N into account. Each true
class weighs in the loss by the inverse of its share of the fitting objects
to the power ``balance``: 0 maximises the objects right and, where the
evidence is weak, calls almost every faint galaxy the commonest class
(disk); 1 gives every class the same weight and calls the rare classes too
often; 0.6 (the default, chosen on the fitting fields, BENCHMARKS.md) calls
each class about as often as the truth has it at every S/N.

The calibration lives in the U-Net's model card (``morphology_calibration``)
and gives the catalog's ``morphology`` column; the ``p_*`` columns stay the
eq. 16 values.
"""

from dataclasses import asdict, dataclass

import numpy as np

from ..classes import MORPHOLOGY_CLASSES, SOURCE_CLASSES
from .catalog import dominant_class


#: Added to the renormalised source probabilities before their logarithm.
PROBABILITY_FLOOR = 0.01

#: Each feature a calibration may use, from the log of the renormalised
#: source-class probabilities ``log_p`` (n, 4), the background probability
#: ``background`` and ``log10`` of the S/N over all bands.
FEATURE_TERMS = {
    **{f"log_p_{c}": (lambda k: lambda log_p, background, log_snr: log_p[:, k])(k)
       for k, c in enumerate(SOURCE_CLASSES)},
    "p_background": lambda log_p, background, log_snr: background,
    "log10_snr": lambda log_p, background, log_snr: log_snr,
    **{f"log10_snr_x_log_p_{c}": (lambda k: lambda log_p, background, log_snr:
                                   log_snr * log_p[:, k])(k)
       for k, c in enumerate(SOURCE_CLASSES)},
}

#: The features of the calibrations this version fits, in the order of :func:`design_matrix`.
FEATURES = tuple(FEATURE_TERMS)


def design_matrix(probabilities, snr, features=FEATURES):
    """The calibration's features, one row per object.

    Parameters
    ----------
    probabilities : array_like, shape (n, 5)
        Eq. 16 probabilities in the order of
        :data:`astrodask.classes.MORPHOLOGY_CLASSES` (background last).
    snr : array_like, shape (n,)
        S/N over all bands (:func:`astrodask.measure.total_snr`); clipped to
        [1, 10^4] (the calibration is not extrapolated beyond its fit).
    features : sequence of str
        Names from :data:`FEATURE_TERMS`.

    Returns
    -------
    ndarray, shape (n, len(features))
        NaN rows where the probabilities or the S/N are not finite.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(MORPHOLOGY_CLASSES):
        raise ValueError(f"probabilities need {len(MORPHOLOGY_CLASSES)} columns "
                         f"({', '.join(MORPHOLOGY_CLASSES)})")
    sources = probabilities[:, :len(SOURCE_CLASSES)]
    with np.errstate(invalid="ignore", divide="ignore"):
        sources = sources / sources.sum(axis=1, keepdims=True)
    log_p = np.log(sources + PROBABILITY_FLOOR)
    background = probabilities[:, len(SOURCE_CLASSES)]
    log_snr = np.log10(np.clip(np.asarray(snr, dtype=np.float64), 1.0, 1e4))
    return np.column_stack([FEATURE_TERMS[name](log_p, background, log_snr)
                            for name in features])


@dataclass(frozen=True)
class MorphologyCalibration:
    """Multinomial logistic morphology from the eq. 16 probabilities and the S/N.

    Attributes
    ----------
    mean, scale : tuple of float
        Standardisation of each feature.
    coefficients : tuple of tuple of float
        One row per feature, one column per class.
    intercepts : tuple of float
        One per class.
    classes : tuple of str
        :data:`SOURCE_CLASSES`.
    features : tuple of str
        Names from :data:`FEATURE_TERMS`.
    """

    mean: tuple
    scale: tuple
    coefficients: tuple
    intercepts: tuple
    classes: tuple = SOURCE_CLASSES
    features: tuple = FEATURES

    def __post_init__(self):
        if not len(self.mean) == len(self.scale) == len(self.coefficients) == len(self.features):
            raise ValueError("morphology calibration: mean, scale and coefficients need one "
                             "row per feature")
        if (len(self.intercepts) != len(self.classes)
                or any(len(row) != len(self.classes) for row in self.coefficients)):
            raise ValueError("morphology calibration: one coefficient and intercept per class")
        unknown = set(self.features) - set(FEATURE_TERMS)
        if unknown or tuple(self.classes) != SOURCE_CLASSES:
            raise ValueError("morphology calibration has other features or classes than "
                             "this version's")

    def to_dict(self):
        """JSON-ready values (the card's ``morphology_calibration`` section)."""
        d = asdict(self)
        d["coefficients"] = [list(row) for row in self.coefficients]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d):
        """Inverse of :meth:`to_dict`."""
        return cls(mean=tuple(d["mean"]), scale=tuple(d["scale"]),
                   coefficients=tuple(tuple(row) for row in d["coefficients"]),
                   intercepts=tuple(d["intercepts"]),
                   classes=tuple(d.get("classes", SOURCE_CLASSES)),
                   features=tuple(d.get("features", FEATURES)))

    def probabilities(self, probabilities, snr):
        """Calibrated class probabilities, shape (n, classes); NaN rows where unmeasured."""
        features = design_matrix(probabilities, snr, self.features)
        z = (features - np.asarray(self.mean)) / np.asarray(self.scale)
        logits = z @ np.asarray(self.coefficients) + np.asarray(self.intercepts)
        finite = np.isfinite(logits).all(axis=1)
        logits = np.where(finite[:, None], logits, 0.0)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        return np.where(finite[:, None], p, np.nan)

    def classify(self, probabilities, snr):
        """The most probable class of each object (object array; None where unmeasured)."""
        return dominant_class(self.probabilities(probabilities, snr), self.classes)


#: Default power of the inverse class shares that weigh the fit's loss (module docstring).
BALANCE = 0.6


def fit_morphology_calibration(probabilities, snr, true_class, l2=1e-3, balance=BALANCE,
                               features=FEATURES):
    """Fit a :class:`MorphologyCalibration` (weighted multinomial logistic, L2 penalty).

    Parameters
    ----------
    probabilities : array_like, shape (n, 5)
        Eq. 16 probabilities of matched catalog objects (background last).
    snr : array_like, shape (n,)
        Their S/N over all bands.
    true_class : array_like of str, shape (n,)
        Their true classes (:data:`SOURCE_CLASSES`); other values and rows
        with non-finite features are left out.
    l2 : float
        Penalty on the standardised coefficients.
    balance : float
        Each object weighs ``(n / (classes * n_k)) ** balance`` in the loss,
        ``n_k`` the objects of its true class: 0 unweighted, 1 every class
        the same total weight.
    features : sequence of str

    Returns
    -------
    MorphologyCalibration
    """
    from scipy.optimize import minimize

    x = design_matrix(probabilities, snr, features)
    true_class = np.asarray(true_class).astype(str)
    onehot = (true_class[:, None] == np.asarray(SOURCE_CLASSES)[None, :]).astype(np.float64)
    keep = np.isfinite(x).all(axis=1) & (onehot.sum(axis=1) == 1)
    x, onehot = x[keep], onehot[keep]
    counts = onehot.sum(axis=0)
    if (counts == 0).any():
        missing = [c for c, n in zip(SOURCE_CLASSES, counts) if n == 0]
        raise ValueError(f"fitting needs objects of every class; none of {', '.join(missing)}")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = np.column_stack([(x - mean) / scale, np.ones(len(x))])
    weight = onehot @ (len(x) / (len(SOURCE_CLASSES) * counts)) ** balance
    n_features, n_classes = z.shape[1], len(SOURCE_CLASSES)

    def loss(flat):
        b = flat.reshape(n_features, n_classes)
        logits = z @ b
        logits -= logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        value = -np.sum(weight[:, None] * onehot * log_p) / len(x)
        grad = z.T @ (weight[:, None] * (np.exp(log_p) - onehot)) / len(x)
        value += l2 * np.sum(b[:-1] ** 2)
        grad[:-1] += 2 * l2 * b[:-1]
        return value, grad.ravel()

    b = minimize(loss, np.zeros(n_features * n_classes), jac=True, method="L-BFGS-B",
                 options={"maxiter": 2000}).x.reshape(n_features, n_classes)
    return MorphologyCalibration(
        mean=tuple(map(float, mean)), scale=tuple(map(float, scale)),
        coefficients=tuple(tuple(map(float, row)) for row in b[:-1]),
        intercepts=tuple(map(float, b[-1])), features=tuple(features))
