"""Joint names, kinematic trees and vertex ids of the SMPL family."""

from __future__ import annotations

SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
)  # fmt: skip

# The 21 joints smplx appends to SMPL's 24, picked from vertices of the posed mesh, in smplx's
# order (face, feet, left fingertips, right fingertips). Vertex ids are those of the SMPL
# topology, which SMPL-H shares.
SMPL_VERTEX_JOINTS = (
    ("nose", 332), ("right_eye", 6260), ("left_eye", 2800), ("right_ear", 4071), ("left_ear", 583),
    ("left_big_toe", 3216), ("left_small_toe", 3226), ("left_heel", 3387),
    ("right_big_toe", 6617), ("right_small_toe", 6624), ("right_heel", 6787),
    ("left_thumb", 2746), ("left_index", 2319), ("left_middle", 2445), ("left_ring", 2556),
    ("left_pinky", 2673),
    ("right_thumb", 6191), ("right_index", 5782), ("right_middle", 5905), ("right_ring", 6016),
    ("right_pinky", 6133),
)  # fmt: skip

_FINGER_JOINTS = tuple(f"{finger}{k}" for finger in ("index", "middle", "pinky", "ring", "thumb") for k in (1, 2, 3))
SMPLH_JOINT_NAMES = (
    SMPL_JOINT_NAMES[:22]
    + tuple(f"left_{name}" for name in _FINGER_JOINTS)
    + tuple(f"right_{name}" for name in _FINGER_JOINTS)
)

# The 45 joints meshrec.body.SMPL returns (smplx's order): 24 kinematic, then 21 vertex joints.
SMPL_OUTPUT_JOINT_NAMES = SMPL_JOINT_NAMES + tuple(name for name, _ in SMPL_VERTEX_JOINTS)

NUM_SMPL_VERTICES = 6890
NUM_SMPL_FACES = 13776
