"""Generative models: autoencoder baseline, VAE, conditional VAE, ELBO and IWAE bounds; and
the idea that fails first, a classifier inverted into a generator (``invert_classifier``)."""

from metaloop.generative.ae import AE, fit_code_gaussian
from metaloop.generative.bounds import (
    elbo,
    evaluate_bounds,
    gaussian_kl,
    iwae_bound,
    reparameterize,
)
from metaloop.generative.cvae import CVAE, sample_classes
from metaloop.generative.data import binarize_dynamic, binarize_static
from metaloop.generative.fit import fit_generative
from metaloop.generative.invert import confidence_report, invert_classifier, total_variation
from metaloop.generative.quality import Classifier, sample_quality, train_classifier
from metaloop.generative.vae import VAE

__all__ = [
    "AE",
    "VAE",
    "CVAE",
    "elbo",
    "iwae_bound",
    "gaussian_kl",
    "reparameterize",
    "evaluate_bounds",
    "fit_code_gaussian",
    "sample_classes",
    "binarize_dynamic",
    "binarize_static",
    "fit_generative",
    "Classifier",
    "train_classifier",
    "sample_quality",
    "invert_classifier",
    "confidence_report",
    "total_variation",
]


def __getattr__(name: str):
    """The older names ``train`` and ``evaluate`` (they clashed with ``metaloop.train`` and
    ``metaloop.evaluate``): still importable, with a FutureWarning."""
    new = {"train": "fit_generative", "evaluate": "evaluate_bounds"}.get(name)
    if new is None:
        raise AttributeError(f"module 'metaloop.generative' has no attribute {name!r}")
    import warnings
    warnings.warn(f"metaloop.generative.{name} is now metaloop.generative.{new} (same "
                  f"function): rename it", FutureWarning, stacklevel=2)
    return globals()[new]
