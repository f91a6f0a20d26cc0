"""Reading and writing images, meshes and checkpoints."""

from meshrec.io.images import IMAGE_SUFFIXES, read_image
from meshrec.io.meshes import write_obj, write_ply

__all__ = ["IMAGE_SUFFIXES", "read_image", "write_obj", "write_ply"]
