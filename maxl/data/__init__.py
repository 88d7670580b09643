"""Data sets in torchvision's on-disk formats and their class hierarchies."""

from maxl.data.datasets import DATASETS, DataBundle, ImageTensorDataset, load_dataset
from maxl.data.registry import DatasetSpec, register_dataset

__all__ = ["DATASETS", "DataBundle", "ImageTensorDataset", "load_dataset", "DatasetSpec", "register_dataset"]
