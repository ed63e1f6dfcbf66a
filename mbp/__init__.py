"""mbp: mini-batch prediction over local Parquet files."""

__version__ = "0.1.0"
