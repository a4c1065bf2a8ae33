"""Few-shot classification of your own image files with a saved run (``metaloop predict``).

``classify_folders(run, support, query)`` reads a support folder (one sub-folder of images per
class) and a query folder with the run's own image transform (``Run.transform``), adapts the
run's learner to the support set with its own rule, and scores every query image. The run
may be an ensemble (``load_ensemble``), and the test-time shifts of ``metaloop eval``
(``support_shift``, ``query_shift``) apply as there. ``classify_texts(run, support, query)``
does the same for a text run (``model.name = "text"``, e.g. trained on a table family): a
support table of labelled texts and a query table or ``.txt`` file of texts to classify.
``classify_tensors(run, support, query)`` takes ``.npz`` / ``.pt`` files of examples instead
(feature vectors, or images as arrays), for any classification run whose network reads them.
``tsv_line`` writes one row of ``metaloop predict``'s tab-separated output.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from metaloop.build import text_encoder
from metaloop.config import HEAD_BASED
from metaloop.data.images import load_image, load_query, load_support
from metaloop.data.lake_runs import OFFICIAL_RUNS_SHA256, read_lake_runs, runs_digest
from metaloop.evaluate.heldout import mean_ci, shift_averaged
from metaloop.runs import Run
from metaloop.tasks.augment import shifted_support
from metaloop.tasks.text_table import (
    FORMATS,
    check_quoting,
    read_text_table,
    read_texts,
    unique_rows,
)

__all__ = ["QUERY_CHUNK", "TEXT_CHUNK", "TENSOR_SUFFIXES", "Predictions", "TensorPredictions",
           "TextPredictions", "check_image_run", "check_text_run", "classify_folders",
           "classify_tensors", "classify_texts", "predict_folders", "score_lake_runs",
           "takes_steps", "tsv_line"]

QUERY_CHUNK = 1024   # most queries per forward pass (BatchNorm statistics come from each chunk)
TEXT_CHUNK = 64      # query texts per forward pass of a text encoder (no statistics shared)
TENSOR_SUFFIXES = (".npz", ".pt")   # files of examples as arrays (``read_tensor_file``)


@dataclass
class Predictions:
    """The scores of ``classify_folders``: ``files[i]`` (relative to the query folder) has
    softmax probabilities ``probs[i]`` (float32 ``[Q, n]``) over ``classes`` (n names);
    ``ignored`` lists the files of either folder left out as not images by their suffix, and
    ``hidden`` counts the hidden entries (``.names``) left out of either, as training's
    folder scan counts them."""

    files: list[str]
    classes: list[str]
    probs: torch.Tensor
    ignored: list[str] = field(default_factory=list)
    hidden: int = 0

    @property
    def labels(self) -> list[str]:
        """The most probable class of each file."""
        return [self.classes[int(k)] for k in self.probs.argmax(-1)]


@dataclass
class TextPredictions:
    """The scores of ``classify_texts``: ``texts[i]`` (in the query file's order) has softmax
    probabilities ``probs[i]`` (float32 ``[Q, n]``) over ``classes`` (n labels, sorted)."""

    texts: list[str]
    classes: list[str]
    probs: torch.Tensor

    @property
    def labels(self) -> list[str]:
        """The most probable class of each text."""
        return [self.classes[int(k)] for k in self.probs.argmax(-1)]


@dataclass
class TensorPredictions:
    """The scores of ``classify_tensors``: row ``i`` of the query file's ``x`` has softmax
    probabilities ``probs[i]`` (float32 ``[Q, n]``) over ``classes`` (n names)."""

    classes: list[str]
    probs: torch.Tensor

    @property
    def labels(self) -> list[str]:
        """The most probable class of each row."""
        return [self.classes[int(k)] for k in self.probs.argmax(-1)]


def predict_folders(learner, support_x, support_y, query_x, steps: int | None = None,
                    support_shift: int = 0, query_shift: int = 0) -> torch.Tensor:
    """Adapt to one support set and score the queries.

    Args:
        support_x: ``[S, C, H, W]``; support_y: int64 ``[S]`` in ``0..n-1``.
        query_x: ``[Q, C, H, W]``.
        steps: adaptation steps (default the learner's inner steps).
        support_shift: adapt to every shift of the support images up to this many pixels
            as well (``metaloop.tasks.augment.shifted_support``; 0 = off).
        query_shift: score each query by its class probabilities averaged over its shifts
            up to this many pixels, all copies of a chunk in one batch (0 = off).

    More than ``QUERY_CHUNK`` queries are scored in chunks of equal size (within one), so
    no query is left to a small last chunk's BatchNorm statistics.

    Returns:
        ``[Q, n]`` softmax probabilities, in the dtype of the inputs and the model (a
        float64 run's: float64).

    Raises:
        ValueError: a negative or non-int shift.
    """
    support_x, support_y = shifted_support(support_x, support_y, support_shift)
    params = learner.adapt(support_x, support_y, steps)
    n = int(support_y.max()) + 1
    chunks = query_x.tensor_split(max(1, -(-len(query_x) // QUERY_CHUNK)))  # equal sizes
    with torch.no_grad():
        logits = torch.cat([shift_averaged(learner.predict, params, chunk, query_shift)
                            for chunk in chunks])                                # [Q, out]
    return logits[:, :n].softmax(-1)                                          # [Q, n]


def classify_folders(run: Run, support, query, *, steps: int | None = None,
                     invert: str | None = None, support_shift: int = 0,
                     query_shift: int = 0,
                     progress: Callable[[int], None] | None = None) -> Predictions:
    """Adapt ``run``'s learner to the images of ``support`` and classify those of ``query``.

    Args:
        run: a loaded image-classification run (``load_run``, on any device), or an
            ensemble of such runs (``metaloop.recipes.evaluation.load_ensemble``: their
            probabilities averaged).
        support: a folder with one sub-folder of images per class (at least 2 classes).
        query: a folder of images to classify (sub-folders are searched too).
        steps: adaptation steps (default: the run's inner steps; >= 0). Refused for a run
            (or an ensemble all of whose members) solve their head in closed form
            (``takes_steps`` is False), where it would change nothing.
        invert: polarity ("auto", "always", "never"; default: the run's transform).
        support_shift: test-time shifts of the support images in pixels, as
            ``predict_folders``.
        query_shift: test-time shifts of the query images in pixels, as
            ``predict_folders``.
        progress: called with 1 after each support or query image is decoded.

    Returns:
        ``Predictions`` (its ``probs`` on the CPU); all queries are classified in one batch
        (per ``QUERY_CHUNK``), so BatchNorm sees the statistics of the query batch, as in
        training, unless the learner scores each query on its own (``transductive =
        False``; ``metaloop.recipes.evaluation.scoring(run.learner, "non-transductive")``
        sets it for a run trained transductively). The refinement of the prototypes applies
        as set (``metaloop.recipes.evaluation.refining``).

    Raises:
        ValueError: not an image-classification run; unreadable folders; a support set whose
            number of classes differs from a learned head's outputs (adapt from a zero head
            with ``load_run(..., head_init="zero")`` instead); negative ``steps`` or shifts;
            ``steps`` for a run that takes no adaptation steps.
    """
    tf = _checked_transform(run, steps, support_shift, query_shift)
    _check_steps(run, steps)
    size, invert = tf["image_size"], invert or tf["invert"]
    ignored: list = []                                   # README.txt, Thumbs.db, ...
    hidden: list = []                                    # .DS_Store, .hidden.png, ...
    sx, sy, classes, _ = load_support(support, size, invert, tf["read_channels"], progress,
                                      ignored, hidden)
    # SGD learners with a learned head need as many classes as its outputs; a zero head
    # (pretrain, head_init "zero") and the solved heads of R2D2 / MetaOptNet take any number
    for member in getattr(run, "members", [run]):           # an ensemble: each of its runs
        _check_head(member, support, len(classes))
    qx, names = load_query(query, size, invert, tf["read_channels"], progress, ignored,
                           hidden)
    p = next(run.learner.model.parameters())           # where the model is, in its dtype
    sx, qx = (_as_trained(tf, x).to(p.device, p.dtype) for x in (sx, qx))
    probs = predict_folders(run.learner, sx, sy.to(p.device), qx, steps, support_shift,
                            query_shift)                                  # [Q, n]
    return Predictions(names, classes, probs.float().cpu(), [str(f) for f in ignored],
                       len(hidden))


def classify_tensors(run: Run, support, query, *, steps: int | None = None,
                     support_shift: int = 0, query_shift: int = 0) -> TensorPredictions:
    """Adapt ``run``'s learner to the labelled examples of the tensor file ``support`` and
    classify the rows of the tensor file ``query``.

    Args:
        run: a loaded classification run (or ensemble) whose network reads the files'
            examples: feature vectors ``[D]`` (an MLP run, e.g. trained on a tensors family)
            or images ``[C, H, W]`` / ``[H, W]`` (a Conv4 or ResNet-12 run).
        support: an ``.npz`` or ``.pt`` file with ``x`` and ``y`` (and optionally
            ``class_names``), read as ``Episodes.from_tensors`` reads it
            (``metaloop.tasks.episodes.read_tensor_file``); at least 2 classes.
        query: an ``.npz`` or ``.pt`` file with ``x`` (a ``y`` in it is ignored).
        steps: as :func:`classify_folders`.
        support_shift: test-time shifts of the support in pixels (images only), as
            :func:`predict_folders`.
        query_shift: test-time shifts of the queries in pixels (images only), as
            :func:`predict_folders`.

    Returns:
        ``TensorPredictions`` (its ``probs`` on the CPU), one row per query example, in the
        file's order. Examples are converted as in training: uint8 to floats in [0, 1],
        ``[N, H, W]`` to ``[N, 1, H, W]``.

    Raises:
        ValueError: a regression or text run; unreadable files (named); an ``x`` in
            either file that training does not read (a dtype other than uint8, float or
            bool, such as uint16; float images that look like 0..255 pixels:
            ``metaloop.tasks.episodes.check_pixels``, naming the file); support labels
            that are not ints ``[N]`` or lie outside ``[0, len(class_names))``, or repeated
            class names (as training refuses them, ``check_examples``); fewer than 2
            classes; examples whose shape the network does not read (naming both); shifts
            on feature vectors; a learned head with another number of outputs; negative
            ``steps`` or shifts, or ``steps`` for a run that takes none.
    """
    from metaloop.tasks.episodes import check_examples, read_tensor_file

    members = getattr(run, "members", [run])
    for m in members:
        if m.config["family"]["name"] == "sinusoid" or m.config["model"]["name"] == "text":
            raise ValueError(f"{m.path}: classifying the examples of a tensor file needs a "
                             f"classification run of images or feature vectors; this one is "
                             f"family {m.config['family']['name']!r}, model "
                             f"{m.config['model']['name']!r}")
    _check_steps(run, steps)
    _check_shifts(support_shift, query_shift)
    sx, sy, names = read_tensor_file(support)
    if sx.dim() == 1:
        raise ValueError(f"the support file {support} holds x as one row of {len(sx)} values; "
                         f"x holds one example per row: save x[None] ([1, {len(sx)}]) for a "
                         f"single example")
    # the checks of training: int labels [N] in [0, len(class_names)), distinct names
    sx, sy, classes = check_examples(sx, sy, names, what=f"the support file {support}:")
    present = sorted(set(sy.tolist()))
    if len(present) < 2:
        raise ValueError(f"tensor file {support} holds examples of {len(present)} class; the "
                         f"support set needs at least 2 classes to choose from")
    if present != list(range(len(classes))):     # names of classes without examples: drop
        classes = [classes[i] for i in present]
        sy = torch.searchsorted(torch.tensor(present), sy)
    if Path(query).expanduser().is_dir():
        raise ValueError(f"the query {query} is a folder, but the support {support} is a "
                         f"tensor file of labelled examples, so the query is such a file of "
                         f"examples to classify (.npz or .pt with x)")
    qx = read_tensor_file(query, labels=False)[0]
    if qx.dim() == 1:
        raise ValueError(f"the query file {query} holds x as one row of {len(qx)} values; x "
                         f"holds one example per row: save x[None] ([1, {len(qx)}]) for a "
                         f"single example")
    sx, qx = (_as_input(x) for x in (sx, qx))
    for m in members:                           # an ensemble: every member reads them
        want = _input_shape(m)
        for name, x in (("support", sx), ("query", qx)):
            if want is not None and tuple(x.shape[1:]) != want:
                last = len(want) == 3 and tuple(x.shape[1:]) == (*want[1:], want[0])
                raise ValueError(f"the {name} file {support if name == 'support' else query} "
                                 f"holds examples of shape {list(x.shape[1:])}, but {m.path} "
                                 f"reads {list(want)}"
                                 + ("; they look channels-last [N, H, W, C]: save x as [N, C, "
                                    "H, W] (x.permute(0, 3, 1, 2), or x.transpose(0, 3, 1, 2) "
                                    "for numpy)" if last else ""))
    if (support_shift or query_shift) and sx.dim() != 4:
        raise ValueError(f"support_shift and query_shift shift images [N, C, H, W], but the "
                         f"files hold feature vectors {list(sx.shape)}")
    for member in members:
        _check_head(member, support, len(classes), "classes")
    p = next(run.learner.model.parameters())           # where the model is, in its dtype
    probs = predict_folders(run.learner, sx.to(p.device, p.dtype), sy.to(p.device),
                            qx.to(p.device, p.dtype), steps, support_shift,
                            query_shift)                                      # [Q, n]
    return TensorPredictions(classes, probs.float().cpu())


def _as_input(x: torch.Tensor) -> torch.Tensor:
    """Examples as training turns them into inputs (``Episodes._gather``): float32, uint8
    scaled to [0, 1], ``[N, H, W]`` greyscale images given their channel. ``x`` is uint8 or
    float (``read_tensor_file`` refuses other dtypes)."""
    x = x.unsqueeze(1) if x.dim() == 3 else x
    return x.to(torch.float32).div_(255) if x.dtype == torch.uint8 else x.to(torch.float32)


def _input_shape(run: Run) -> tuple[int, ...] | None:
    """The example shape the run's network reads: ``(D,)`` for an MLP, ``(C, H, W)`` for an
    image network trained on images of a known size (a tensor file's, as its checkpoint
    stores them); None where only a forward pass can tell (an image network trained on a
    tensor file by an older metaloop, whose checkpoint does not store the shape)."""
    first = getattr(run, "members", [run])[0]
    tf, fam = first.transform, first.config["family"]
    if tf is None:
        lin = next((m for m in first.network.modules() if isinstance(m, torch.nn.Linear)),
                   None)
        return (lin.in_features,) if lin is not None else None
    if fam["name"] == "tensors":
        shape = (first.data or {}).get("example_shape")
        return tuple(shape) if shape else None
    return (tf["channels"], tf["image_size"], tf["image_size"])


def classify_texts(run: Run, support, query, *, steps: int | None = None,
                   text_column: str | None = None, label_column: str | None = None,
                   delimiter: str | None = None, quoting: str | None = None,
                   progress: Callable[[int], None] | None = None) -> TextPredictions:
    """Adapt a text run's learner to the labelled texts of ``support`` and classify the texts
    of ``query``.

    Args:
        run: a loaded text-classification run (``model.name = "text"``: its family's encoder
            with a head), or an ensemble of such runs (``load_ensemble``).
        support: a CSV, TSV or JSONL table with a text and a label column
            (``metaloop.tasks.text_table.read_text_table``); its distinct labels, sorted,
            are the classes (at least 2; any number of texts each).
        query: a table with a text column (other columns are ignored), or a ``.txt`` file
            with one text per line (``read_texts``), the i-th prediction line i's: a blank
            line before the last text is refused (blank lines after it are ignored).
        steps: adaptation steps (default: the run's inner steps; >= 0); refused for a run
            that solves its head in closed form, as in :func:`classify_folders`.
        text_column: the text column to read (default: the run's ``family.text_column``).
        label_column: the label column to read (default: the run's
            ``family.label_column``).
        delimiter: the field separator of the CSV / TSV files among ``support`` and
            ``query`` (default: by extension, ``","`` or tab).
        quoting: how the quotes of the CSV / TSV files among ``support`` and ``query`` are
            read: ``"csv"`` or ``"none"`` (as written, one row per line; see
            ``read_text_table``); default: the run's ``family.quoting``, as it read its
            table in training.
        progress: called with the number of query texts scored after each chunk.

    Returns:
        ``TextPredictions`` (its ``probs`` on the CPU). The texts are tokenized by the run's
        encoder and cut at its ``family.max_length`` tokens, as in training. A text model
        has no BatchNorm, so a text's scores do not depend on the other queries, unless a
        ProtoNet's prototypes are refined with them (``metaloop.recipes.evaluation.refining``;
        then all queries, up to ``QUERY_CHUNK``, refine together).

    Raises:
        ValueError: not a text run; an unreadable table or file (named, with the line); a
            blank line among the texts of a ``.txt`` query (named by its number); a
            support table with fewer than 2 labels; a learned head with another number of
            outputs (``head_init="zero"`` instead); a delimiter or ``quoting`` that applies
            to neither file, an unknown ``quoting``;
            negative ``steps``, or ``steps`` for a run that takes none.
    """
    check_text_run(run)
    _check_steps(run, steps)
    for flag, path, what in (("support", support, "a CSV, TSV or JSONL table of labelled "
                                                   "texts"),
                             ("query", query, "a table with a text column or a .txt file")):
        if Path(path).expanduser().is_dir():
            raise ValueError(f"{run.path} classifies texts (model 'text'), so the {flag} is "
                             f"{what}, not a folder ({path})")
    fam = run.config["family"]
    text_column, label_column = (text_column or fam["text_column"],
                                 label_column or fam["label_column"])
    separated = [f for f in (support, query) if _separated(f)]
    if delimiter is not None and not separated:
        raise ValueError(f"delimiter {delimiter!r} separates the fields of CSV and TSV files, "
                         f"but {support} and {query} are neither")
    if quoting is not None:
        check_quoting("classify_texts", quoting)
        if not separated:
            raise ValueError(f"quoting {quoting!r} says how CSV and TSV files are read, but "
                             f"{support} and {query} are neither")
    quoting = quoting or fam.get("quoting", "csv")
    texts, labels = read_text_table(support, text_column, label_column,
                                    delimiter if _separated(support) else None,
                                    quoting=quoting if _separated(support) else "csv")
    # each text once, as a task reads a table; one text under two labels is named
    texts, labels, _ = unique_rows(Path(support).expanduser(), texts, labels)
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise ValueError(f"{support} has {len(classes)} label ({classes[0]!r}); the support "
                         f"table needs texts of at least 2 labels, the classes to choose "
                         f"from")
    for member in getattr(run, "members", [run]):          # an ensemble: each of its runs
        _check_head(member, support, len(classes), "labels")
    queries = read_texts(query, text_column, delimiter if _separated(query) else None,
                         quoting=quoting if _separated(query) else "csv")
    members = getattr(run, "members", [run])
    tokenize = text_encoder(fam["encoder"], fam["max_length"]).tokenize   # as in training
    device = next(run.learner.model.parameters()).device
    sy = torch.tensor([classes.index(label) for label in labels], device=device)    # [S]
    params = run.learner.adapt(tokenize(texts).to(device), sy, steps)
    refines = any(getattr(m.learner, "refine", 0) for m in members)
    size = QUERY_CHUNK if refines else TEXT_CHUNK
    logits = []
    with torch.no_grad():
        for i in range(0, len(queries), size):
            chunk = queries[i:i + size]
            logits.append(run.learner.predict(params, tokenize(chunk).to(device)))  # [q, out]
            if progress is not None:
                progress(len(chunk))
    probs = torch.cat(logits)[:, :len(classes)].softmax(-1)                     # [Q, n]
    return TextPredictions(queries, classes, probs.float().cpu())


def _separated(path) -> bool:
    """Whether ``path`` names a CSV or TSV file (which a delimiter applies to)."""
    return FORMATS.get(Path(path).suffix.lower()) in ("csv", "tsv")


def score_lake_runs(run: Run, root, *, steps: int | None = None, invert: str | None = None,
                    support_shift: int = 0, query_shift: int = 0) -> dict:
    """The error rate on the official runs of the Omniglot one-shot challenge.

    Each run (:func:`metaloop.data.lake_runs.read_lake_runs`) is one task: the learner adapts
    to its training drawings (one per class) and classifies its test drawings together, as
    :func:`classify_folders` does, and a test drawing counts as an error unless its most
    probable class is the one ``class_labels.txt`` names.

    Args:
        run: a loaded image-classification run or ensemble, as for :func:`classify_folders`;
            its refinement and scoring settings apply as set (``refining``, ``scoring``).
        root: Lake's ``all_runs`` folder unpacked, or one run folder.
        steps: as :func:`classify_folders`.
        invert: as :func:`classify_folders`.
        support_shift: as :func:`classify_folders`.
        query_shift: as :func:`classify_folders`.

    Returns:
        ``{"runs": [{"name", "trials", "errors", "error_rate"}, ...], "error_rate", "ci95"
        (over runs), "trials", "root", "runs_sha256" (``runs_digest``), "official"}``, where
        ``official`` says whether the runs are Lake's 20, unaltered; rates are fractions
        (0.05 = 5%).

    Raises:
        ValueError: what :func:`classify_folders` and ``read_lake_runs`` refuse.
    """
    tf = _checked_transform(run, steps, support_shift, query_shift)
    size, invert = tf["image_size"], invert or tf["invert"]
    p = next(run.learner.model.parameters())           # where the model is, in its dtype
    device = p.device
    rows: list[dict[str, Any]] = []
    runs = read_lake_runs(root)
    for lake in runs:
        sx, qx = ([load_image(f, size, invert, tf["read_channels"]) for f in files]
                  for files in (lake.support, lake.query))
        sx, qx = (_as_trained(tf, torch.stack(x)).to(device, p.dtype) for x in (sx, qx))  # type: ignore[assignment]  # lists -> stacked
        for member in getattr(run, "members", [run]):
            _check_head(member, lake.support[0].parent, len(sx))
        probs = predict_folders(run.learner, sx, torch.arange(len(sx), device=device), qx,
                                steps, support_shift, query_shift)           # [Q, n]
        errors = int((probs.argmax(-1).cpu() != torch.tensor(lake.labels)).sum())
        rows.append({"name": lake.name, "trials": len(qx), "errors": errors,
                     "error_rate": errors / len(qx)})
    mean, ci = mean_ci([r["error_rate"] for r in rows])
    digest = runs_digest(runs)
    return {"runs": rows, "error_rate": mean, "ci95": ci, "root": str(root),
            "trials": sum(r["trials"] for r in rows), "runs_sha256": digest,
            "official": digest == OFFICIAL_RUNS_SHA256}


def takes_steps(run: Run) -> bool:
    """Whether the run's learner adapts by steps (SGD: maml, anil, reptile, scratch,
    pretrain...), so that a number of steps changes its prediction; False when it (every
    member of an ensemble) solves its head in closed form (``metaloop.config.HEAD_BASED``:
    protonet, r2d2, metaoptnet, whose Newton steps are fixed by ``method.inner_steps``)."""
    return any(m.config["method"]["name"] not in HEAD_BASED
               for m in getattr(run, "members", [run]))


# Control characters but tab and line breaks (quoted, as the csv module reads them back):
# the rest of C0, DEL and C1. ESC starts a terminal's escape sequences, so a file or class
# name holding one could rewrite what the terminal shows.
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def tsv_line(fields: list[str]) -> str:
    """One line of tab-separated values, ending in ``"\\n"``: a field holding a tab, a line
    break (``\\n`` or ``\\r``) or a double quote is written in double quotes with each quote
    doubled, as the csv module's ``excel-tab`` dialect reads it back
    (``csv.reader(f, dialect="excel-tab")``); a field holding any other control character
    (ESC, the rest of C0, DEL, C1) has each written as ``\\xNN`` and is quoted too, so that
    no name printed can drive the terminal (``results.json`` keeps the names as they are);
    any other field is written as it is."""
    out = []
    for f in fields:
        escaped = _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", f)
        if escaped != f or any(c in f for c in '\t\n\r"'):
            escaped = '"' + escaped.replace('"', '""') + '"'
        out.append(escaped)
    return "\t".join(out) + "\n"


def check_image_run(run: Run) -> dict:
    """The run's image transform (``Run.transform``).

    Raises:
        ValueError: the run (or ensemble) does not classify images (a text, tensor or
            regression run), naming its family and model.
    """
    tf = run.transform
    if tf is None or run.config["family"]["name"] == "sinusoid":
        vectors = run.config["family"]["name"] != "sinusoid"
        raise ValueError(f"{run.path}: classifying images needs an image-classification run "
                         f"(conv4 or resnet12); this one is family "
                         f"{run.config['family']['name']!r}, model "
                         f"{run.config['model']['name']!r}"
                         + ("; a run of feature vectors classifies the rows of .npz or .pt "
                            "files: --support FILE.npz --query FILE.npz" if vectors else ""))
    return tf


def check_text_run(run: Run) -> None:
    """Nothing, for a text-classification run (or ensemble): ``model.name = "text"``.

    Raises:
        ValueError: another run, naming its family and model.
    """
    if run.config["model"]["name"] != "text":
        raise ValueError(f"{run.path}: classifying texts needs a text run (model 'text', e.g. "
                         f"trained on a table family); this one is family "
                         f"{run.config['family']['name']!r}, model "
                         f"{run.config['model']['name']!r}")


def _checked_transform(run: Run, steps, support_shift, query_shift) -> dict:
    """The run's image transform, after checking that it reads images and the settings."""
    tf = check_image_run(run)
    if steps is not None and steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    _check_shifts(support_shift, query_shift)
    return tf


def _check_steps(run: Run, steps: int | None) -> None:
    """ValueError for negative ``steps``, or ``steps`` for a run (every member of an
    ensemble) that solves its head in closed form and so takes none."""
    if steps is None:
        return
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not takes_steps(run):
        methods = sorted({m.config["method"]["name"] for m in getattr(run, "members", [run])})
        raise ValueError(f"steps = {steps}: {run.path} ({', '.join(methods)}) solves its head "
                         f"in closed form and takes no adaptation steps; leave steps None")


def _check_shifts(support_shift, query_shift) -> None:
    """ValueError unless both test-time shifts are ints >= 0 (pixels)."""
    for name, shift in (("support_shift", support_shift), ("query_shift", query_shift)):
        if not isinstance(shift, int) or isinstance(shift, bool) or shift < 0:
            raise ValueError(f"{name} must be an int >= 0 pixels, got {shift!r}")


def _as_trained(tf: dict, x: torch.Tensor) -> torch.Tensor:
    """Decoded images ``[N, c, H, W]`` as training saw them: uint8-quantised where training
    was, and with the network's number of channels."""
    if tf["quantize"]:
        x = x.mul(255).round_().div_(255)
    return x.expand(-1, tf["channels"], -1, -1)


def _check_head(run: Run, support, n_classes: int, what: str = "class folders") -> None:
    """ValueError unless the run's learner can adapt to ``n_classes`` support classes
    (``what`` names how the support set gives them)."""
    head = getattr(run.network, "head", None)
    head_out = head.out_features if isinstance(head, torch.nn.Linear) else None
    learned = getattr(getattr(run.learner, "inner", None), "head_init", None) == "learned"
    if learned and head_out is not None and n_classes != head_out:
        raise ValueError(
            f"{support} has {n_classes} classes but the checkpoint's learned head has "
            f"{head_out} outputs ({run.config['method']['name']} trained "
            f"{run.config['family']['ways']}-way; {run.path}); give {head_out} {what}, "
            f"or pass --head-init zero to adapt from a zero head of {n_classes} outputs "
            f"(usually less accurate than the learned head)")
