"""Generative models: autoencoder baseline, VAE, conditional VAE, ELBO and IWAE bounds; and
the idea that fails first, a classifier inverted into a generator (``invert_classifier``)."""

from metaloop.generative.ae import AE, fit_code_gaussian
from metaloop.generative.bounds import elbo, evaluate, gaussian_kl, iwae_bound, reparameterize
from metaloop.generative.cvae import CVAE, sample_classes
from metaloop.generative.data import binarize_dynamic, binarize_static
from metaloop.generative.invert import confidence_report, invert_classifier, total_variation
from metaloop.generative.quality import Classifier, sample_quality, train_classifier
from metaloop.generative.train import train
from metaloop.generative.vae import VAE

__all__ = [
    "AE",
    "VAE",
    "CVAE",
    "elbo",
    "iwae_bound",
    "gaussian_kl",
    "reparameterize",
    "evaluate",
    "fit_code_gaussian",
    "sample_classes",
    "binarize_dynamic",
    "binarize_static",
    "train",
    "Classifier",
    "train_classifier",
    "sample_quality",
    "invert_classifier",
    "confidence_report",
    "total_variation",
]
