"""Numeric facts of the SimSwap model family shared by the runtime and the builder, and the version."""

VERSION = "0.1.0"  # the package's version (pyproject.toml), here so that every layer can name it

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ARCFACE_INPUT_SIZE = 112
LATENT_SIZE = 512
INSTANCE_NORM_EPS = 1e-8
PARSING_SIZE = 512  # the face parser's input and output size (BiSeNet, 512×512)
PARSING_CLASSES = 19  # the face parser's labels (BiSeNet on CelebAMask-HQ)
