"""Data sets in torchvision's on-disk formats and their class hierarchies."""

from maxl.data.datasets import DATASETS, DataBundle, ImageTensorDataset, load_dataset

__all__ = ["DATASETS", "DataBundle", "ImageTensorDataset", "load_dataset"]
