"""MultiCheXNet MONAI bundle components, named by the configs (``bundle.networks.MultiCheXNet`` ...)."""

from . import data, detection, engines, handlers, losses, metrics, networks

__all__ = ["data", "detection", "engines", "handlers", "losses", "metrics", "networks"]
