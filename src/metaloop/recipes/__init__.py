"""Recipes: whole experiments as library functions over a validated config dict.

A recipe builds the families and learners a config describes, trains and evaluates them,
and returns the numbers; the CLI loads the config file, calls the recipe and prints. The
``metaloop compare`` main job is ``compare.run``; its settings ship as TOML files beside the
package (``metaloop/configs/compare_<family>.toml``, see ``compare.config_text``).
``adapt`` holds the text-table pieces of ``metaloop adapt --family table``.
"""

from metaloop.recipes import adapt, compare

__all__ = ["adapt", "compare"]
