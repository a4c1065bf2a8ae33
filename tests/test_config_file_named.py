"""``metaloop.config.load``: a config file's mistakes named with the file that makes them (an
empty file, a value out of range, a wrong-case name, a byte-order mark, a misplaced
``extends``)."""

from __future__ import annotations

import codecs

import pytest

from metaloop import config
from metaloop.cli.main import main
from metaloop.recipes import compare

SMALL = """\
[family]
name = "sinusoid"
shots = 5
queries = 5
[model]
name = "mlp"
hidden = [8]
[method]
name = "maml"
[train]
iterations = 3
meta_batch = 2
"""



def _with(bad: str) -> str:
    """SMALL with ``bad`` (``"[section]\\nkey = value\\n"``) in place of SMALL's value of that
    key, or added to its section (a new one at the end if SMALL has none)."""
    header, line = bad.rstrip("\n").split("\n")
    key = line.split(" = ")[0]
    out, section, done = [], "", False
    for text in SMALL.splitlines():
        if text.startswith("["):
            if section == header and not done:
                out.append(line)
                done = True
            section = text
        elif section == header and text.split(" = ")[0] == key:
            text, done = line, True
        out.append(text)
    if not done:
        out += [line] if section == header else [header, line]
    return "\n".join(out) + "\n"


EMPTY = "sets no key; an empty file is usually a failed write: give at least [family] name " \
        "and [method] name, or use --example-config"


@pytest.mark.parametrize("body", ["", "# nothing yet\n\n# still nothing\n", "[train]\n",
                                  'extends = "empty.toml"\n'],
                         ids=["zero-bytes", "comments-only", "empty-section", "extends-empty"])
def test_a_config_that_sets_nothing_is_refused_by_name(tmp_path, capsys, body):
    """An empty file (a failed write) trained sinusoid MAML for 1000 iterations on the
    defaults; a file that only extends an empty one did the same."""
    (tmp_path / "empty.toml").write_text("")
    cfg = tmp_path / "c.toml"
    cfg.write_text(body)
    with pytest.raises(ValueError) as e:
        config.load(cfg)
    assert str(e.value) == f"config file {cfg} {EMPTY}"
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 2
    assert f"config file {cfg} {EMPTY}" in capsys.readouterr().err
    assert not out.exists()


def test_compare_reads_an_empty_file_as_no_changes(tmp_path):
    """``metaloop compare --config`` takes only the keys a file changes: none is no change."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("# nothing to change\n")
    assert compare.load_config(path=cfg) == compare.load_config()


RANGES = [
    ("[train]\niterations = -1\n", "train.iterations must be a positive int, got -1"),
    ("[train]\nlr = nan\n", "train.lr must be a positive number, got nan"),
    ("[train]\nlr = inf\n", "train.lr must be a positive number, got inf"),
    ("[model]\nhidden = [0]\n", "model.hidden must be positive ints, got [0]"),
    ("[train]\nseed = -1\n", "train.seed must be >= 0, got -1"),
    ("[eval]\nsteps = []\n", "eval.steps must be a non-empty list of non-negative ints, got []"),
    ('[method]\nname = "MAML"\n', "method.name = 'MAML' is not one of ['scratch', 'pretrain', "
                                  "'maml', 'fomaml', 'reptile', 'anil', 'r2d2', 'metaoptnet', "
                                  "'protonet'] (did you mean 'maml'?)"),
]
RANGE_IDS = ["iterations", "lr-nan", "lr-inf", "hidden", "seed", "steps", "method-case"]


@pytest.mark.parametrize("bad, message", RANGES, ids=RANGE_IDS)
def test_a_value_out_of_range_names_its_file(tmp_path, capsys, bad, message):
    """A wrong type was named with its file, a value out of range only as ``config
    train.iterations must be ...``."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(_with(bad))
    with pytest.raises(ValueError) as e:
        config.load(cfg)
    assert str(e.value) == f"config file {cfg}: {message}"
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"config file {cfg}: {message}" in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("bad, message", RANGES, ids=RANGE_IDS)
def test_a_value_out_of_range_in_a_base_names_the_base(tmp_path, bad, message):
    (tmp_path / "base.toml").write_text(_with(bad))
    child = tmp_path / "child.toml"
    child.write_text('extends = "base.toml"\n[eval]\ntasks = 4\n')
    with pytest.raises(ValueError) as e:
        config.load(child)
    assert str(e.value) == f"config file {tmp_path / 'base.toml'} (which {child} extends): " \
                           f"{message}"


def test_a_child_that_fixes_the_base_value_loads(tmp_path):
    (tmp_path / "base.toml").write_text(SMALL + "[eval]\nsteps = []\n")
    child = tmp_path / "child.toml"
    child.write_text('extends = "base.toml"\n[eval]\nsteps = [0, 1]\n')
    assert config.load(child)["eval"]["steps"] == [0, 1]


@pytest.mark.parametrize("bad, message", RANGES, ids=RANGE_IDS)
def test_check_combinations_keeps_its_wording_for_a_dict(bad, message):
    """A config built in code has no file: the message is the key's, as before."""
    raw = config.tomllib.loads(_with(bad))
    cfg = config.validate(raw)
    with pytest.raises(ValueError) as e:
        config.check_combinations(cfg)
    assert str(e.value) == f"config {message}"


@pytest.mark.parametrize("given, meant", [("MAML", "maml"), ("FOMAML", "fomaml"),
                                          ("ProtoNet", "protonet"), ("Maml", "maml"),
                                          ("MAMLL", "maml")])
def test_a_wrong_case_name_suggests_the_right_one(given, meant):
    """difflib compared raw case: ``"MAML"`` got no suggestion at all."""
    cfg = config.validate({"method": {"name": given}})
    with pytest.raises(ValueError, match=rf"\(did you mean '{meant}'\?\)"):
        config.check_combinations(cfg)


def test_a_wrong_case_section_and_key_suggest_the_right_ones():
    with pytest.raises(ValueError, match=r"unknown config section \[TRAIN\] \(did you mean "
                                         r"'train'\?\)"):
        config.validate({"TRAIN": {"iterations": 3}})
    with pytest.raises(ValueError, match=r"unknown key train\.LR \(did you mean 'lr'\?\)"):
        config.validate({"train": {"LR": 0.1}})


def test_a_leading_byte_order_mark_is_read(tmp_path):
    """PowerShell's ``Out-File -Encoding utf8`` starts the file with a BOM: it was refused as
    ``is not valid TOML: Invalid statement (at line 1, column 1)``."""
    plain, marked = tmp_path / "plain.toml", tmp_path / "bom.toml"
    plain.write_text(SMALL)
    marked.write_bytes(codecs.BOM_UTF8 + SMALL.encode())
    assert config.load(marked) == config.load(plain)
    assert config.read(marked) == config.read(plain)


def test_a_byte_order_mark_inside_the_file_is_still_invalid(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(SMALL.encode() + codecs.BOM_UTF8 + b"[eval]\ntasks = 4\n")
    with pytest.raises(ValueError, match=rf"config file {cfg} is not valid TOML"):
        config.load(cfg)


def test_extends_inside_a_section_says_where_it_goes(tmp_path):
    """It was ``unknown key train.extends``, which did not say why."""
    (tmp_path / "base.toml").write_text(SMALL)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[train]\nextends = "base.toml"\n')
    with pytest.raises(ValueError) as e:
        config.load(cfg)
    assert str(e.value) == (f"config file {cfg}: key extends is under [train] (train.extends), "
                            f"where it names nothing: extends goes at the top of the file, "
                            f"before any [section]")
