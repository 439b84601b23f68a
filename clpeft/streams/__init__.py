"""Streams: data sets cut into class-incremental experiences (Avalanche benchmarks)."""
from clpeft.streams.datasets import DATASETS, OFFLINE_DATASETS, InputSpec, TensorImageDataset
from clpeft.streams.stream import ContinualStream, StreamConfig, make_stream

__all__ = ["DATASETS", "OFFLINE_DATASETS", "InputSpec", "TensorImageDataset", "ContinualStream", "StreamConfig", "make_stream"]
