"""meshrec-fit: SMPLify-style optimisation of SMPL to 2D keypoints, with scene terms."""

__version__ = "0.1.0"
