"""Explanations of MultiCheXNet's findings: Grad-CAM and input-gradient maps, and how much of a map falls inside a
region."""

from .gradcam import grad_cam, grad_cam_pass, mass_inside
from .input_gradient import input_gradient, input_gradient_pass

__all__ = ["grad_cam", "grad_cam_pass", "input_gradient", "input_gradient_pass", "mass_inside"]
