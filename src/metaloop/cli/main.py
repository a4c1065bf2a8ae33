"""``metaloop`` command line: one subcommand per module in this package."""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import os
import re
import sys
import warnings
from pathlib import Path

from metaloop.cli._signals import catch_signals, cleaning_up, release_signals
from metaloop.models.text import TextExtraMissing
from metaloop.train import distributed
from metaloop.train.malloc import MODES, keep_heap, system_heap

# Each name is a module metaloop.cli.<name> with ``register(subparsers)``; the parser it adds
# sets ``func`` to a callable taking the parsed args and returning an exit code.
COMMANDS = ("compare", "train", "eval", "predict", "adapt", "forgetting", "vae", "data")


class UserError(Exception):
    """Bad input from the user: printed as ``metaloop: error: ...`` with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are printed once per node under torchrun
    (every process of a node gets the same command line); exit status 2 on every rank."""

    def error(self, message):
        if not distributed.local_leader():
            self.exit(2)
        super().error(message)


def _version() -> str:
    """``metaloop X (torch Y, Python Z)``: what a bug report or a record names."""
    import platform

    import torch

    import metaloop
    return (f"metaloop {metaloop.__version__} (torch {torch.__version__}, Python "
            f"{platform.python_version()})")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="metaloop", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Meta-learn a starting point that fine-tunes well, adapt pretrained "
                    "models, fine-tune\nwithout forgetting, and generate - on your data or "
                    "the built-in task families.",
        epilog="examples:\n"
               "  metaloop --threads 1 compare              # MAML, FOMAML, Reptile, ANIL + "
               "baselines on sinusoid, ~2.5 CPU-min\n"
               "  metaloop train --example-config > my_folder.toml   # set its family.root\n"
               "  metaloop train --config my_folder.toml --out runs/mine\n"
               "  metaloop eval --checkpoint runs/mine      # held-out classes, 95% CI\n"
               "  metaloop predict --checkpoint runs/mine --support support/ --query query/\n"
               "  metaloop adapt --family table --data sentences.csv\n"
               "  metaloop data omniglot --download         # fetch Omniglot, checksummed\n"
               "\n'metaloop COMMAND --help' describes each command.")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default 0: torch's choice; 1 is fastest for the "
                             "small sinusoid MLP)")
    parser.add_argument("--malloc", choices=MODES, default="heap",
                        help="heap (default): glibc serves large tensors from its heap and "
                             "reuses them, instead of mapping fresh pages on every call "
                             "(less system time; the peak memory can grow); system: glibc's "
                             "defaults (metaloop.train.malloc). Without glibc (macOS, "
                             "Windows, musl) both leave the C allocator as it is")
    parser.add_argument("--version", action="version", version=_version(),
                        help="print metaloop's, torch's and Python's versions and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        if importlib.util.find_spec(f"metaloop.cli.{name}") is None:
            continue
        importlib.import_module(f"metaloop.cli.{name}").register(sub)
    return parser


def _show_warning(command: str, show, message, category, filename, lineno, file=None,
                  line=None) -> None:
    """Print metaloop's own warnings (``metaloop.config.UnreadKeyWarning``...) as
    ``metaloop COMMAND: warning: ...``, as errors are printed, without the source line of
    the library that raised them, and so Python's own categories (a ``FutureWarning`` of a
    deprecated config key) raised from metaloop's code; other warnings as Python shows them."""
    ours = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))    # .../metaloop
    if (getattr(category, "__module__", "").startswith("metaloop.")
            or os.path.abspath(str(filename)).startswith(ours + os.sep)):
        print(f"metaloop {command}: warning: {message}", file=file or sys.stderr)
    else:
        show(message, category, filename, lineno, file, line)


def _shown_as_python_does() -> bool:
    """Whether warnings go to Python's own display: neither replaced nor recorded (a
    ``catch_warnings(record=True)`` keeps ``showwarning`` and swaps the function that
    ``_showwarnmsg`` calls for a list's ``append``)."""
    impl = getattr(warnings, "_showwarnmsg_impl", None)
    return (warnings.showwarning is getattr(warnings, "_showwarning_orig", None)
            and getattr(impl, "__module__", None) == "warnings"
            and getattr(impl, "__name__", None) == "_showwarnmsg_impl")


STARTING = "metaloop: interrupted while starting; nothing was written"

SMALL_CLASSES_ADVICE = {
    "adapt": ("api", "give fewer [--shots or ]--queries, or leave them out: --drop-small"),
    "eval": ("config", "restore those classes' examples[ (or, for the held-out tasks, lower "
                       "--shots)]: the queries per class and family.drop_small are the run's "
                       "own, which metaloop eval keeps (it has no option for them)"),
}
"""The advice of a ``SmallClassesError`` (classes smaller than shots + queries) in the words
of the command's options, for an error whose advice is the API's (``adapt``: its --data
read by ``Episodes`` or ``TextTable``) or a config's (``eval``: the run's data, read as its
stored config says, ``metaloop.build``). Its part on the shots is in brackets: left out
where the tasks have one shot already (``episodes.advice_for_shots``)."""


def _fit_advice(command: str, error: BaseException, text: str) -> str:
    """``text`` (what ``error`` prints) with the advice of the ``SmallClassesError`` it ends
    with (``error`` or one it was raised from) fitted to the command: replaced by the
    command's (``SMALL_CLASSES_ADVICE``) where that error's advice is of the kind the
    command replaces, and in any case without the advice to lower the shots where the
    tasks that did not fit have one shot (an error raised again with a config's advice
    may not know them: the one it was raised from does). Unchanged otherwise."""
    from metaloop.tasks import episodes

    chain: list[BaseException] = []
    e: BaseException | None = error
    while e is not None and all(e is not c for c in chain):
        chain.append(e)
        e = e.__cause__ or e.__context__
    small = [c for c in chain if isinstance(c, episodes.SmallClassesError)]
    ends = next((c for c in small if text.endswith(c.advice)), None)
    if ends is None:
        return text
    from metaloop import build
    from metaloop.tasks import text_table

    shots = next((c.shots for c in small if c.shots is not None), None)
    known = (("api", episodes.SMALL_ADVICE), ("api", text_table.SMALL_ADVICE),
             ("config", build.SMALL_ADVICE))
    found = next(((kind, advice) for kind, advice in known
                  if ends.advice in {episodes.advice_for_shots(advice, n) for n in (None, 1)}),
                 None)
    if found is None:                   # another caller's own advice: left as it is
        return text
    kind, advice = found
    if SMALL_CLASSES_ADVICE.get(command, ("", ""))[0] == kind:
        advice = SMALL_CLASSES_ADVICE[command][1]
    return text[:len(text) - len(ends.advice)] + episodes.advice_for_shots(advice, shots)


SIZE_FLAGS = ("meta_batch", "batch_size", "eval_batch", "ways", "shots", "queries",
              "meta_shots", "hidden", "latent", "image_size", "max_length")
"""The flags whose values size the tensors a command allocates, in the order the advice of
an allocation failure names those the command has."""

CONFIG_SIZES = "train.meta_batch, model.hidden, family.shots, family.queries, family.ways"
"""The config keys that size a run's tensors, named by the advice of ``train`` and of a
``compare --config``."""


def _out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is a failed allocation: ``MemoryError`` (Python's, NumPy's), torch's
    ``OutOfMemoryError`` (CUDA and the other accelerators) or the ``RuntimeError`` of
    torch's CPU allocator (``DefaultCPUAllocator: can't allocate memory``)."""
    torch = sys.modules.get("torch")             # (None: torch raised nothing)
    oom = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                            getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None))
                if isinstance(t, type))
    return (isinstance(e, MemoryError) or (bool(oom) and isinstance(e, oom))
            or (isinstance(e, RuntimeError) and "can't allocate memory" in str(e)))


def _bytes_text(n: int) -> str:
    """``n`` bytes in words: ``"8000000000000 bytes (8.0 TB)"``."""
    for unit, scale in (("EB", 1e18), ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6),
                        ("kB", 1e3)):
        if n >= scale:
            return f"{n} bytes ({n / scale:.1f} {unit})"
    return f"{n} bytes"


def _memory_text(e: BaseException, args: argparse.Namespace) -> str:
    """One line for the failed allocation ``e`` (``_out_of_memory``): what could not be
    allocated, as torch, NumPy or Python said it, and the sizes to make smaller (the
    command's flags of ``SIZE_FLAGS``, and the config's sizes where it reads a config)."""
    said = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    cpu = re.search(r"can't allocate memory: you tried to allocate (\d+) bytes", said)
    if cpu:                                      # torch's CPU allocator
        what = f"could not allocate {_bytes_text(int(cpu.group(1)))} on the CPU"
    elif said:                                   # torch's OutOfMemoryError, NumPy's, ...
        short = re.match(r"(.*?out of memory\.(?: Tried to allocate [\d.]+ \w+\.)?)", said)
        what = short.group(1) if short else said
        what = what if len(what) <= 200 else what[:197] + "..."
    else:                                        # a bare MemoryError
        what = "Python could not allocate memory"
    flags = [f"--{k.replace('_', '-')}" for k in SIZE_FLAGS if hasattr(args, k)]
    if args.command == "train" or getattr(args, "config", None):
        flags.append(f"the config's sizes ({CONFIG_SIZES})")
    sizes = f": {', '.join(flags)}" if flags else ""
    stored = _stored_sizes(args)
    model = (f", or the model that a loaded run's stored config builds ({stored}),"
             if stored else "")
    files = _data_files(args)
    if files:
        return (f"out of memory: {what}; the data read or the sizes asked for{model} need "
                f"more memory than there is: a data file read whole may be too large "
                f"({', '.join(files)}), or give smaller sizes{sizes}")
    return (f"out of memory: {what}; the sizes asked for{model} need more memory than there "
            f"is, give smaller ones{sizes}")


STORED_SIZES = {"mlp": ("model.hidden",),
                "text": ("model.hidden", "family.max_length"),
                "image": ("model.channels", "family.image_size", "family.channels")}
"""The keys of a run's stored config that size the model it builds, by ``model.name``
(``"image"``: the image models, ``conv4`` and ``resnet12``)."""


def _loaded_runs(args: argparse.Namespace) -> list[Path]:
    """The run folders (or ``ckpt-*`` folders) whose stored config builds the command's
    model: ``predict``'s and ``eval``'s ``--checkpoint``, ``adapt``'s ``--model`` where it is
    a folder, and the run that ``train --resume`` continues without a ``--config``."""
    runs = getattr(args, "checkpoint", None)
    runs = list(runs) if isinstance(runs, (list, tuple)) else [runs]
    if args.command == "adapt":
        runs.append(getattr(args, "model", None))
    if args.command == "train" and not getattr(args, "config", None):
        resume = getattr(args, "resume", None)
        runs.append(resume if isinstance(resume, (str, os.PathLike)) else
                    getattr(args, "out", None) if resume else None)
    return [Path(r) for r in runs if isinstance(r, (str, os.PathLike)) and Path(r).is_dir()]


def _stored_sizes(args: argparse.Namespace, most: int = 3) -> str:
    """The sizes that the stored configs of the command's loaded runs (``_loaded_runs``)
    give the model, e.g. ``"runs/a/ckpt-00000002: model.channels = 1000000000,
    family.image_size = 28, family.channels = 1"``; ``"; "`` between runs, the first
    ``most`` of them; empty where the command loads none or none can be read."""
    from metaloop.train import checkpoint as ckpt

    named = []
    for run in _loaded_runs(args):
        try:
            found = run if (run / "state.json").is_file() else ckpt.latest_checkpoint(run)
            cfg = ckpt.read_state(found / "state.json").get("config") if found else None
        except (OSError, ValueError, AttributeError):
            continue
        if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
            continue
        name = cfg["model"].get("name")
        keys = STORED_SIZES.get("image" if name in ("conv4", "resnet12") else name, ())
        values = [f"{k} = {cfg[s][v]!r}" for k in keys for s, v in [k.split(".")]
                  if isinstance(cfg.get(s), dict) and v in cfg[s]]
        if values:
            named.append(f"{found}: {', '.join(values)}")
    more = f"; and {len(named) - most} more" if len(named) > most else ""
    return "; ".join(named[:most]) + more


def _data_files(args: argparse.Namespace) -> list[str]:
    """The data files (not folders) a command reads whole: its ``--support``, ``--query``
    and ``--data`` files, and the ``family.root`` of its config for a tensor file or a text
    table (``family.name = "tensors"`` or ``"table"``); control characters escaped."""
    paths = [getattr(args, k, None) for k in ("support", "query", "data")]
    cfg = getattr(args, "config", None)
    if isinstance(cfg, (str, os.PathLike)):
        try:
            from metaloop import config as _config
            family = _config.read(cfg).get("family", {})
            if family.get("name") in ("tensors", "table") and family.get("root"):
                paths.append(family["root"])            # read from the working folder
        except (OSError, ValueError):
            pass
    return [str(p) for p in paths if isinstance(p, (str, os.PathLike)) and Path(p).is_file()]


# Control characters but tab and line feed (C0, DEL, C1: ESC starts a terminal's escape
# sequences), as a file or class name may hold them.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _printable(text: str) -> str:
    """``text`` with each control character but tab and line feed written as ``\\xNN``, so
    that a name in a message cannot drive the terminal it is printed to."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def main(argv: list[str] | None = None) -> int:
    """Run the command of ``argv`` (None: ``sys.argv[1:]``); return its exit status.

    SIGTERM raises KeyboardInterrupt throughout, as Ctrl-C does, so that either one at any
    moment ends the command with status 130 and a line saying so: before the command runs
    (building the parser, parsing, setting threads), ``STARTING``; while it runs, after its
    own clean-up, ``metaloop COMMAND: interrupted`` (``train``, ``adapt``, ``forgetting`` and
    ``compare`` say before it what they kept and how to continue). One more signal during
    the clean-up after an interrupt is ignored, so that the clean-up finishes (what the
    command created is removed entirely); the one after it stops at once. Once the command
    has its exit status, signals do not change it: in the ``metaloop`` command's process a
    signal ends the process at once with that status, and from metaloop's exit function on
    they are ignored, so the interpreter's shutdown (torch's teardown) cannot turn a finished
    command's status into 143 (``metaloop.cli._signals``).

    Called from a program of your own, it sets back what it changed for the command: the
    signal handlers, ``warnings.showwarning``, torch's thread count (``--threads``), the TF32
    flags of a command run on CUDA (``train.distributed.tf32_kept``) and the C allocator's
    settings (``--malloc heap``, then glibc's defaults, ``malloc.system_heap``).
    """
    started: list[str] = []           # the command, once it runs
    code = 130                        # (the status if an interrupt leaves it no other)
    try:
        try:
            catch_signals()
            distributed.left_to_another(False)
            code = _main(argv, started)
        except KeyboardInterrupt:      # as while the package imports (metaloop/__init__.py)
            # STARTING once per node under torchrun: a node's other ranks stopped while
            # starting stopped alike (often by torchrun, as a rank exited with its own error)
            if started or distributed.local_leader():
                print(f"metaloop {started[0]}: interrupted" if started else STARTING,
                      file=sys.stderr)
        finally:
            release_signals(code)
        # under torchrun, a rank that left its error to another to print exits after it
        # (torchrun's SIGTERM then ends the wait, with this status): the message is printed
        distributed.let_another_print(code)
    except KeyboardInterrupt:          # a signal as release_signals was entered: the status
        release_signals(code)          # is decided
    return code


def _innermost(parser: argparse.ArgumentParser, args) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``args`` chose (``metaloop data omniglot``'s for
    ``metaloop data omniglot ...``), whose usage and ``prog`` an error of it names."""
    while True:
        chosen = next((a.choices.get(getattr(args, a.dest, None) or "") for a in
                       parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if chosen is None:
            return parser
        parser = chosen


def _main(argv: list[str] | None, started: list[str]) -> int:
    """``main`` under its signal handling; ``started`` gets the command's name just before
    it runs. Bad input (``ValueError``...) and a failed allocation (``_out_of_memory``: sizes
    too large for the machine) end the command with status 2 and one line, after the
    command's own clean-up."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:                 # the subcommand's own error and usage, not the top level's
        _innermost(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if not 0 <= args.threads < 2**31:       # torch's set_num_threads takes a C int
        parser.error(f"--threads must be >= 0 and below 2**31, got {args.threads}")
    world = os.environ.get("WORLD_SIZE", "1")
    if args.command != "train" and world.strip() not in ("", "1", "0"):
        if not distributed.local_leader():     # the same refusal in every process: once
            distributed.left_to_another()      # (its node's first process prints it)
            return 2
        print(f"metaloop {args.command}: error: started by torchrun (WORLD_SIZE={world}), "
              f"but only metaloop train is distributed: every process would run the whole "
              f"{args.command} and write the same output; start it without torchrun",
              file=sys.stderr)
        return 2
    # both set back when the command ends: a program calling main() keeps its own
    heap = args.malloc == "heap" and keep_heap()
    threads = None
    if args.threads:
        import torch
        threads = torch.get_num_threads()
        torch.set_num_threads(args.threads)
    shown = warnings.showwarning
    if _shown_as_python_does():        # not recorded (pytest.warns, catch_warnings(record))
        warnings.showwarning = functools.partial(_show_warning, args.command, shown)
    try:
        started.append(args.command)
        return int(args.func(args) or 0)
    except (UserError, ValueError, FileNotFoundError, TextExtraMissing) as e:
        text = distributed.message(e)      # None: another rank of a torchrun prints it
        if text is not None:
            text = _fit_advice(args.command, e, text)
            print(f"metaloop {args.command}: error: {_printable(text)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        text = distributed.message(e)      # None: another rank of a torchrun prints it
        if text is not None:               # ("rank r of W: " where only some ranks met it)
            print(_printable(f"metaloop {args.command}: error: "
                             f"{text[:len(text) - len(str(e))]}{_memory_text(e, args)}"),
                  file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        cleaning_up()                      # (through the finally below too)
        print(f"metaloop {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:    # the reader went away (| head): stop quietly, as a shell tool
        devnull = os.open(os.devnull, os.O_WRONLY)         # so the exit's flush has a target
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13                                    # 141, as a process killed by SIGPIPE
    finally:
        warnings.showwarning = shown
        if threads is not None:
            import torch
            torch.set_num_threads(threads)
        if heap:
            system_heap()


if __name__ == "__main__":
    sys.exit(main())
