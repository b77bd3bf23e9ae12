"""Image-space stages of the swap pipeline: detection, alignment, warping, paste-back."""
