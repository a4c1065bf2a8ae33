"""Recipes: whole experiments as library functions, the ones behind the command line.

A recipe builds the families and learners it needs (``metaloop.build``), trains and
evaluates them, and returns the numbers; the CLI parses arguments, calls the recipe and
prints. ``compare`` is the main job (its settings ship as TOML files beside the package,
``metaloop/configs/compare_<family>.toml``), ``evaluation`` the held-out evaluation of a saved
run, ``predict`` few-shot classification of image folders, ``adapt`` the adaptation
comparison with meta-learned LoRA, ``forgetting`` the continual fine-tuning experiment,
``generative`` the VAE experiments (``metaloop vae``), ``training`` one method's
meta-training from a config, and ``report`` the tables and plots they share.
"""

from metaloop.recipes import (
    adapt,
    compare,
    evaluation,
    forgetting,
    generative,
    predict,
    report,
    training,
)

__all__ = ["adapt", "compare", "evaluation", "forgetting", "generative", "predict", "report",
           "training"]
