"""``metaloop vae``: AE / VAE / CVAE training, samples, reconstructions, NLL; latent sweeps.

Examples::

    metaloop vae --model vae --data omniglot --latent 50 --cpu-budget 45 --epochs 3000
    metaloop vae --model cvae --data fashion-mnist --latent 16 --epochs 20
    metaloop vae --sweep-latent 2,8,32,128 --data fashion-mnist --epochs 20
    metaloop --threads 1 vae --compare-inversion --data fashion-mnist --latent 32 --epochs 20 \
        --classifier-epochs 10
    metaloop --threads 1 vae --protocol iwae --data omniglot-mixed --out runs/iwae --resume
    metaloop vae --model cvae --data path/to/images --latent 16 --epochs 50 --out runs/mine
    metaloop vae --model vae --data my_images.npz --image-size 32 --arch conv
    metaloop vae --model vae --data path/to/photos --channels 3 --likelihood cbernoulli
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from metaloop.cli._args import _items, float_list, int_list, path
from metaloop.recipes import generative as recipe

# The seeds torch takes, less the 4 that the runs add to --seed (inversion.compare seeds
# classifier B, the real images, the inversions and the samples with --seed + 1 .. + 4).
SEED_RANGE = (-2**63, 2**64 - 1 - 4)

DESCRIPTION = """\
Train an autoencoder (ae), a VAE (vae) or a conditional VAE (cvae) on Fashion-MNIST,
Omniglot or your own images (--data PATH: an image folder root/<class>/<image>, whose class
folders are the CVAE's classes, or a .npz/.pt file with x and y; converted to grey
--image-size squares, or kept in colour with --channels 3, --test-fraction of each class
held out as the test set with a fixed seed), binarised (on the pixel values as they are with
--likelihood gaussian or cbernoulli), and write
results.json (test ELBO, reconstruction, KL, IWAE NLL
with k importance samples, settings), metrics.jsonl and PNGs (samples, reconstructions,
interpolations; AE: samples from a Gaussian fitted to its codes; CVAE: one row per class)
under --out. With --sweep-latent, train the AE and the VAE at each latent size and draw
sweep.png, scored by a classifier trained on the real data. With --compare-inversion, train
two classifiers (seeds s, s+1), invert the first into a generator, train an AE, a VAE and a
CVAE, and draw and score them all on one figure (inversion_compare.png), the Frechet distance
and accuracies measured by the second classifier, every row (the real test images' too) on
the same number of images; scores that small data leave unreliable are labelled with
warnings (printed and in results.json). With --inversion-transfer, train only
the two classifiers and measure, for several step sizes, how often the second agrees with
images inverted from the first. With --protocol iwae, train the IWAE
paper's VAE the paper's way (batch 20, 3,280 passes in 8 stages of falling learning rate) as
a run that checkpoints in --out and can be stopped (--until-pass, --max-minutes; Ctrl-C,
which exits 130) and continued exactly (--resume; --resume-if-any: where --out holds a
checkpoint, else a new run, one fixed command for a job scheduler to rerun after a kill);
the call that reaches its last pass measures the test set with --k samples, and --evaluate
its latest checkpoint. A run without
checkpoints that is interrupted or fails removes the --out folder it created (a protocol
run keeps it once it holds a checkpoint); a folder that existed before is never removed. A
new run into an --out that holds a finished metaloop vae run (its results.json: a model,
a sweep or an inversion study) is refused (exit 2), naming the folder and the run's
settings, before anything is read or written: give another --out, or remove the folder to
run again (a --protocol iwae run's folder: --resume continues it).

An option that the chosen run does not read is refused by name when it is given another
value than its default (a default given explicitly changes nothing and is accepted): the
scoring classifiers' and inversions' options without the run that trains them, --latent and
--model with --sweep-latent, --model and --k with --compare-inversion, the generators'
options with --inversion-transfer, --beta and --k for the AE, --hidden with --arch conv, the
protocol options without --protocol iwae and the other runs' options with it, --k with
--protocol iwae when --until-pass stops it before its last pass, --image-size, --invert,
--test-fraction, --channels, --skip-corrupt and --class-depth with a built-in data set
(--skip-corrupt and --class-depth with a tensor file too), --root and --resample with your
own data."""

EPILOG = """examples:
  metaloop --threads 1 vae --model vae --data omniglot-mixed --latent 50 --epochs 100
  metaloop --threads 1 vae --model cvae --data path/to/images --latent 16 --epochs 50 \\
      --out runs/vae_mine                   # your own images: root/<class>/<image>
  metaloop --threads 1 vae --model vae --data path/to/photos --channels 3 \\
      --likelihood cbernoulli --arch conv --epochs 50 --out runs/vae_colour   # in colour
  metaloop --threads 1 vae --protocol iwae --data omniglot-mixed \\
      --out runs/generative_iwae_omniglot --max-minutes 60        # first slice
  metaloop --threads 1 vae --protocol iwae --data omniglot-mixed \\
      --out runs/generative_iwae_omniglot --resume --max-minutes 60   # the next ones
  metaloop --threads 1 vae --protocol iwae --data omniglot-mixed \\
      --out runs/generative_iwae_omniglot --evaluate --k 5000 \\
      --record docs/results/generative_iwae_omniglot.json

machine-readable output: OUT/results.json and OUT/metrics.jsonl (one JSON object per
epoch); --protocol iwae: its checkpoints' state.json; the --record JSON file"""


def class_list(text: str) -> list[str]:
    """``--classes``: ``"3,shirt"`` -> ``["3", "shirt"]``, indices or class names, resolved
    against the data's classes by the run (``experiment.resolve_classes``)."""
    return _items(text, "class indices or names")


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``vae`` subcommand."""
    from metaloop.data.images import INVERT_MODES
    from metaloop.generative.data import BINARIZE, CHANNELS, DATASETS, RESAMPLE
    from metaloop.generative.devices import DEVICES
    from metaloop.generative.experiment import MODELS
    from metaloop.generative.likelihoods import KINDS
    from metaloop.generative.nets import ARCHS
    from metaloop.generative.protocol import PROTOCOLS

    p = subparsers.add_parser("vae", help="AE / VAE / CVAE: samples, reconstructions, NLL",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODELS, default="vae",
                   help="the one model to train (default vae): ae an autoencoder, vae a "
                        "VAE, cvae a VAE conditioned on the class; --sweep-latent trains "
                        "the AE and the VAE, --compare-inversion all three")
    p.add_argument("--data", type=path, default="fashion-mnist", metavar="NAME|PATH",
                   help=f"a built-in data set ({', '.join(DATASETS)}; default "
                        f"fashion-mnist), or your own: an image folder root/<class>/<image> "
                        f"(root/<group>/<class>/<image> with --class-depth 2; "
                        f"any format Pillow reads; decoded once into a cache in "
                        f"root/.metaloop-cache) or a .npz/.pt file with x (uint8 or floats "
                        f"in [0, 1], [N, H, W] or [N, C, H, W]) and y (labels [N])")
    p.add_argument("--root", type=path, default=None,
                   help="the built-in data sets' folder (default: the loader's search)")
    p.add_argument("--resample", choices=RESAMPLE, default="bilinear",
                   help="Omniglot's antialiased 105 -> 28 downsampling kernel: bilinear "
                        "(default, as every Omniglot loader here) or bicubic (PIL's and "
                        "MATLAB's default; crisper strokes)")
    own = p.add_argument_group("your own images (--data PATH)")
    own.add_argument("--image-size", type=int, default=28, metavar="S",
                     help="side of the square images (default 28; padded to a square, "
                          "resized with antialiasing; --arch conv needs S divisible by 4)")
    own.add_argument("--invert", choices=INVERT_MODES, default="auto",
                     help="auto (default: a grey image lighter than half grey is inverted, "
                          "so dark ink on light paper becomes ink; colour images are kept), "
                          "always or never")
    own.add_argument("--channels", type=int, choices=CHANNELS, default=1,
                     help="1 (default): grey, as the built-in sets (colour averaged with "
                          "Pillow's L weights); 3: RGB colour, drawn in colour")
    own.add_argument("--test-fraction", type=float, default=0.1, metavar="F",
                     help="share of each class held out as the test set, at least one "
                          "image of each class of two or more (default 0.1; fixed seed)")
    own.add_argument("--skip-corrupt", action="store_true",
                     help="leave the folder's unreadable images (and links to nothing) out, "
                          "listed on stderr when the run is done, instead of refusing it; "
                          "recorded in the settings (a --protocol iwae run keeps it)")
    own.add_argument("--class-depth", type=int, choices=(1, 2), default=1,
                     help="an image folder's layout: 1 (default) root/<class>/<image>, 2 "
                          "root/<group>/<class>/<image> (classes named group/class, e.g. "
                          "Omniglot's alphabets/characters); recorded in the settings")
    p.add_argument("--latent", type=int, default=50, help="size of z (default 50, IWAE)")
    p.add_argument("--sweep-latent", type=int_list, default=None, metavar="L1,L2,...",
                   help="train the AE and the VAE at each latent size; draw sweep.png")
    p.add_argument("--arch", choices=ARCHS, default="mlp",
                   help="mlp: IWAE 784-200-200-L tanh; conv: small conv net")
    p.add_argument("--hidden", type=int_list, default=[200, 200], metavar="H1,H2",
                   help="MLP hidden widths (default 200,200)")
    p.add_argument("--likelihood", choices=KINDS, default="bernoulli",
                   help="the decoder's pixel distribution (default bernoulli): bernoulli on "
                        "binarised pixels, gaussian or cbernoulli (continuous Bernoulli) on "
                        "the grey values; --protocol iwae takes only bernoulli")
    p.add_argument("--binarize", choices=BINARIZE, default=None,
                   help="training binarisation (default: dynamic for the Bernoulli decoder, "
                        "none for gaussian and cbernoulli, which model grey values; test "
                        "data: static unless 'none')")
    p.add_argument("--beta", type=float, default=1.0, help="KL weight in the training loss")
    p.add_argument("--epochs", type=int, default=20,
                   help="passes over the training data (default 20; an upper limit with "
                        "--cpu-budget); not read by --protocol iwae, whose --stages set its "
                        "passes, nor by --inversion-transfer")
    p.add_argument("--batch-size", type=int, default=None,
                   help="examples per step (default 100; --protocol iwae: 20)")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="initial Adam learning rate, decayed geometrically to --lr-end over "
                        "the run (default 1e-3); --protocol iwae: the first stage's rate, "
                        "each stage's 10^(-1/7) times the one before")
    p.add_argument("--lr-end", type=float, default=1e-4,
                   help="final learning rate of the geometric decay")
    p.add_argument("--cpu-budget", type=float, default=None, metavar="MIN",
                   help="stop training after this many CPU minutes")
    p.add_argument("--k", type=int, default=None,
                   help="importance samples for the NLL (default 5000; sweep: 0 = skip; "
                        "--protocol iwae: of the measurement at its last pass or "
                        "--evaluate's)")
    p.add_argument("--eval-batch", type=int, default=100,
                   help="test images per pass of the ELBO and NLL estimates (default 100); "
                        "not read by --protocol iwae")
    p.add_argument("--eval-every", type=int, default=0,
                   help="epochs between test-ELBO checks on 1,000 random test images "
                        "(0: never)")
    p.add_argument("--train-examples", type=int, default=None, metavar="N",
                   help="use only N training images, a fixed random subset that --seed "
                        "chooses (default: all)")
    p.add_argument("--test-examples", type=int, default=None, metavar="N",
                   help="use only N test images, a fixed random subset that --seed "
                        "chooses (default: all); --protocol iwae: only with --evaluate")
    p.add_argument("--train-eval-examples", type=int, default=0, metavar="N",
                   help="also report ELBO and NLL on N training images (default 0: skip)")
    p.add_argument("--classes", type=class_list, default=None, metavar="C1,C2,...",
                   help="CVAE: classes to draw in classes.png (default: all), by index or "
                        "by name as classes.png labels them (your image folder's class "
                        "folder names)")
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
    inv.add_argument("--inversion-transfer", action="store_true",
                     help="only classifiers A and B: invert A from noise and from real images "
                          "until it is sure, at each --invert-lrs, and measure how often B "
                          "agrees")
    inv.add_argument("--invert-lrs", type=float_list, default=[0.05, 0.01, 0.0025],
                     metavar="LR1,LR2,...",
                     help="--inversion-transfer: Adam learning rates (default "
                          "0.05,0.01,0.0025)")
    inv.add_argument("--record", type=path, metavar="PATH", default=None,
                     help="also write the comparison (or the --sweep-latent or "
                          "--inversion-transfer study) as a JSON record for the docs tables, "
                          "e.g. docs/results/generative_inversion_fashion.json")
    pro = p.add_argument_group("the IWAE paper's training protocol (--protocol iwae)")
    pro.add_argument("--protocol", choices=PROTOCOLS, default=None,
                     help="iwae: Burda et al. 2016's VAE 784-200-200-50 trained their way, "
                          "checkpointed in --out, resumable")
    pro.add_argument("--resume", action="store_true",
                     help="continue the run in --out from its latest checkpoint")
    pro.add_argument("--resume-if-any", action="store_true",
                     help="continue the run in --out where it holds a checkpoint (as "
                          "--resume), else start it: one command for a job scheduler to "
                          "rerun after a kill; what --resume and a new run refuse is "
                          "refused alike")
    pro.add_argument("--until-pass", type=int, default=None, metavar="N",
                     help="stop (checkpointed) once N passes are done")
    pro.add_argument("--max-minutes", type=float, default=None, metavar="MIN",
                     help="stop (checkpointed) after the first pass that ends past MIN "
                          "wall-clock minutes")
    pro.add_argument("--stages", type=int, default=8,
                     help="stage i has 3^i passes (default 8: 3,280 passes)")
    pro.add_argument("--curve-k", type=int, default=500,
                     help="importance samples of the NLL-vs-passes curve (default 500)")
    pro.add_argument("--curve-examples", type=int, default=1000,
                     help="test images of the curve, a fixed random subset (default 1000)")
    pro.add_argument("--curve-every", type=int, default=200, metavar="PASSES",
                     help="curve points every PASSES passes besides stage ends (default "
                          "200; 0: stage ends only)")
    pro.add_argument("--checkpoint-every", type=int, default=50, metavar="PASSES",
                     help="checkpoint every PASSES passes besides stage ends (default 50)")
    pro.add_argument("--evaluate", action="store_true",
                     help="measure the latest checkpoint in --out: test NLL with --k samples "
                          "(default 5000) on --test-examples images (default all); with "
                          "--record, write the docs record")
    p.add_argument("--classifier-epochs", type=int, default=2,
                   help="epochs of the scoring classifier(s) (default 2, the sweep's); "
                        "--compare-inversion and --inversion-transfer need classifiers "
                        "trained to convergence for the lesson to hold: 10 on Fashion-MNIST, "
                        "25 on Omniglot (docs/generative.md)")
    p.add_argument("--quality-samples", type=int, default=2000, metavar="N",
                   help="images the scoring classifier judges (default 2000): "
                        "--sweep-latent and --compare-inversion score N samples of each "
                        "generator (class-conditional ones split evenly over the classes) "
                        "and as many real test images, fewer where the test set's first "
                        "half holds fewer; --inversion-transfer inverts N images per "
                        "learning rate; a run of one --model trains no classifier")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of everything random: weights, batches, binarisation, "
                        "subsets and samples (default 0); the classifier studies also use "
                        "--seed + 1 .. + 4")
    p.add_argument("--device", choices=DEVICES, default="cpu",
                   help="train and measure on the CPU (default) or the current CUDA "
                        "device: one model (--model), the latent sweep, both inversion "
                        "studies and the --protocol iwae run, their classifiers included; "
                        "the noise is drawn by CPU generators on either (the binarisation's "
                        "coins of a GPU's training by a CUDA one), the pictures on the CPU; "
                        "a GPU's --record names the GPU and counts GPU (wall-clock) seconds, "
                        "but --protocol iwae --evaluate's record the training sessions' CPU "
                        "seconds, as its checkpoints hold them")
    # The global option (metaloop --threads N vae ...) is the one that counts. This copy only
    # keeps old command lines (metaloop vae ... --threads N) working: SUPPRESS leaves the
    # global value alone when it is not given (a default here would overwrite it).
    p.add_argument("--threads", type=int, default=argparse.SUPPRESS,
                   help="same as metaloop --threads (torch CPU threads)")
    p.add_argument("--out", type=path, default="runs/vae",
                   help="output folder for results.json, metrics.jsonl and the PNGs "
                        "(default runs/vae); a new run into one holding a finished run is "
                        "refused")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.classes == []:             # "--classes ," : refused before training, not after
        raise ValueError("--classes needs at least one class index (C1,C2,...), got none")
    if not args.hidden:                # "--hidden ," or "--hidden ''": no layers at all
        raise ValueError("--hidden needs at least one width (H1,H2,...), got none")
    if min(args.hidden) <= 0:
        raise ValueError(f"--hidden must be positive widths, got "
                         f"{','.join(map(str, args.hidden))}")
    if not SEED_RANGE[0] <= args.seed <= SEED_RANGE[1]:
        raise ValueError(f"--seed {args.seed} is outside {SEED_RANGE[0]}..{SEED_RANGE[1]}, "
                         f"which torch cannot take (the run also seeds with --seed + 1 to "
                         f"--seed + 4)")
    # named by the flag, before any classifier or model is trained
    for flag, value, low in (("--invert-l2", args.invert_l2, ">= 0"),
                             ("--invert-tv", args.invert_tv, ">= 0"),
                             ("--max-minutes", args.max_minutes, "> 0")):
        if value is not None and not (math.isfinite(value)
                                      and (value > 0 if low == "> 0" else value >= 0)):
            raise ValueError(f"{flag} must be a finite number {low}, got {value}")
    for flag, values in (("--sweep-latent", args.sweep_latent),
                         ("--invert-lrs", args.invert_lrs),
                         ("--classes", args.classes)):
        twice = sorted({v for v in values or () if values.count(v) > 1})
        if twice:                      # one row per value: a repeat redoes it (or overwrites)
            raise ValueError(f"{flag} {','.join(map(str, values))} names "
                             f"{', '.join(map(str, twice))} more than once")
    if args.resume_if_any:
        args = _resume_if_any(args)
    return recipe.run(args, log=print)


def _resume_if_any(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with ``--resume-if-any`` decided: ``resume`` where ``--out`` holds a
    checkpoint (a damaged ``LATEST`` counts: the resume names it), else a new run; refused
    where ``--resume`` is (with ``--resume`` itself, without ``--protocol iwae``, with
    ``--evaluate``)."""
    if args.resume:
        raise ValueError("--resume-if-any starts the --protocol iwae run in --out, or resumes "
                         "it where --out holds its checkpoint: give it without --resume, "
                         "which resumes only")
    if args.protocol is None:          # the other runs have no checkpoints to resume
        given = ["--resume-if-any", *[f for f, v in (
            ("--until-pass", args.until_pass is not None),
            ("--max-minutes", args.max_minutes is not None),
            ("--evaluate", args.evaluate)) if v]]
        raise ValueError(f"{', '.join(given)} go{'' if len(given) > 1 else 'es'} with "
                         f"--protocol iwae")
    if args.evaluate:
        raise ValueError("--evaluate measures the checkpoint; it does not train: drop "
                         "--resume-if-any")
    from metaloop.train.checkpoint import holds_checkpoint

    return argparse.Namespace(**{**vars(args), "resume": holds_checkpoint(Path(args.out))})
