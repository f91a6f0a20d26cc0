"""meshrec-sahmr: SA-HMR (Shen et al., CVPR 2023), scene-aware human mesh recovery, for meshrec.

Scene helpers (imported lazily, so that the plugin hook stays cheap):
``points_from_depth(depth, K)``, ``sample_mesh_points(path)``, ``points_in_frustum``.
"""

__version__ = "0.1.0"

_SCENE = ("points_from_depth", "sample_mesh_points", "points_in_frustum", "check_scene_scale")


def __getattr__(name):
    if name in _SCENE:
        from meshrec_sahmr import scene

        return getattr(scene, name)
    raise AttributeError(f"module 'meshrec_sahmr' has no attribute {name!r}")
