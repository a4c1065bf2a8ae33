"""Meta-learners (outer loops), one per file, the two baselines, and the ``Learner`` protocol
they all satisfy."""

from metaloop.meta._common import Learner
from metaloop.meta.anil import ANIL
from metaloop.meta.ensemble import Ensemble
from metaloop.meta.maml import MAML
from metaloop.meta.metaoptnet import MetaOptNet
from metaloop.meta.pretrain import Pretrain
from metaloop.meta.protonet import ProtoNet
from metaloop.meta.r2d2 import R2D2
from metaloop.meta.reptile import Reptile
from metaloop.meta.scratch import Scratch

__all__ = [
    "ANIL",
    "Ensemble",
    "MAML",
    "Learner",
    "MetaOptNet",
    "Pretrain",
    "ProtoNet",
    "R2D2",
    "Reptile",
    "Scratch",
]
