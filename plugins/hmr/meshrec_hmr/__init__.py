"""meshrec-hmr: HMR (Kanazawa et al. 2018) as mmhuman3d implements and releases it."""

__version__ = "0.1.0"
