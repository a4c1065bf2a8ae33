"""The ``metaloop train`` config the CLI tests of tests/train run: MAML on sinusoids."""

from pathlib import Path

SINUSOID_MAML = """
[family]
name = "sinusoid"
shots = 5
queries = 5
[model]
hidden = [16, 16]
[method]
name = "maml"
[train]
iterations = {iterations}
meta_batch = {meta_batch}
checkpoint_every = {checkpoint_every}
seed = {seed}
"""


def write_config(path: Path, *, iterations: int, meta_batch: int, checkpoint_every: int,
                 seed: int, dtype: str | None = None) -> Path:
    """Write the sinusoid MAML config with these [train] settings to ``path``; return it."""
    text = SINUSOID_MAML.format(iterations=iterations, meta_batch=meta_batch,
                                checkpoint_every=checkpoint_every, seed=seed)
    if dtype is not None:
        text += f'dtype = "{dtype}"\n'
    path.write_text(text)
    return path
