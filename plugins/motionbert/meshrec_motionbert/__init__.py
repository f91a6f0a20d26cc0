"""meshrec-motionbert: MotionBERT's video mesh recovery from 2D keypoint sequences."""

__version__ = "0.1.0"
