"""duration: predict NYC taxi ride durations, tracked end to end in MLflow."""

__version__ = "0.1.0"
