"""What a network's inputs go through before it sees them, defined once: the normalisation
statistics of the data sets (ImageNet's for the pretrained trunks, MNIST's for the digit networks)."""

from __future__ import annotations

# ImageNet statistics: the pretrained trunks expect inputs normalised with them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Pixel statistics of the 60k MNIST training digits (after scaling to [0, 1]).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
