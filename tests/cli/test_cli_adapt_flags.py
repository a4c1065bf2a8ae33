"""``metaloop adapt``'s flags: one that the run would not read (an approach's option without
that approach, --meta's without --meta, the table's without --family table, a text model's
with an image model) is refused by name (exit 2, nothing written, before the model or data is
loaded) instead of being silently ignored."""

from __future__ import annotations

import pytest

from metaloop.cli.main import main
from metaloop.recipes import adapt as recipe


def _run(capsys, tmp_path, *argv):
    """Exit 2, nothing written; the error message."""
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["adapt", "--out", str(out), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("metaloop adapt: error:") and not out.exists()
    return err


# No data and no model exist at these paths: a refusal that names the flag came before any
# loading; an accepted command fails later, on the missing table or model.
TABLE = ["--family", "table", "--data", "/no/such/table.csv", "--model", "/no/such/model"]
IMAGES = ["--family", "omniglot", "--model", "/no/such/run", "--root", "/no/such/data"]


@pytest.mark.parametrize("argv, named, what", [
    (["--approaches", "probe-ridge,prompt-zero-shot", "--steps", "5"], "--steps 5",
     "the approaches finetune-zero"),
    (["--approaches", "probe-ridge", "--steps", "20"], "--steps 20", "the approaches"),
    (["--approaches", "finetune-zero", "--lora-r", "4"], "--lora-r 4", "the lora approach"),
    (["--approaches", "soft-prompt", "--lora-targets", "query"], "--lora-targets query",
     "the lora approach"),
    (["--approaches", "lora", "--prompt-tokens", "4"], "--prompt-tokens 4",
     "the soft-prompt approach"),
    (["--meta-iterations", "5"], "--meta-iterations 5", "--meta"),
    (["--meta-batch", "2"], "--meta-batch 2", "--meta"),
    (["--meta-shots", "2"], "--meta-shots 2", "--meta"),
    (["--meta-dir", "/tmp/m"], "--meta-dir /tmp/m", "--meta"),
    (["--split-fractions", "0.5,0.2,0.3"], "--split-fractions 0.5,0.2,0.3",
     "--family table, folder or tensors with --meta"),
    (["--split-seed", "3"], "--split-seed 3", "--family table, folder or tensors with --meta"),
])
def test_an_option_of_what_the_table_run_does_not_do_is_refused(argv, named, what, tmp_path,
                                                                capsys):
    err = _run(capsys, tmp_path, *TABLE, *argv)
    assert f"error: {named} applies to {what}" in err and "would change nothing" in err
    assert f"drop {named.split()[0]}" in err


@pytest.mark.parametrize("argv, named, what", [
    (["--max-length", "40"], "--max-length 40", "text models"),
    (["--prompt-tokens", "4"], "--prompt-tokens 4", "the soft-prompt approach"),
    (["--text-column", "sentence"], "--text-column sentence", "--family table"),
    (["--label-column", "y"], "--label-column y", "--family table"),
    (["--drop-small"], "--drop-small", "--family table"),
    (["--split-seed", "1", "--meta", "fomaml"], "--split-seed 1", "--family table"),
])
def test_a_text_or_table_option_on_images_is_refused(argv, named, what, tmp_path, capsys):
    err = _run(capsys, tmp_path, *IMAGES, *argv)
    assert f"error: {named} applies to {what}" in err and "(omniglot:" in err


@pytest.mark.parametrize("argv", [
    ["--approaches", "lora", "--steps", "5", "--lora-r", "4", "--lora-targets", "query"],
    ["--approaches", "probe-ridge", "--meta", "fomaml", "--steps", "5", "--lora-r", "4",
     "--meta-iterations", "2", "--meta-batch", "1", "--meta-shots", "2", "--split-seed", "1",
     "--split-fractions", "0.5,0.2,0.3", "--meta-dir", "/tmp/m"],
    ["--approaches", "soft-prompt", "--prompt-tokens", "4", "--max-length", "16",
     "--text-column", "t", "--label-column", "l", "--drop-small"],
    [],                                            # every approach reads every approach option
])
def test_options_the_run_reads_are_accepted(argv, tmp_path, capsys):
    err = _run(capsys, tmp_path, *TABLE, *argv)
    assert "would change nothing" not in err and "does not exist" in err


def test_the_committed_records_options_are_accepted(tmp_path, capsys):
    """The options of docs/results' adapt records (meta-learned LoRA on WordNet; the image
    rows) get past the check, as far as loading the model."""
    err = _run(capsys, tmp_path, "--model", "/no/such/model", "--family", "wordnet", "--ways",
               "5", "--shots", "1", "--tasks", "100", "--approaches", "lora", "--meta",
               "fomaml", "--meta-iterations", "250", "--meta-dir", str(tmp_path / "meta"))
    assert "would change nothing" not in err
    err = _run(capsys, tmp_path, *IMAGES, "--ways", "20", "--shots", "1", "--queries", "15",
               "--tasks", "300")
    assert "would change nothing" not in err


def test_from_python_the_settings_that_differ_from_the_defaults_are_checked():
    s = recipe.AdaptSettings(family="table", data="/no/such.csv", approaches="probe-ridge",
                             steps=50)
    with pytest.raises(ValueError, match="--steps 50 applies to the approaches"):
        recipe.prepare(s)
    recipe.check_given(recipe.AdaptSettings(family="table", approaches="probe-ridge"),
                       given=set())


def test_every_committed_records_command_is_accepted():
    """Every ``metaloop adapt`` command of docs/results' records gets past the check."""
    import dataclasses
    import json
    import shlex
    from pathlib import Path

    from metaloop.cli.main import build_parser

    commands = set()
    for path in sorted((Path(__file__).resolve().parents[2] / "docs" / "results").glob("*.json")):
        for part in json.loads(path.read_text()).get("command", "").split("&&"):
            words = shlex.split(part)
            if "adapt" in words and "metaloop" in words:
                commands.add(tuple(words[words.index("adapt") + 1:]))
    assert len(commands) >= 5
    for argv in commands:
        args = build_parser().parse_args(["adapt", *argv])
        given = {f.name: v for f in dataclasses.fields(recipe.AdaptSettings)
                 if (v := getattr(args, f.name)) is not None and v is not False}
        recipe.check_given(recipe.AdaptSettings(**given), set(given))


@pytest.mark.parametrize("argv, message", [
    (["--approaches", "lora", "--lora-targets", ","], "--lora-targets ',' has an empty item"),
    (["--approaches", "lora", "--lora-targets", "query,,value"],
     "--lora-targets 'query,,value' has an empty item"),
    (["--meta", ","], "--meta ',' has an empty item"),
    (["--meta", "fomaml,"], "--meta 'fomaml,' has an empty item"),
    (["--meta", "fomaml,reptile,fomaml"], "--meta 'fomaml,reptile,fomaml' names fomaml more "
     "than once"),
    (["--approaches", "lora,probe-ridge,lora"], "--approaches 'lora,probe-ridge,lora' names "
     "lora more than once"),
])
def test_a_comma_list_with_an_empty_item_is_refused(argv, message, tmp_path, capsys):
    """An empty --lora-targets item was dropped (',' trained the default layers) and an
    empty --meta list ran no meta-learner, both silently; a name given twice ran twice (a
    meta-learner's budget.json counted the second, reused, run too)."""
    err = _run(capsys, tmp_path, *TABLE, *argv)
    assert message in err
