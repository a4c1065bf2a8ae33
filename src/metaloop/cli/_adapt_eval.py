"""``metaloop adapt``'s evaluation and report: every strategy on the same held-out tasks,
the table, and the bar chart."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from metaloop.cli import _output


def evaluate_strategies(rows: dict, family, tasks: int, seed: int, progress: bool = False
                        ) -> dict:
    """Adapt every strategy on each held-out task's support set; score its query set.

    Every strategy sees the same tasks (``heldout_tasks(family, tasks, seed)``) and is given
    only the support set and the task's class ids (for label wordings); query labels are
    used for scoring, after adaptation. Predictors with a frozen body share one computation
    of the query features per task.

    Returns:
        name -> ``{"approach", "accuracy": {"mean", "ci95"}, "trainable", "adapt_seconds",
        "per_task": {"accuracy": [...], "adapt_seconds": [...]}, "info"}``.
    """
    from metaloop.evaluate import heldout_tasks, mean_ci
    from metaloop.func.params import forward

    per = {n: {"accuracy": [], "adapt_seconds": [], "trainable": 0, "info": None} for n in rows}
    bar = tqdm(total=tasks, desc="held-out tasks", disable=not progress, leave=False)
    done = 0
    for batch in heldout_tasks(family, tasks, seed):
        for i in range(batch.num_tasks):
            sx, sy, qx, qy = batch.task(i)
            feats: dict[int, torch.Tensor] = {}
            for name, (_, fn) in rows.items():
                torch.manual_seed(seed * 100_003 + done)
                t0 = time.perf_counter()
                adapted = fn(sx, sy, batch.classes[i])
                per[name]["adapt_seconds"].append(time.perf_counter() - t0)
                with torch.no_grad():
                    if adapted.info.get("frozen_body"):
                        key = id(adapted.model)
                        if key not in feats:
                            feats[key] = forward(adapted.model, adapted.params, qx, head=False)
                        w, b = (adapted.params[n] for n in ("head.weight", "head.bias"))
                        logits = F.linear(feats[key], w, b)                     # [Q, C]
                    else:
                        logits = adapted(qx)                                    # [Q, C]
                per[name]["accuracy"].append(float((logits.argmax(-1) == qy).float().mean()))
                per[name]["trainable"] = adapted.trainable
                per[name]["info"] = per[name]["info"] or _jsonable(adapted.info)
            done += 1
            bar.update(1)
    bar.close()
    results = {}
    for name, r in per.items():
        m, c = mean_ci(r["accuracy"])
        results[name] = {"approach": rows[name][0], "accuracy": {"mean": m, "ci95": c},
                         "trainable": r["trainable"],
                         "adapt_seconds": sum(r["adapt_seconds"]) / len(r["adapt_seconds"]),
                         "per_task": {"accuracy": r["accuracy"],
                                      "adapt_seconds": r["adapt_seconds"]},
                         "info": r["info"]}
    return results


def paired(results: dict, pairs) -> dict:
    """Paired accuracy differences ``a - b`` over the same held-out tasks.

    Two rows evaluated on the same tasks differ less from task to task than either varies,
    so the CI of the per-task difference is the test of "a beats b", tighter than comparing
    the two rows' own intervals.

    Returns:
        ``"a - b" -> {"mean", "ci95", "wins", "ties", "losses"}`` for each pair present.
    """
    from metaloop.evaluate import mean_ci

    out = {}
    for a, b in pairs:
        if a not in results or b not in results:
            continue
        xa, xb = (results[n]["per_task"]["accuracy"] for n in (a, b))
        d = [u - v for u, v in zip(xa, xb)]
        m, c = mean_ci(d)
        out[f"{a} - {b}"] = {"mean": m, "ci95": c, "wins": sum(x > 0 for x in d),
                             "ties": sum(x == 0 for x in d), "losses": sum(x < 0 for x in d)}
    return out


def paired_lines(diffs: dict) -> str:
    """One line per pair: difference in points ± 95% CI, and task wins / ties / losses."""
    return "\n".join(f"{k}: {100 * v['mean']:+.2f} ± {100 * v['ci95']:.2f} points "
                     f"(tasks won / tied / lost: {v['wins']} / {v['ties']} / {v['losses']})"
                     for k, v in diffs.items())


def _jsonable(info: dict) -> dict:
    return {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool))}


def table(results: dict) -> str:
    """approach | # | accuracy (%) mean ± 95% CI | trainable parameters | s / task."""
    head = ["approach", "#", "accuracy %", "trainable", "s/task"]
    rows = [head]
    for name, r in results.items():
        a = r["accuracy"]
        rows.append([name, str(r["approach"]), f"{100 * a['mean']:.2f} ± {100 * a['ci95']:.2f}",
                     f"{r['trainable']:,}", f"{r['adapt_seconds']:.3f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i in (0, 1) else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def bar_chart(results: dict, path: Path, title: str) -> None:
    """Horizontal bars of accuracy with 95% CI error bars, one per approach."""
    plt = _output.plt
    names = list(results)
    means = [100 * results[n]["accuracy"]["mean"] for n in names]
    cis = [100 * results[n]["accuracy"]["ci95"] for n in names]
    colors = [f"C{results[n]['approach']}" for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.5))
    ax.barh(range(len(names)), means, xerr=cis, color=colors, capsize=3)
    ax.set_yticks(range(len(names)), [f"{n} ({results[n]['approach']})" for n in names])
    ax.invert_yaxis()
    lo = min(m - c for m, c in zip(means, cis))
    ax.set_xlim(max(0.0, math.floor(lo / 10) * 10 - 10), 100)
    ax.set_xlabel("held-out query accuracy (%), 95% CI")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
