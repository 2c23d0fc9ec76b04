"""MultiCheXNet MONAI bundle components, named by the configs (``bundle.networks.MultiCheXNet`` ...)."""

from . import data, detection, engines, handlers, inference, losses, metrics, networks, outputs

__all__ = ["data", "detection", "engines", "handlers", "inference", "losses", "metrics", "networks", "outputs"]
