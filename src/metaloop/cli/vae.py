"""``metaloop vae``: AE / VAE / CVAE training, samples, reconstructions, NLL; latent sweeps.

Examples::

    metaloop vae --model vae --data omniglot --latent 50 --cpu-budget 45 --epochs 3000
    metaloop vae --model cvae --data fashion-mnist --latent 16 --epochs 20
    metaloop vae --sweep-latent 2,8,32,128 --data fashion-mnist --epochs 20
    metaloop --threads 1 vae --compare-inversion --data fashion-mnist --latent 32 --epochs 10
"""

from __future__ import annotations

import argparse
import json

from metaloop.cli._args import int_list
from metaloop.cli.main import UserError

DESCRIPTION = """\
Train an autoencoder (ae), a VAE (vae) or a conditional VAE (cvae) on binarised
Fashion-MNIST or Omniglot, and write results.json (test ELBO, reconstruction, KL, IWAE NLL
with k importance samples, settings), metrics.jsonl and PNGs (samples, reconstructions,
interpolations; AE: samples from a Gaussian fitted to its codes; CVAE: one row per class)
under --out. With --sweep-latent, train the AE and the VAE at each latent size and draw
sweep.png, scored by a classifier trained on the real data. With --compare-inversion, train
two classifiers (seeds s, s+1), invert the first into a generator, train an AE, a VAE and a
CVAE, and draw and score them all on one figure (inversion_compare.png), the Frechet distance
and accuracies measured by the second classifier."""


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
    p.add_argument("--compare-inversion", action="store_true",
                   help="classifier inversion vs AE vs VAE vs CVAE on one figure and table "
                        "(Omniglot: the omniglot-mixed split)")
    inv = p.add_argument_group("classifier inversion (--compare-inversion)")
    inv.add_argument("--invert-steps", type=int, default=400, help="Adam steps per image")
    inv.add_argument("--invert-lr", type=float, default=0.05,
                     help="Adam learning rate on the pixel logits")
    inv.add_argument("--invert-until", type=float, default=0.99, metavar="P",
                     help="stop an image once the classifier gives its class this probability")
    inv.add_argument("--invert-l2", type=float, default=0.3,
                     help="L2 weight of the regularised inversion")
    inv.add_argument("--invert-tv", type=float, default=1.0,
                     help="total-variation weight of the regularised inversion")
    inv.add_argument("--invert-jitter", type=int, default=2, metavar="PIXELS",
                     help="largest random shift of the regularised inversion")
    inv.add_argument("--record", metavar="PATH", default=None,
                     help="also write the comparison as a JSON record for the docs tables, "
                          "e.g. docs/results/generative_inversion_fashion.json")
    p.add_argument("--classifier-epochs", type=int, default=2)
    p.add_argument("--quality-samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    # The global option (metaloop --threads N vae ...) is the one that counts. This copy only
    # keeps old command lines (metaloop vae ... --threads N) working: SUPPRESS leaves the
    # global value alone when it is not given (a default here would overwrite it).
    p.add_argument("--threads", type=int, default=argparse.SUPPRESS,
                   help="same as metaloop --threads (torch CPU threads)")
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
    if "scores" in results:
        from metaloop.generative.inversion import table

        acc = results["classifier_test_accuracy"]
        return (f"{results['data']}: classifier test accuracy {acc['inverted']:.3f} "
                f"(A, inverted) / {acc['independent']:.3f} (B, independent); chance "
                f"{results['chance']:.3f}\n{table(results)}")
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

    if args.sweep_latent is not None and args.model == "cvae":
        raise UserError("--sweep-latent trains the AE and the VAE; drop --model cvae")
    if args.compare_inversion and args.sweep_latent is not None:
        raise UserError("--compare-inversion and --sweep-latent are separate runs; pick one")
    if args.compare_inversion and args.classes is not None:
        raise UserError("--classes only applies to the CVAE (--model cvae)")
    if args.record and not args.compare_inversion:
        raise UserError("--record goes with --compare-inversion")
    if args.record:
        from metaloop.evaluate import records

        records.check_record_path(args.record)
    s = _settings(args)
    if args.compare_inversion:
        from metaloop.generative import inversion

        inv = inversion.InversionSettings(steps=args.invert_steps, lr=args.invert_lr,
                                          until=args.invert_until, l2=args.invert_l2,
                                          tv=args.invert_tv, jitter=args.invert_jitter)
        results = inversion.compare(s, inv, args.out)
        if args.record:
            from metaloop.evaluate import records

            lists = {k: ",".join(map(str, v)) for k, v in vars(args).items()
                     if isinstance(v, list | tuple)}                   # as int_list reads them
            command = records.command_line(argparse.Namespace(**{**vars(args), **lists}))
            records.write_record(args.record, **inversion.record(results, command=command))
            print(f"wrote {args.record}")
    elif args.sweep_latent is not None:
        results = experiment.sweep(s, args.sweep_latent, args.out)
    else:
        results = experiment.run(s, args.out)
    print(_summary(results))
    print(f"wrote {args.out}/results.json")
    return 0
