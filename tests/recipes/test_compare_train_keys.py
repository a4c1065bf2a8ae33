"""``metaloop compare --config`` applies the ``[train]`` keys it can (``dtype``, ``prefetch``,
``log_every``), as ``metaloop train`` does, and warns by name of those it does not
(``init``, validation; the GPU's device-resident tasks and CUDA graph too, for Omniglot):
the run's stored config then says what it trained with; a float64 sinusoid comparison
also draws its fits plot in float64."""

import json

import pytest
import torch
from safetensors.torch import load_file

from metaloop.cli.main import main
from metaloop.config import UnreadKeyWarning

CMP = ["compare", "--methods", "maml", "--iterations", "2", "--meta-batch", "2", "--tasks",
       "3", "--no-progress"]


def test_compare_trains_in_the_configs_dtype(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[train]\ndtype = "float64"\nlog_every = 2\n')
    assert main([*CMP, "--config", str(cfg), "--out", str(tmp_path / "out")]) == 0
    run = tmp_path / "out" / "runs" / "maml"
    tensors = load_file(next(run.glob("ckpt-*/tensors.safetensors")))
    dtypes = {t.dtype for k, t in tensors.items() if k.startswith("model.")
              and t.is_floating_point()}
    assert dtypes == {torch.float64}
    stored = json.loads((tmp_path / "out" / "results.json").read_text())["config"]
    assert stored["train"]["dtype"] == "float64"


@pytest.mark.parametrize("line", ['init = "no/such/run"', "val_every = 1", "val_tasks = 7"])
def test_compare_names_the_train_keys_it_does_not_apply(tmp_path, line):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[train]\n{line}\n")
    key = line.split(" =")[0]
    with pytest.warns(UnreadKeyWarning, match=rf"train\.{key}.*metaloop compare"):
        assert main([*CMP, "--config", str(cfg), "--out", str(tmp_path / "out")]) == 0
