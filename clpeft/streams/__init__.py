"""Streams: data sets cut into class-incremental experiences (Avalanche benchmarks)."""
from clpeft.streams.datasets import DATASETS, DatasetSpec, InputSpec, TensorImageDataset, register_dataset
from clpeft.streams.stream import ContinualStream, StreamConfig, make_stream, stream_from_benchmark

__all__ = ["DATASETS", "DatasetSpec", "InputSpec", "TensorImageDataset", "ContinualStream", "StreamConfig", "make_stream",
           "register_dataset", "stream_from_benchmark"]
