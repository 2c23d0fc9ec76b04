"""Explanations of MultiCheXNet's findings: Grad-CAM maps and how much of a map falls inside a region."""

from .gradcam import grad_cam, grad_cam_pass, mass_inside

__all__ = ["grad_cam", "grad_cam_pass", "mass_inside"]
