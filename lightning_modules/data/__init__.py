"""The three data sets as LightningDataModules, one naming throughout.

Every data module takes ``root`` (where the data set is: an explicit folder, else
``$CUSTOMOPS_MIRROR/<name>``, else a download) and ``cache_dir`` (what the project derives
from it: decompressed files, downloads, image features; default ``data/``). Each one shards
its own batches across distributed ranks (see ``common.ShardedBatchSampler``), so trainers
run with ``use_distributed_sampler=False``.
"""

from .common import IMAGENET_MEAN, IMAGENET_STD, ShardedBatchSampler, ShardedDataModule
from .flickr8k import CaptionDataModule
from .hymenoptera import HymenopteraDataModule
from .mnist import MNISTDataModule

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CaptionDataModule",
    "HymenopteraDataModule",
    "MNISTDataModule",
    "ShardedBatchSampler",
    "ShardedDataModule",
]
