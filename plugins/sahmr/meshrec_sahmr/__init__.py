"""meshrec-sahmr: SA-HMR (Shen et al., CVPR 2023), scene-aware human mesh recovery, for meshrec."""

__version__ = "0.1.0"
