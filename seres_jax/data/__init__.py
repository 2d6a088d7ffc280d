"""Input pipelines: datasets by name, timm's image preprocessing, grain loaders.

* ``arrays``: the datasets that fit in host memory as one array (digits, CIFAR-10, synthetic).
* ``images``: decoding and timm's eval and train transforms, on PIL images.
* ``folders``: the image-folder layout, checked before anything runs.
* ``records``: ArrayRecord shards (``seres data pack``) and their reader.
* ``pipeline``: grain pipelines from a dataset's splits to sharded device batches.
* ``catalog``: ``DATASETS``, every dataset by name with its loader and defaults.
"""

from .arrays import *  # noqa: F403
from .arrays import __all__ as _arrays_all
from .catalog import *  # noqa: F403
from .catalog import __all__ as _catalog_all
from .folders import *  # noqa: F403
from .folders import __all__ as _folders_all
from .images import *  # noqa: F403
from .images import __all__ as _images_all
from .pipeline import *  # noqa: F403
from .pipeline import __all__ as _pipeline_all
from .records import *  # noqa: F403
from .records import __all__ as _records_all

__all__ = [
    *_arrays_all, *_images_all, *_folders_all, *_records_all, *_pipeline_all, *_catalog_all
]  # fmt: skip
