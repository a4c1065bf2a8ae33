"""Every ``metaloop`` command written for users to copy is accepted by the commands' checks:
none is refused (exit 2) for a flag that would change nothing, an unknown flag or a bad value.

The commands come from README.md and docs/*.md (code blocks and inline code), the comments of
configs/*.toml and of the configs shipped in the package (src/metaloop/configs/*.toml), the
commands' own ``--help`` texts and the ``command`` fields of the records in docs/results.
Each runs through ``metaloop.cli.main.main`` in a fresh folder with the work itself stubbed:
whatever trains, evaluates, adapts or loads a model raises ``Reached`` once every check has
passed. ``eval`` and ``predict`` check their flags against the run they load,
so each run a command names is a one-iteration run of the config that trained it (found in
the commands that train it, else guessed from its name).

Placeholders are filled in (``RUN`` a run, ``K`` a number, ``FILE`` a config or table), an
optional ``[...]`` part is kept, ``[--a | --b]`` is read as each choice, and ``{a,b}`` or
``a|b`` as the first. A command meant to be copied (a code block, a config's comment, a
``--help`` example, a record) must pass every check; a synopsis (``[...]``, ``{a,b}``) or
inline prose must only not be refused for a flag, and prose that leaves out a required
option (``metaloop eval --refine K``) is a reference, not a command. Without a GPU, a command
with ``--device cuda`` stops at the missing device and is left out.

The written ``python benchmarks/X.py ...`` and ``python docs/gen_tables.py ...`` commands are
read by their scripts' own argument parsers, and the scripts are stopped there.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from metaloop import config
from metaloop.cli import eval as eval_cli
from metaloop.cli import predict as predict_cli
from metaloop.cli.main import COMMANDS, build_parser, main

REPO = Path(__file__).resolve().parents[1]


class Reached(Exception):
    """Every check passed: the stubbed work was reached."""


# ------------------------------------------------------------------ finding the commands

def _markdown(text: str) -> tuple[list[str], list[str]]:
    """(lines of fenced code blocks, inline code spans) of a Markdown page."""
    blocks = re.findall(r"^ *```[^\n]*\n(.*?)^ *```", text, re.MULTILINE | re.DOTALL)
    lines = [ln for b in blocks for ln in re.sub(r"\\\n\s*", " ", b).splitlines()]
    prose = re.sub(r"^ *```[^\n]*\n.*?^ *```", "", text, flags=re.MULTILINE | re.DOTALL)
    inline = [" ".join(s.split()) for s in re.findall(r"(?<!`)`([^`]+)`(?!`)", prose)]
    return lines, inline


def _help_texts() -> list[tuple[str, str]]:
    """(where, text) of every ``--help`` description and epilog, and the vae module's
    docstring; a line that starts with ``--`` continues the command above it."""
    from metaloop.cli import vae

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    texts = [("metaloop --help", parser.epilog or "")]
    for name, p in sub.choices.items():
        texts += [(f"metaloop {name} --help", p.description or ""),
                  (f"metaloop {name} --help", p.epilog or "")]
    texts.append(("metaloop.cli.vae docstring", vae.__doc__ or ""))
    return [(w, re.sub(r"\\?\n\s+(?=--)", " ", re.sub(r"\\\n\s*", " ", t))) for w, t in texts]


def _records() -> list[tuple[str, str]]:
    found = []

    def walk(o, where):
        if isinstance(o, dict):
            for k, v in o.items():
                if k == "command" and isinstance(v, str):
                    found.append((where, v))
                else:
                    walk(v, where)
        elif isinstance(o, list):
            for v in o:
                walk(v, where)
    for f in sorted((REPO / "docs" / "results").glob("*.json")):
        walk(json.loads(f.read_text()), f"docs/results/{f.name}")
    return found


def sources() -> list[tuple[str, str, bool]]:
    """(where, line, strict): each line that may hold a command; strict: a command meant to
    be copied (a code block, a config's comment, a --help example, a record), which must
    pass every check; otherwise inline prose or a synopsis (``[--option X]``, ``{a,b}``),
    which must only not be refused for a flag."""
    out = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        lines, inline = _markdown(page.read_text())
        where = str(page.relative_to(REPO))
        out += [(where, ln, True) for ln in lines] + [(where, s, False) for s in inline]
    shipped = sorted((REPO / "src" / "metaloop" / "configs").glob("*.toml"))
    for cfg in sorted((REPO / "configs").glob("*.toml")) + shipped:
        for ln in cfg.read_text().splitlines():
            if ln.lstrip().startswith("#"):
                text = re.sub(r"^\s*#\s*(Run:)?", "", ln)
                text = re.sub(r"\s+\([^()]*\)\s*$", "", text)    # "(validation)", "(S = 0, 1)"
                out.append((cfg.relative_to(REPO).as_posix(), text, True))
    for where, text in _help_texts():
        for ln in text.splitlines():
            out.append((where, re.sub(r"\s{2,}(\(.*\)|#.*)$", "", ln), True))
    out += [(where, c, True) for where, c in _records()]
    return out


NUMBERS = ("K", "N", "S", "T", "W", "I", "B", "Q")
"""The placeholders of numbers (``--refine K``), each written as 2."""


def _concrete(text: str) -> str | None:
    """The command with its template filled in; None where part of it is elided (``...``)."""
    text = text.replace("\\|", "|")
    text = re.sub(r"\s\([^()]*\)", "", text)                      # (a remark)
    text = re.sub(r"\[[^\[\]]*\.\.\.\]", "", text)              # [RUN ...]: more of the same
    text = re.sub(r"\b([A-Z][A-Z0-9_]*) \.\.\.", r"\1", text)     # RUN ...
    if "..." in text:
        return None
    text = re.sub(r"\[([^\[\]]*)\]", r"\1", text)                 # [--optional part]
    text = re.sub(r"\{([^{},]*),[^{}]*\}", r"\1", text)          # {a,b,c}: a
    return re.sub(r"(?<=[\w./-])\|[\w./|-]+", "", text)          # a|b: a


def _variants(text: str) -> list[str]:
    """The line with each ``[--a X | --b Y]`` group read as each of its choices."""
    m = re.search(r"\[([^\[\]]*\s\|\s[^\[\]]*)\]", text)
    if not m:
        return [text]
    return [v for choice in m.group(1).split(" | ")
            for v in _variants(text[:m.start()] + choice.strip() + text[m.end():])]


def commands_in(text: str) -> list[list[str]]:
    """Each ``metaloop`` command in a line of shell, as its argv after ``metaloop``."""
    return [argv for variant in _variants(text) for argv in _commands_in(variant)]


def _commands_in(text: str) -> list[list[str]]:
    text = _concrete(text)
    if text is None or "metaloop" not in text:
        return []
    found = []
    for part in re.split(r"&&|;|\s\|\s", text):
        try:
            words = shlex.split(part, comments=True)
        except ValueError:
            continue
        starts = [i for i, w in enumerate(words) if w == "metaloop" and (
            i == 0 or words[i - 1] == "-m" or all("=" in x or x == "$" for x in words[:i]))]
        if not starts:
            continue
        words = words[starts[0] + 1:]
        for j, w in enumerate(words):
            if w in (">", ">>", "2>", "<", "|", "2>&1"):
                words = words[:j]
                break
        i = 0
        while i < len(words) and words[i] in ("--threads", "--malloc"):
            i += 2
        if i < len(words) and words[i] in COMMANDS:
            found.append(["2" if w in NUMBERS else w for w in words])
    return found


def all_commands() -> dict[tuple[str, ...], tuple[str, bool]]:
    """argv -> (where it is first written, strict), strict if written so anywhere."""
    out: dict[tuple[str, ...], tuple[str, bool]] = {}
    for where, text, strict in sources():
        strict = strict and not re.search(r"[\[{]|\S\|\S", text)      # a synopsis
        for argv in commands_in(text):
            old = out.get(tuple(argv))
            out[tuple(argv)] = (old[0] if old else where, strict or bool(old and old[1]))
    return out


def _subcommand(argv) -> tuple[str, int]:
    i = 0
    while argv[i] in ("--threads", "--malloc"):
        i += 2
    return argv[i], i


USER_COPIES = {"my_folder.toml": "src/metaloop/configs/folder_example.toml"}
"""The docs' copies of a config of the repository or the package (``metaloop train
--example-config > my_folder.toml``), by the name they give them."""


def trained_runs(commands) -> dict[str, str]:
    """run directory -> the repository config that a written ``train`` command trains it
    with."""
    runs = {}
    for argv in commands:
        name, i = _subcommand(argv)
        if name == "train" and "--config" in argv and "--out" in argv:
            cfg = argv[argv.index("--config") + 1]
            cfg = USER_COPIES.get(cfg, cfg)
            if (REPO / cfg).is_file():
                runs.setdefault(argv[argv.index("--out") + 1], cfg)
    return runs


def config_of(run: str, runs: dict[str, str]) -> str:
    """The config that trained ``run``: written, or guessed from its name."""
    if run in runs:
        return runs[run]
    name = Path(run).name
    stem = re.sub(r"_?\d+$", "", name)
    for other, cfg in runs.items():                 # an ensemble's member: runs/ens_0 -> _1's
        if re.sub(r"_?\d+$", "", Path(other).name) == stem:
            return cfg
    if (REPO / "configs" / f"{name}.toml").is_file():
        return f"configs/{name}.toml"
    for method in ("r2d2", "metaoptnet", "reptile", "anil", "fomaml", "pretrain", "scratch"):
        if method in name:
            return f"configs/omniglot_{method}_5w1s_cpu.toml"
    if "challenge" in name or "protonet" in name or re.fullmatch(r"[A-Z]+\d*", name):
        return "configs/omniglot_challenge_cpu.toml"
    return "configs/omniglot_maml_5w1s_cpu.toml"


# ------------------------------------------------------------------------ running them

class Runs:
    """One-iteration runs of repository configs (small models), one per kind of run that the
    checks tell apart: the same method, family, evaluation and model kind share one."""

    def __init__(self, folder: Path, omniglot_root: Path):
        self.folder, self.root, self.made, self.by_config = folder, omniglot_root, {}, {}

    def _images(self) -> str:
        """A folder of 40 classes of 6 random images (a folder family's data)."""
        import numpy as np
        from PIL import Image

        root = self.folder / "images"
        if not root.exists():
            rng = np.random.default_rng(0)
            for k in range(40):
                (root / f"c{k:02d}").mkdir(parents=True)
                for i in range(6):
                    Image.fromarray((rng.random((28, 28)) * 255).astype(np.uint8)).save(
                        root / f"c{k:02d}" / f"{i}.png")
        return str(root)

    def __call__(self, cfg_path: str) -> str:
        if cfg_path in self.by_config:
            return self.by_config[cfg_path]
        cfg = config.load(REPO / cfg_path)
        family = cfg["family"]["name"]
        if family == "omniglot":
            cfg["family"]["root"] = str(self.root)
        elif family == "folder":
            cfg["family"]["root"] = self._images()
        if cfg["model"]["name"] in ("conv4", "resnet12"):
            cfg["model"]["channels"] = 4
        cfg["train"].update(iterations=1, meta_batch=1, checkpoint_every=1, init="")
        m = cfg["method"]
        key = json.dumps([m["name"], m["transductive"], m["head_init"], cfg["family"],
                          cfg["eval"], cfg["model"]["name"]], sort_keys=True)
        if key not in self.made:
            d = self.folder / f"run{len(self.made)}"
            d.mkdir()
            (d / "c.toml").write_text(config.to_toml(cfg))
            assert main(["train", "--config", str(d / "c.toml"), "--out", str(d / "run"),
                         "--no-progress"]) == 0, cfg_path
            self.made[key] = str(d / "run")
        self.by_config[cfg_path] = self.made[key]
        return self.made[key]

    def copy(self, run: str, k: int) -> str:
        """A copy of ``run``, for the k-th member of an ensemble whose members share a kind
        of run (an ensemble names each run once)."""
        import shutil

        to = f"{run}_member{k}"
        if not Path(to).exists():
            shutil.copytree(run, to)
        return to


@pytest.fixture(scope="module")
def small_runs(omniglot_root, tmp_path_factory):
    return Runs(tmp_path_factory.mktemp("doc_runs"), omniglot_root)


def _stub_the_work(monkeypatch) -> None:
    """Whatever trains, evaluates, adapts, loads a model or data for a command raises
    ``Reached``: every check of its flags came before."""
    from metaloop.generative import experiment, inversion, protocol
    from metaloop.recipes import adapt, compare, forgetting, training

    def reached(*a, **k):
        raise Reached
    for module, names in ((eval_cli, ("_evaluate", "_lake_runs")),
                          (predict_cli, ("classify_folders", "classify_tensors",
                                         "classify_texts")),
                          (training, ("prepare",)), (compare, ("run",)),
                          (adapt, ("load_model", "_prepare_images")),
                          (experiment, ("run", "sweep")),
                          (inversion, ("compare", "transfer_study")),
                          (protocol, ("run", "evaluate_run"))):
        for name in names:
            monkeypatch.setattr(module, name, reached)
    monkeypatch.setattr(forgetting, "SCENARIOS", {k: reached for k in forgetting.SCENARIOS})


USER_CONFIG = '[family]\nname = "sinusoid"\n[train]\niterations = 2\n'


def _table(path: Path) -> None:
    """A small text table: 30 classes of 8 texts."""
    rows = ["text,label"] + [f"text {c} {i},class{c}" for c in range(30) for i in range(8)]
    path.write_text("\n".join(rows) + "\n")


def _argv_for(argv: list[str], runs: dict[str, str], small_runs: Runs) -> list[str]:
    """The command with its runs replaced by small ones and its user files made."""
    argv = list(argv)
    name, _ = _subcommand(argv)
    for i, w in enumerate(argv[:-1]):
        value = argv[i + 1]
        if w == "--config" and (REPO / value).is_file():
            argv[i + 1] = str(REPO / value)
        elif w == "--config":
            Path("user_config.toml").write_text(USER_CONFIG)
            argv[i + 1] = "user_config.toml"
        elif w == "--data" and name == "adapt":
            _table(Path("table.csv"))
            argv[i + 1] = "table.csv"
        elif w == "--record":
            argv[i + 1] = f"records/{Path(value).name}"
    if name in ("eval", "predict") and "--checkpoint" in argv:
        i = argv.index("--checkpoint") + 1
        j = next((k for k in range(i, len(argv)) if argv[k].startswith("--")), len(argv))
        named = argv[i:j]
        members = [small_runs(config_of(r, runs)) for r in named]
        argv[i:j] = [small_runs.copy(m, k) if m in members[:k] and r not in named[:k] else m
                     for k, (r, m) in enumerate(zip(named, members))]
    return argv


REFUSAL = re.compile(r"would change nothing|drop --|leave (it|them) out|unrecognized arguments|"
                     r"invalid choice")
"""A refusal of a flag, which prose must not meet either."""
NO_CUDA = "requested but torch sees no CUDA device"


def _outcome(argv, capsys) -> tuple[str, str]:
    """("ok", "") where every check passed, ("reference", why) where required options are
    missing (prose), else ("error", the message)."""
    capsys.readouterr()
    try:
        rc = main(argv)
    except Reached:
        return "ok", ""
    except SystemExit as e:                         # argparse's usage errors
        err = capsys.readouterr().err.strip().splitlines()[-1:]
        if "the following arguments are required" in "".join(err):
            return "reference", "".join(err)
        return "error", f"exit {e.code}: {''.join(err)}"
    err = capsys.readouterr().err.strip()
    return ("ok", "") if rc == 0 else ("error", f"exit {rc}: {err}")


def test_the_commands_are_found():
    commands = all_commands()
    names = {_subcommand(list(a))[0] for a in commands}
    assert names == set(COMMANDS), names
    assert len(commands) > 200
    # the help texts' examples and the configs' Run: lines are among them
    assert ("eval", "--checkpoint", "runs/mine", "--out", "runs/mine/eval") in commands
    assert any(w.startswith("configs/") for w, _ in commands.values())
    # and the header of the example config the package ships, and the command printing it
    shipped = [text for where, text, _ in sources()
               if where == "src/metaloop/configs/folder_example.toml"]
    assert ["train", "--config", "my_folder.toml", "--out", "runs/my_folder"] in [
        argv for text in shipped for argv in commands_in(text)]
    assert ("train", "--example-config") in commands


def test_every_written_command_passes_the_checks(small_runs, tmp_path, monkeypatch, capsys):
    """Each command of the docs, configs, --help texts and records gets past every check
    (the stubbed work is reached); prose that leaves out required options is only required
    not to be refused for a flag."""
    commands = all_commands()
    runs = trained_runs(commands)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("METALOOP_DATA", str(small_runs.root.parent))
    for argv in commands:                  # the runs, before the train command is stubbed
        if _subcommand(list(argv))[0] in ("eval", "predict") and "--checkpoint" in argv:
            _argv_for(list(argv), runs, small_runs)
    _stub_the_work(monkeypatch)
    failed, references = [], []
    for argv, (where, strict) in sorted(commands.items()):
        kind, message = _outcome(_argv_for(list(argv), runs, small_runs), capsys)
        line = f"{where}: metaloop {shlex.join(argv)}\n    {message}"
        if kind == "reference" or NO_CUDA in message:
            references.append(line)
        elif kind == "error" and (strict or REFUSAL.search(message)):
            failed.append(line)
    assert not failed, f"{len(failed)} written command(s) refused:\n" + "\n".join(failed)
    assert len(references) < len(commands) / 4, references


@pytest.mark.parametrize("command", [
    "metaloop eval --checkpoint runs/omniglot_r2d2_5w1s_cpu --steps 0,1,5",
    "metaloop predict --checkpoint runs/mine --support s/ --query q/ --refine-weight 3",
    "metaloop adapt --family wordnet --approaches probe-ridge --steps 5",
    "metaloop forgetting --strategies naive,joint --replay-ratio 0.2",
    "metaloop vae --model ae --beta 2",
    "metaloop compare omniglot --print-config --ways 5",
])
def test_a_refused_command_would_be_found(command, small_runs, tmp_path, monkeypatch, capsys):
    """The check above tells a refused command from an accepted one."""
    (argv,) = commands_in(command)
    monkeypatch.chdir(tmp_path)
    argv = _argv_for(argv, {}, small_runs)            # its run, before train is stubbed
    _stub_the_work(monkeypatch)
    kind, message = _outcome(argv, capsys)
    assert kind == "error" and REFUSAL.search(message), message


# ------------------------------------------------ the scripts' commands: benchmarks/, docs/

class Parsed(BaseException):
    """The script's arguments parsed: its work is not run."""


def script_commands() -> list[tuple[str, str, list[str]]]:
    """(where, script, argv) of each written ``python benchmarks/X.py ...`` or ``python
    docs/gen_tables.py ...`` command, its template filled in as for ``metaloop``'s."""
    found = {}
    for where, text, _ in sources():
        for m in re.finditer(r"python ((?:benchmarks|docs)/\w+\.py)([^`|&;\n]*)", text):
            rest = _concrete(m[2])
            if rest is None or "<" in rest:
                continue
            try:
                argv = shlex.split(rest, comments=True)
            except ValueError:
                continue
            found.setdefault((m[1], tuple(argv)), where)
    return [(where, script, list(argv)) for (script, argv), where in sorted(found.items())]


def test_every_written_script_command_parses(monkeypatch, capsys):
    """Each ``python benchmarks/...`` command of the docs and records names only arguments its
    script takes, with values of the right type (the script's own parser reads them; what
    the script does with them is its tests' business)."""
    import argparse
    import runpy
    import sys

    commands = script_commands()
    scripts = {s for _, s, _ in commands}
    assert len(commands) > 15 and {"benchmarks/bench_maml.py", "docs/gen_tables.py"} <= scripts

    def parse_only(parser, args=None, namespace=None):
        raise Parsed(parse(parser, args, namespace))
    parse = argparse.ArgumentParser.parse_args
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    path, failed = list(sys.path), []
    for where, script, argv in commands:
        monkeypatch.setattr(sys, "argv", [str(REPO / script), *argv])
        monkeypatch.setattr(sys, "path", [str((REPO / script).parent), *path])  # as python does
        try:
            runpy.run_path(str(REPO / script), run_name="__main__")
            failed.append(f"{where}: {script} {shlex.join(argv)}\n    ran without parsing")
        except Parsed:
            pass
        except SystemExit as e:
            err = capsys.readouterr().err.strip().splitlines()[-1:]
            failed.append(f"{where}: {script} {shlex.join(argv)}\n    exit {e.code}: {err}")
    assert not failed, "\n".join(failed)
