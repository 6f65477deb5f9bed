"""The three data sets as LightningDataModules, one naming throughout.

Every data module takes ``root`` (where the data set is: an explicit folder, else
``$CUSTOMOPS_MIRROR/<name>``, else a download) and ``cache_dir`` (what the project derives
from it: decompressed files, downloads, image features; default ``$CUSTOMOPS_CACHE``, else the
user's cache folder). Each one shards
its own batches across distributed ranks (see ``sharding.ShardedBatchSampler``), so trainers
run with ``use_distributed_sampler=False``.
"""

from .captioning import CaptionDataModule
from .hymenoptera import HymenopteraDataModule
from .mnist import MNISTDataModule
from .sharding import ShardedBatchSampler, ShardedDataModule

__all__ = [
    "CaptionDataModule",
    "HymenopteraDataModule",
    "MNISTDataModule",
    "ShardedBatchSampler",
    "ShardedDataModule",
]
