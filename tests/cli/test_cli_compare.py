"""``metaloop compare``: the shipped configs from the command line (--print-config, --config
with a copy), and bad input (exit 2, a named error, nothing written)."""

from __future__ import annotations

import json

import pytest

from metaloop.cli.main import main
from metaloop.recipes import compare


@pytest.mark.parametrize("family", ["sinusoid", "omniglot"])
def test_print_config_prints_the_shipped_file(family, capsys):
    assert main(["compare", family, "--print-config"]) == 0
    assert capsys.readouterr().out == compare.config_text(family)


def test_a_printed_config_runs_back_through_config(tmp_path, capsys):
    assert main(["compare", "--print-config"]) == 0
    mine = tmp_path / "mine.toml"
    mine.write_text(capsys.readouterr().out.replace("tasks = 600", "tasks = 4"))
    argv = ["compare", "--config", str(mine), "--methods", "scratch,maml", "--iterations", "2",
            "--meta-batch", "2", "--no-progress", "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["config"]["eval"]["tasks"] == 4 and res["config"]["train"]["iterations"] == 2
    assert res["config"]["compare"]["methods"] == compare.load_config()["compare"]["methods"]
    assert set(res["methods"]) == {"scratch", "maml"}
    assert res["evaluation"] == {"scratch": "transductive", "maml": "transductive"}


@pytest.mark.parametrize("text,message", [
    ('[compare]\nmethodz = ["maml"]\n', "unknown key(s) compare.methodz"),
    ('[compare.per_method.maml.method]\ninner_batch = 4\n', "applies to reptile only"),
    ('[method]\ntransductive = false\n', "applies to metaoptnet, protonet, r2d2, reptile only"),
    ('[train]\noptimizer = "rmsprop"\n', "train.optimizer = 'rmsprop' is not one of"),
])
def test_bad_compare_configs_exit_2_and_write_nothing(tmp_path, capsys, text, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    out = tmp_path / "o"
    assert main(["compare", "--config", str(bad), "--no-progress", "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_print_config_of_an_unknown_family_is_named(capsys):
    assert main(["compare", "mnist", "--print-config"]) == 2
    assert "unknown family 'mnist'" in capsys.readouterr().err
