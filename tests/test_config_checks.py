"""``metaloop.config.check_combinations``: values no run can use, refused by name before any
data is read (``metaloop train --print-config`` refuses what ``train`` refuses)."""

from __future__ import annotations

import pytest

from metaloop import config
from metaloop.cli.main import main

OMNIGLOT = '[family]\nname = "omniglot"\n[model]\nname = "conv4"\n'
SMALL = '[family]\nname = "omniglot"\nimage_size = 8\n'
R2D2, METAOPTNET = '[method]\nname = "r2d2"\n', '[method]\nname = "metaoptnet"\n'

# each was accepted, then refused by the learner or the training loop after the data was
# read, naming no config key ("R2D2: lam must be ...", "HeadNet: scale must be ...")
REFUSED = {
    "r2d2-lam": (OMNIGLOT + R2D2 + "lam = -1.0\n",
                 "config method.lam must be a finite number > 0, got -1.0"),
    "metaoptnet-lam-nan": (OMNIGLOT + METAOPTNET + "lam = nan\n",
                           "config method.lam must be a finite number > 0, got nan"),
    "scale": (OMNIGLOT + R2D2 + "scale = -2.0\n", "config method.scale must be a finite number "
              ">= 0 (0: the method's default), got -2.0"),
    "scale-inf": (OMNIGLOT + '[method]\nname = "protonet"\nscale = inf\n',
                  "config method.scale must be a finite number >= 0"),
    "head": (OMNIGLOT + METAOPTNET + 'head = "svn"\n', "config method.head = 'svn' is not one "
             "of ['svm', 'logistic'] (did you mean 'svm'?)"),
    "grad": (OMNIGLOT + METAOPTNET + 'grad = "implict"\n', "config method.grad = 'implict' is "
             "not one of ['implicit', 'unrolled']"),
    "clip": ("[train]\nclip_grad_norm = -1.0\n", "config train.clip_grad_norm must be a finite "
             "number >= 0 (0: off), got -1.0"),
    "clip-nan": ("[train]\nclip_grad_norm = nan\n",
                 "config train.clip_grad_norm must be a finite number >= 0"),
    # trained for every iteration, then every evaluation of the run failed
    "steps-empty": ("[eval]\nsteps = []\n", "config eval.steps must be a non-empty list of "
                    "non-negative ints, got []"),
    # "Overflow when unpacking long long" from torch after the data was read; eval.seed
    # trained the whole run, then every evaluation of it failed
    "train-seed": ("[train]\nseed = 18446744073709551616\n", "config train.seed must be "
                   "below 2**64 (it seeds a torch.Generator), got 18446744073709551616"),
    "eval-seed": ("[eval]\nseed = 18446744073709551616\n", "config eval.seed must be below "
                  "2**64"),
    # the class split's seed had no range check: refused later by split_classes, naming no
    # config key
    "split-seed-big": ('[family]\nname = "tensors"\nroot = "x.npz"\n'
                       'split_seed = 18446744073709551616\n', "config family.split_seed must "
                       "be below 2**64 (it seeds a torch.Generator), got 18446744073709551616"),
    "split-seed-negative": ('[family]\nname = "tensors"\nroot = "x.npz"\nsplit_seed = -1\n',
                            "config family.split_seed must be >= 0, got -1"),
    # refused by the learner's builder, naming no config key
    "head-on-sinusoid": ('[method]\nname = "protonet"\n', "config method.name = 'protonet' "
                         "solves a classification head per task, but family.name = "
                         "'sinusoid' is regression"),
    # any other name trained on the held-out labels 5-9 (a typo of "train" too)
    "fashion-split": ('[family]\nname = "fashion_mnist"\nsplit = "tain"\n[model]\n'
                      'name = "conv4"\n', "config family.split = 'tain' is not one of "
                      "['train', 'val', 'test'] (did you mean 'train'?)"),
    "fashion-eval-split": ('[family]\nname = "fashion_mnist"\n[model]\nname = "conv4"\n'
                           '[eval]\nsplit = "evaluation"\n', "config eval.split = "
                           "'evaluation' is not one of ['train', 'val', 'test']"),
    # NaN passed the sum check; split_classes refused it, naming no config key, and
    # --print-config failed with "Out of range float values are not JSON compliant"
    "split-fractions-nan": ('[family]\nname = "tensors"\nroot = "x.npz"\n'
                            'split_fractions = [nan, 0.5, 0.5]\n', "config "
                            "family.split_fractions must be [train, val, test] >= 0 summing "
                            "to 1, got [nan, 0.5, 0.5]"),
    # train refused it before reading data, --print-config printed it (exit 0)
    "init-missing": ('[train]\ninit = "no/such/run"\n', "train.init = 'no/such/run': no "
                     "saved run there (a run directory with a LATEST file, or a ckpt-* "
                     "directory)"),
    # the whole image set was decoded and resized before Conv4 refused the size
    "conv4-small": (SMALL + '[model]\nname = "conv4"\npool = "max"\n',
                    "config family.image_size = 8 is too small for model.pool = 'max': its "
                    "four 2x2 max-pools need images of at least 16x16; set family.image_size "
                    ">= 16 or model.pool = 'stride'"),
    "resnet12-small": (SMALL + '[model]\nname = "resnet12"\n', "config family.image_size = 8 "
                       "is too small for model.name = 'resnet12'"),
    # every image of the folder was decoded into the cache before the model refused them
    "folder-mlp": ('[family]\nname = "folder"\nroot = "x"\n[model]\nname = "mlp"\n',
                   "config model.name = 'mlp' reads vectors, but family.name = 'folder' gives "
                   "images: use model.name = 'conv4' or 'resnet12'"),
    "folder-small": ('[family]\nname = "folder"\nroot = "x"\nimage_size = 12\n[model]\n'
                     'name = "conv4"\n', "config family.image_size = 12 is too small for "
                     "model.pool = 'max'"),
}


# the values refused whatever the other keys are: config.load names the file that sets them
# ("config file c.toml: method.lam must be ..."), as it names a wrong type
ONE_KEY = {"r2d2-lam", "metaoptnet-lam-nan", "scale", "scale-inf", "head", "grad", "clip",
           "clip-nan", "steps-empty", "train-seed", "eval-seed", "split-seed-big",
           "split-seed-negative"}


@pytest.mark.parametrize("case", REFUSED)
def test_train_and_print_config_refuse_before_reading_data(case, tmp_path, capsys):
    body, message = REFUSED[case]
    cfg = tmp_path / "c.toml"
    cfg.write_text(body)
    if case in ONE_KEY:
        message = message.replace("config ", f"config file {cfg}: ", 1)
    with pytest.raises(ValueError) as e:
        loaded = config.load(cfg)
        config.check_combinations(loaded)
        config.check_training(loaded, config.written_keys(cfg))
    assert message in str(e.value)
    assert main(["train", "--config", str(cfg), "--print-config"]) == 2
    assert message in capsys.readouterr().err
    out = tmp_path / "run"           # the data named does not exist: refused before reading it
    assert main(["train", "--config", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("body", [
    OMNIGLOT + R2D2 + "lam = 0.5\nscale = 0\n",
    OMNIGLOT + METAOPTNET + 'head = "logistic"\ngrad = "unrolled"\n',
    "[train]\nclip_grad_norm = 0\n",
    "[eval]\nsteps = [0]\n",
    "[train]\nseed = 18446744073709551615\n[eval]\nseed = 18446744073709551614\n",
    '[family]\nname = "tensors"\nroot = "x.npz"\nsplit_seed = 18446744073709551615\n',
    SMALL + '[model]\nname = "conv4"\npool = "stride"\n',
    '[family]\nname = "omniglot"\nimage_size = 16\n[model]\nname = "resnet12"\n',
])
def test_the_edges_of_those_ranges_are_accepted(body, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(body)
    config.check_combinations(config.load(cfg))
