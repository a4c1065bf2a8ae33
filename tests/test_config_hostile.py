"""Config files from strangers: oversized, deeply nested, devices, and huge values are
refused by name, before the TOML reader spends memory on them."""

import os

import pytest

from metaloop import config


def test_deep_dotted_key_is_refused_before_parsing(tmp_path):
    p = tmp_path / "deep.toml"
    p.write_text("a" + ".a" * 20000 + " = 1\n")          # 40 KB
    with pytest.raises(ValueError, match=r"deep\.toml nests keys or arrays 20000 levels deep"):
        config.load(p)


def test_deep_array_is_refused_naming_the_file(tmp_path):
    p = tmp_path / "arr.toml"
    p.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ValueError, match=r"arr\.toml nests keys or arrays 5000 levels"):
        config.load(p)


def test_recursion_in_the_reader_is_a_value_error(tmp_path, monkeypatch):
    # past the depth scan (raised cap), the reader's own RecursionError is named too
    monkeypatch.setattr(config, "MAX_CONFIG_DEPTH", 10**9, raising=False)
    p = tmp_path / "arr.toml"
    p.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ValueError, match=r"arr\.toml could not be read: it nests too deep"):
        config.load(p)


def test_brackets_and_dots_in_strings_and_comments_do_not_count(tmp_path):
    p = tmp_path / "ok.toml"
    p.write_text("# " + "[a." * 100 + "\n[family]\nname = 'sinusoid'\n"
                 "root = \"" + "[." * 100 + "\"\n[method]\nname = \"\"\"maml\"\"\"\n")
    cfg = config.load(p)
    assert cfg["family"]["root"] == "[." * 100
    assert cfg["method"]["name"] == "maml"


def test_oversized_file_is_refused_with_its_size(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "MAX_CONFIG_BYTES", 1000, raising=False)
    p = tmp_path / "big.toml"
    p.write_text("[family]\nname = \"" + "a" * 2000 + "\"\n")
    size = p.stat().st_size
    with pytest.raises(ValueError, match=rf"big\.toml is {size} bytes, more than a config "
                                         r"file can be \(1000 bytes\)"):
        config.load(p)


def test_default_size_cap_is_one_megabyte():
    assert config.MAX_CONFIG_BYTES == 1 << 20
    assert config.MAX_CONFIG_DEPTH == 64


def test_extends_a_character_device_says_what_it_is(tmp_path):
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    p = tmp_path / "c.toml"
    p.write_text('extends = "/dev/zero"\n')
    with pytest.raises(ValueError, match=r"extends /dev/zero, which is a character device, "
                                         r"not a config file"):
        config.load(p)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_a_fifo_config_says_what_it_is(tmp_path):
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"pipe\.toml is a named pipe \(FIFO\), not a config"):
        config.load(fifo)
    p = tmp_path / "c.toml"
    p.write_text('extends = "pipe.toml"\n')
    with pytest.raises(ValueError, match=r"which is a named pipe \(FIFO\)"):
        config.load(p)


def test_missing_file_is_still_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        config.load(tmp_path / "none.toml")


def test_long_value_is_shortened_in_the_message(tmp_path):
    p = tmp_path / "long.toml"
    p.write_text("[family]\nname = \"" + "a" * 100_000 + "\"\n[train]\niterations = \""
                 + "b" * 100_000 + "\"\n")
    with pytest.raises(ValueError) as info:
        config.load(p)
    assert len(str(info.value)) < 10_000          # not 100 KB: a path's length at most
    assert "..." in str(info.value)


def test_long_value_of_a_name_is_shortened(tmp_path):
    p = tmp_path / "long.toml"
    p.write_text("[family]\nname = \"" + "a" * 100_000 + "\"\n")
    with pytest.raises(ValueError, match=r"family\.name = 'a+\.\.\.a+' is not one of") as info:
        config.load(p)
    assert len(str(info.value)) < 10_000


def test_a_long_path_is_echoed_whole():
    """Cut at 80 characters, a train.init path of 99 read '/tmp/.../a_rather_long...'."""
    init = "/data/" + "a_rather_long_folder_name_for_runs/" * 4 + "run-seed-0"
    from metaloop.config import _short

    assert _short(init) == repr(init)


@pytest.mark.parametrize("digits", ["9" * 5000, "1_" + "0" * 4400],
                         ids=["plain", "underscored"])
def test_an_integer_past_pythons_digit_limit_names_the_file_and_line(tmp_path, digits):
    """tomllib raises a bare ValueError (int()'s digit limit) for such an integer, whose
    message named no file and advised sys.set_int_max_str_digits()."""
    p = tmp_path / "big.toml"
    p.write_text(f"[family]\nname = 'sinusoid'\nways = {digits}\n")
    n = len(digits.replace("_", ""))
    with pytest.raises(ValueError, match=rf"config file {p} is not valid TOML: an integer of "
                                         rf"{n} digits on line 3") as e:
        config.load(p)
    assert "set_int_max_str_digits" not in str(e.value)
