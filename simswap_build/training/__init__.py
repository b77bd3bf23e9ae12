"""Training and fine-tuning SimSwap generators (needs torch: ``pip install 'simswap-trt[train]'``).

The paper's recipe by default (``TrainConfig.recipe("paper")``), the first released code's pix2pixHD
recipe as an option; the generator is written in the official on-disk format, so ``simswap-build
convert`` takes ``RUN/latest_net_G.pth`` as is.
"""

from simswap_build.training.config import RECIPES, TrainConfig
from simswap_build.training.data import FaceSet, PairSampler, prepare_faces
from simswap_build.training.run import RunSpec, run_training
from simswap_build.training.trainer import Trainer

__all__ = ["RECIPES", "FaceSet", "PairSampler", "RunSpec", "TrainConfig", "Trainer", "prepare_faces", "run_training"]
