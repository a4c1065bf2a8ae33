"""``metaloop compare --config``: a bad key, [compare] key or value of the file is named with
the file of its ``extends`` chain that sets it (exit 2, nothing written)."""

from __future__ import annotations

import pytest

from metaloop.cli.main import main
from metaloop.recipes import compare

BASE = '[family]\nname = "sinusoid"\n[train]\nmeta_batch = 2\n'


def _chain(tmp_path, base: str, child: str):
    (tmp_path / "base.toml").write_text(base)
    path = tmp_path / "child.toml"
    path.write_text('extends = "base.toml"\n' + child)
    return path


@pytest.mark.parametrize("in_base", [False, True], ids=["in-child", "in-base"])
def test_an_unknown_key_names_the_file_that_sets_it(tmp_path, in_base):
    """It was ``unknown key train.iteratons (did you mean 'iterations'?)``, no file."""
    bad = "[eval]\ntasks = 4\n[train]\niteratons = 2\n"
    base = '[family]\nname = "sinusoid"\n'
    path = _chain(tmp_path, base + bad if in_base else base, "" if in_base else bad)
    origin = f"{tmp_path / 'base.toml'} (which {path} extends)" if in_base else f"{path}"
    with pytest.raises(ValueError) as e:
        compare.load_config(path=path)
    assert str(e.value).startswith(f"config file {origin}: unknown key train.iteratons (did "
                                   f"you mean 'iterations'?); valid: [")


def test_a_wrong_type_names_the_file(tmp_path):
    path = _chain(tmp_path, BASE, '[eval]\ntasks = "4"\n')
    with pytest.raises(ValueError) as e:
        compare.load_config(path=path)
    assert str(e.value) == f"config file {path}: eval.tasks must be int, got str '4'"


@pytest.mark.parametrize("table, message", [
    ('method = ["maml"]\n', "unknown key(s) compare.method (did you mean 'methods'?); valid: "
                            "['methods', 'per_method', 'per_ways']"),
    ('methods = ["mamll"]\n', "unknown method(s) ['mamll'] in [compare] (did you mean "
                              "'maml'?); choose from ['scratch', 'pretrain', 'maml', "),
    ('[compare.per_method.maml.train]\nitertions = 2\n',
     "compare.per_method.maml: unknown key train.itertions (did you mean 'iterations'?)"),
], ids=["compare-key", "method-name", "per-method-key"])
def test_a_bad_compare_table_is_named_with_a_suggestion(tmp_path, table, message):
    path = tmp_path / "c.toml"
    path.write_text(BASE + "[compare]\n" + table)
    with pytest.raises(ValueError) as e:
        compare.load_config(path=path)
    assert str(e.value).startswith(f"config file {path}: {message}")


@pytest.mark.parametrize("key", ["iterations", "meta_batch"])
@pytest.mark.parametrize("in_base", [False, True], ids=["in-child", "in-base"])
def test_a_count_out_of_range_names_its_file(tmp_path, capsys, key, in_base):
    bad = f"[eval]\ntasks = 4\n[train]\n{key} = -1\n"
    base = '[family]\nname = "sinusoid"\n'
    path = _chain(tmp_path, base + bad if in_base else base, "" if in_base else bad)
    origin = f"{tmp_path / 'base.toml'} (which {path} extends)" if in_base else f"{path}"
    out = tmp_path / "o"
    assert main(["compare", "--config", str(path), "--methods", "maml", "--no-progress",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"config file {origin}: train.{key} must be a positive int, got -1" in err
    assert not out.exists()


def test_an_unknown_key_stops_the_command_line_before_any_output(tmp_path, capsys):
    path = _chain(tmp_path, BASE, "[train]\niteratons = 2\n")
    out = tmp_path / "o"
    assert main(["compare", "--config", str(path), "--methods", "maml", "--no-progress",
                 "--out", str(out)]) == 2
    assert f"config file {path}: unknown key train.iteratons (did you mean 'iterations'?)" \
        in capsys.readouterr().err
    assert not out.exists()
