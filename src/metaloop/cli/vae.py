"""``metaloop vae``: AE / VAE / CVAE training, samples, reconstructions, NLL; latent sweeps.

Examples::

    metaloop vae --model vae --data omniglot --latent 50 --cpu-budget 45 --epochs 3000
    metaloop vae --model cvae --data fashion-mnist --latent 16 --epochs 20
    metaloop vae --sweep-latent 2,8,32,128 --data fashion-mnist --epochs 20
"""

from __future__ import annotations

import argparse
import json

import torch

from metaloop.cli._args import int_list
from metaloop.cli.main import UserError

DESCRIPTION = """\
Train an autoencoder (ae), a VAE (vae) or a conditional VAE (cvae) on binarised
Fashion-MNIST or Omniglot, and write results.json (test ELBO, reconstruction, KL, IWAE NLL
with k importance samples, settings), metrics.jsonl and PNGs (samples, reconstructions,
interpolations; AE: samples from a Gaussian fitted to its codes; CVAE: one row per class)
under --out. With --sweep-latent, train the AE and the VAE at each latent size and draw
sweep.png, scored by a classifier trained on the real data."""


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``vae`` subcommand."""
    from metaloop.generative.data import BINARIZE, DATASETS
    from metaloop.generative.experiment import MODELS
    from metaloop.generative.likelihoods import KINDS
    from metaloop.generative.nets import ARCHS

    p = subparsers.add_parser("vae", help="AE / VAE / CVAE: samples, reconstructions, NLL",
                              description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODELS, default="vae")
    p.add_argument("--data", choices=DATASETS, default="fashion-mnist")
    p.add_argument("--root", default=None, help="data folder (default: the loader's search)")
    p.add_argument("--latent", type=int, default=50, help="size of z (default 50, IWAE)")
    p.add_argument("--sweep-latent", type=int_list, default=None, metavar="L1,L2,...",
                   help="train the AE and the VAE at each latent size; draw sweep.png")
    p.add_argument("--arch", choices=ARCHS, default="mlp",
                   help="mlp: IWAE 784-200-200-L tanh; conv: small conv net")
    p.add_argument("--hidden", type=int_list, default=[200, 200], metavar="H1,H2",
                   help="MLP hidden widths (default 200,200)")
    p.add_argument("--likelihood", choices=KINDS, default="bernoulli")
    p.add_argument("--binarize", choices=BINARIZE, default="dynamic",
                   help="training binarisation (test data: static unless 'none')")
    p.add_argument("--beta", type=float, default=1.0, help="KL weight in the training loss")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-end", type=float, default=1e-4,
                   help="final learning rate of the geometric decay")
    p.add_argument("--cpu-budget", type=float, default=None, metavar="MIN",
                   help="stop training after this many CPU minutes")
    p.add_argument("--k", type=int, default=None,
                   help="importance samples for the NLL (default 5000; sweep: 0 = skip)")
    p.add_argument("--eval-batch", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=0,
                   help="epochs between test-ELBO checks on 1,000 random test images "
                        "(0: never)")
    p.add_argument("--train-examples", type=int, default=None)
    p.add_argument("--test-examples", type=int, default=None)
    p.add_argument("--train-eval-examples", type=int, default=0, metavar="N",
                   help="also report ELBO and NLL on N training images (default 0: skip)")
    p.add_argument("--classes", type=int_list, default=None, metavar="C1,C2,...",
                   help="CVAE: classes to draw in classes.png (default: all)")
    p.add_argument("--classifier-epochs", type=int, default=2)
    p.add_argument("--quality-samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default="runs/vae")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    return p


def _settings(args: argparse.Namespace):
    from metaloop.generative.experiment import Settings

    k = args.k if args.k is not None else (0 if args.sweep_latent else 5000)
    return Settings(model=args.model, data=args.data, latent=args.latent, arch=args.arch,
                    hidden=tuple(args.hidden), likelihood=args.likelihood,
                    binarize=args.binarize, beta=args.beta, epochs=args.epochs,
                    batch_size=args.batch_size, lr=args.lr, lr_end=args.lr_end,
                    cpu_budget_min=args.cpu_budget, k=k, eval_batch=args.eval_batch,
                    eval_every=args.eval_every, train_examples=args.train_examples,
                    test_examples=args.test_examples,
                    train_eval_examples=args.train_eval_examples, classes=args.classes,
                    classifier_epochs=args.classifier_epochs,
                    quality_samples=args.quality_samples, seed=args.seed, root=args.root,
                    progress=not args.no_progress)


def _summary(results: dict) -> str:
    if "runs" in results:
        lines = [f"classifier test accuracy {results['classifier_test_accuracy']:.3f}; real "
                 f"images: recognisable {results['real']['recognisable']:.2f}"]
        for latent, kinds in results["runs"].items():
            for q in kinds.values():
                for col, v in q["quality"].items():
                    lines.append(f"latent {latent:>4} {col:<34} recognisable "
                                 f"{v['recognisable']:.2f}  FD {v['frechet']:.1f}")
        return "\n".join(lines)
    return json.dumps(results["test"])


def run(args: argparse.Namespace) -> int:
    """Run the subcommand; bad input raises ValueError/UserError (exit status 2)."""
    from metaloop.generative import experiment

    if args.threads is not None:
        if args.threads <= 0:
            raise UserError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.sweep_latent is not None and args.model == "cvae":
        raise UserError("--sweep-latent trains the AE and the VAE; drop --model cvae")
    s = _settings(args)
    if args.sweep_latent is not None:
        results = experiment.sweep(s, args.sweep_latent, args.out)
    else:
        results = experiment.run(s, args.out)
    print(_summary(results))
    print(f"wrote {args.out}/results.json")
    return 0
