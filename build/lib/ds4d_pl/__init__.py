"""ds4d_pl: video-to-4D Gaussians with dynamic-static feature decoupling (DS4D), in Lightning."""

__version__ = "0.1.0"
