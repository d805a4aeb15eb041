"""The fixtures of the product's tests (recordings, data sets) for the experiments' tests."""

from tests.conftest import data_dir, samples_dir

__all__ = ["data_dir", "samples_dir"]
