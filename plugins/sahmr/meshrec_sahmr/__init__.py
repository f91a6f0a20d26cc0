"""meshrec-sahmr: SA-HMR (Shen et al., CVPR 2023), scene-aware human mesh recovery, for meshrec.

Scene points come from :mod:`meshrec.scene` (``points_from_depth(depth, K)``,
``sample_mesh_points(path)``); SA-HMR's frustum crop is :mod:`meshrec_sahmr.scene`.
"""

__version__ = "0.1.0"
