"""A ``compile=True`` learner: pickled, saved and copied as an independent learner (its
compiled functions are built from itself on first use and left out of its state), and on
the CPU without a working C++ compiler a one-line RuntimeError with the advice instead of
inductor's traceback."""

from __future__ import annotations

import copy
import inspect
import io
import logging
import pickle
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import metaloop as ml
from metaloop.meta import ANIL, MAML
from metaloop.meta._strategies import cpu_compiler_problem
from metaloop.tasks.batch import TaskBatch


def _batch(seed: int = 0, tasks: int = 3) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    return TaskBatch(torch.randn(tasks, 6, 4, generator=g), torch.arange(6).repeat(tasks, 1) % 3,
                     torch.randn(tasks, 9, 4, generator=g), torch.arange(9).repeat(tasks, 1) % 3)


def _learner(make, batching: str, model: nn.Module | None = None):
    torch.manual_seed(0)
    model = model if model is not None else ml.models.MLP(4, (8,), 3)
    return make(model, 0.3, 1, loss="ce", batching=batching, compile=True)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6)
                                        for k in a)


@pytest.mark.parametrize("make", [MAML, ANIL])
@pytest.mark.parametrize("batching", ["vmap", "loop"])
def test_pickle_round_trip_before_and_after_the_first_call(make, batching):
    learner = _learner(make, batching)
    pickle.loads(pickle.dumps(learner))            # before any compiled call, too
    batch = _batch()
    want = learner.meta_gradient(batch)
    back = pickle.loads(pickle.dumps(learner))
    assert back.compile and back._owner == learner._owner
    assert _same(back.meta_gradient(batch), want)


def test_torch_save_and_load_round_trip():
    learner = _learner(MAML, "vmap")
    batch = _batch()
    want = learner.meta_gradient(batch)
    buf = io.BytesIO()
    torch.save(learner, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    assert _same(back.meta_gradient(batch), want)


class _DropMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.body(x))))


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_deepcopy_runs_its_own_network(batching):
    """The copy in eval mode, the original switched to train (Dropout on): the copy's
    compiled result is deterministic and equal to an eager copy's."""
    torch.manual_seed(0)
    model = _DropMLP().eval()
    learner = MAML(model, 0.3, 1, loss="ce", batching=batching, compile=True)
    batch = _batch()
    learner.meta_gradient(batch)                    # compiled once, on the original
    twin = copy.deepcopy(learner)
    eager = copy.deepcopy(learner)
    eager.compile = False
    learner.model.train()                           # the original's dropout on
    a, b = twin.meta_gradient(batch), twin.meta_gradient(batch)
    assert _same(a, b)
    assert _same(a, eager.meta_gradient(batch))
    assert twin._compiled_vmap is not learner._compiled_vmap


@pytest.fixture
def no_compiler(tmp_path):
    """``torch._inductor.config.cpp.cxx`` naming a "compiler" that fails (``/bin/false``),
    through inductor's own ``config.patch`` (a monkeypatched setting is not given back on
    every torch)."""
    inductor_config = pytest.importorskip("torch._inductor.config")
    fake = tmp_path / "g++"
    fake.symlink_to("/bin/false")
    with inductor_config.patch({"cpp.cxx": (None, str(fake))}):
        yield str(fake)


def test_cpu_compiler_problem_names_what_was_tried(no_compiler):
    problem = cpu_compiler_problem()
    assert problem is not None and no_compiler in problem


@pytest.mark.parametrize("make", [MAML, ANIL])
@pytest.mark.parametrize("batching", ["vmap", "loop"])
def test_no_cpu_compiler_is_one_runtime_error_with_the_advice(no_compiler, make, batching):
    learner = _learner(make, batching)
    with pytest.raises(RuntimeError) as e:
        learner.meta_gradient(_batch())
    text = str(e.value)
    assert text.startswith(f"{learner._owner}(compile=True) needs a C++ compiler for "
                           f"torch.compile on the CPU")
    assert no_compiler in text and "install g++ or set compile=False" in text
    assert "\n" not in text
    with pytest.raises(RuntimeError, match="needs a C"):
        learner.meta_loss(_batch())


def test_a_working_compiler_is_no_problem():
    if cpu_compiler_problem() is not None:
        pytest.skip("no C++ compiler here")
    assert cpu_compiler_problem() is None


def test_a_compiler_installed_after_a_failed_check_is_found(no_compiler):
    """Only a success is remembered: the advice says to install g++, and once it is there
    (the same path, now a working compiler) the check passes without a restart."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("no g++ here")
    assert cpu_compiler_problem() is not None
    fake = Path(no_compiler)
    fake.unlink()
    fake.symlink_to(gxx)                          # "installed" where it was looked for
    assert cpu_compiler_problem() is None


def _limit_hits() -> int:
    from torch._dynamo.utils import counters
    return sum(n for msg, n in counters["unimplemented"].items() if "recompile limit" in msg)


@pytest.fixture
def quiet_dynamo():
    """Dynamo's logging quietened, as ``TORCH_LOGS="-dynamo"`` does."""
    logger = logging.getLogger("torch._dynamo")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def test_the_recompile_limit_is_per_learner(quiet_dynamo):
    """Each learner's compiled function counts its own recompilations
    (``isolate_recompiles``): with a limit of 1, two learners kept alive (another inner lr,
    so another graph) each compile and run compiled, twice, with no fallback."""
    dynamo_config = pytest.importorskip("torch._dynamo.config")
    from torch._dynamo.utils import counters

    from metaloop.meta._strategies import RecompileLimitWarning
    if "isolate_recompiles" not in inspect.signature(torch.compile).parameters:
        pytest.skip("this torch counts recompilations per code object")
    batch = _batch(tasks=2)
    hits, graphs = _limit_hits(), counters["stats"]["unique_graphs"]
    with dynamo_config.patch({"recompile_limit": 1}), warnings.catch_warnings():
        warnings.simplefilter("error", RecompileLimitWarning)
        learners = []
        for lr in (0.3, 0.2):
            torch.manual_seed(0)
            learners.append(MAML(ml.models.MLP(4, (8,), 3), lr, 1, loss="ce", compile=True))
        for learner in learners * 2:
            learner.meta_gradient(batch)
    assert _limit_hits() == hits                             # no learner fell back to eager
    assert counters["stats"]["unique_graphs"] - graphs == 2  # one graph each, kept
    assert len(learners) == 2


def test_the_recompile_limit_fallback_warns_once_with_quiet_logging(quiet_dynamo):
    """A learner that reaches the limit runs eager with one RecompileLimitWarning naming the
    limit, the same numbers; told by dynamo's counters, not its (here quiet) log."""
    dynamo_config = pytest.importorskip("torch._dynamo.config")

    from metaloop.meta._strategies import RecompileLimitWarning
    learner = _learner(MAML, "vmap")
    eager = copy.deepcopy(learner)
    eager.compile = False
    messages = {}
    with dynamo_config.patch({"recompile_limit": 1}):
        learner.meta_gradient(_batch(tasks=2))
        for tasks in (3, 4):               # new shapes past the limit: eager, warned once
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                got = learner.meta_gradient(_batch(tasks=tasks))
            messages[tasks] = [str(w.message) for w in seen
                               if issubclass(w.category, RecompileLimitWarning)]
            assert _same(got, eager.meta_gradient(_batch(tasks=tasks)))
    assert len(messages[3]) == 1 and not messages[4], messages
    assert messages[3][0].startswith("MAML(compile=True): torch.compile reached its "
                                     "recompile limit (torch._dynamo.config.recompile_limit "
                                     "= 1)"), messages[3][0]


def test_the_accumulated_recompile_limit_is_named(quiet_dynamo):
    """torch's cap on the compilations of one code object over all learners (the process's
    count so far: reached by the first call or the second shape), named as the limit hit."""
    dynamo_config = pytest.importorskip("torch._dynamo.config")
    if not hasattr(dynamo_config, "accumulated_recompile_limit"):
        pytest.skip("this torch has no accumulated_recompile_limit")

    from metaloop.meta._strategies import RecompileLimitWarning
    learner = _learner(MAML, "vmap")
    with dynamo_config.patch({"recompile_limit": 8, "accumulated_recompile_limit": 1}), \
            warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for tasks in (2, 3, 4):
            learner.meta_gradient(_batch(tasks=tasks))
    messages = [str(w.message) for w in seen if issubclass(w.category, RecompileLimitWarning)]
    assert len(messages) == 1, messages
    assert "(torch._dynamo.config.accumulated_recompile_limit = 1)" in messages[0]
    assert messages[0].endswith("raise torch._dynamo.config.accumulated_recompile_limit")
