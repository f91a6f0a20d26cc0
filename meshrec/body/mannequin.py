"""meshrec's mannequin: synthetic, licence-free stand-ins for the SMPL / SMPL-H body models.

Runtime data: the demo and ``meshrec predict`` use it when no SMPL files are found (see
:func:`mannequin_smpl`), and tests use it instead of the licensed files.  This module
generates *synthetic* body models that have exactly the keys, array shapes and
dtypes of SMPL v1.0 (and SMPL-H) after unpickling, and that are body-shaped: the
template mesh is a wooden-mannequin-like human in a T-pose, built from closed
tubes (torso, neck, head, upper arms, forearms, palms, five fingers per hand,
thighs, shins, feet) that overlap at the joints and are joined into one closed
genus-0 surface.

Everything is pure numpy/scipy and deterministic: the same ``seed`` always
gives bitwise identical arrays.  The template mesh, the skinning weights and the
joint regressors do not depend on the seed; the seed only drives the higher
shape directions, the pose corrective blend shapes and the SMPL-H hand PCA.

Conventions (SMPL's): metres, y up, the body faces +z, the body's left side is
+x.  The neutral body stands with its soles at y = -1.165 and the top of its
head at y = +0.535 (1.70 m tall); the pelvis joint is at (0, -0.23, 0.02).

Mesh: 6890 vertices, 13776 triangles (``F = 2 V - 4``), one closed, consistently
outward-oriented, genus-0 surface.  It is made of 25 closed "UV sphere" tubes
(rings x segments + 2 poles; vertices): torso 44x36 (1586), neck 12x16 (194),
head 28x34 (954, with nose, eye sockets, ears and chin), and per side upper arm
16x18 (290), forearm 16x16 (258), palm 18x20 (362), thumb/index/middle/ring/
pinky 6x8 (50 each), thigh 20x20 (402), shin 20x16 (322), foot 12x16 (194).
The tubes overlap at the joints; each child is joined to its parent by a
connected sum: one triangle lying inside the other part is removed from each and
the two holes are bridged by 6 triangles, so the bridge is hidden inside the
body.  Self-intersections between overlapping parts are expected (it is a
mannequin).  Vertex ids of the smplx extra keypoints (nose, eyes, ears, toes,
heels, fingertips) sit at the semantically right place, see
:data:`VERTEX_LANDMARKS`.

Public API
----------
``make_smpl_arrays(gender="neutral", num_betas=10, seed=0) -> dict``
``make_smplh_arrays(gender="neutral", num_betas=10, seed=0) -> dict``
``make_kid_template(seed=0) -> ndarray (6890, 3)``
``make_h36m_regressor(arrays) -> ndarray (17, 6890)``
``make_extra_regressor(arrays) -> ndarray (9, 6890)``
``mannequin_smpl(gender="neutral", ...) -> meshrec.body.SMPL`` (in memory, no file)
and the constants ``SMPL_PARENTS``, ``SMPLH_PARENTS``, ``H36M_JOINT_NAMES``,
``EXTRA_JOINT_NAMES``, ``VERTEX_LANDMARKS`` (joint names and landmark vertex ids are
those of :mod:`meshrec.body.constants`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse
from scipy.interpolate import PchipInterpolator
from scipy.optimize import nnls
from scipy.spatial import cKDTree

from meshrec.body.constants import (
    NUM_SMPL_FACES as NUM_FACES,
    NUM_SMPL_VERTICES as NUM_VERTICES,
    SMPL_JOINT_NAMES,
    SMPL_VERTEX_JOINTS,
    SMPLH_JOINT_NAMES,
)

__all__ = [
    "SMPL_PARENTS",
    "SMPLH_PARENTS",
    "H36M_JOINT_NAMES",
    "EXTRA_JOINT_NAMES",
    "mannequin_smpl",
    "VERTEX_LANDMARKS",
    "make_smpl_arrays",
    "make_smplh_arrays",
    "make_kid_template",
    "make_h36m_regressor",
    "make_extra_regressor",
]

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

_ROOT_PARENT = 4294967295  # 2**32 - 1, how SMPL's kintree_table stores "no parent"

SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16,
                17, 18, 19, 20, 21)
_FINGERS = ("index", "middle", "pinky", "ring", "thumb")  # SMPL-H / MANO order (constants.py's)


def _smplh_parents():
    parents = list(SMPL_PARENTS[:22])
    for wrist in (20, 21):
        for _ in _FINGERS:
            base = len(parents)
            parents += [wrist, base, base + 1]
    return tuple(parents)


SMPLH_PARENTS = _smplh_parents()

H36M_JOINT_NAMES = (
    "pelvis", "left_hip", "left_knee", "left_ankle", "right_hip", "right_knee",
    "right_ankle", "spine", "thorax", "head", "headtop", "left_shoulder",
    "left_elbow", "left_wrist", "right_shoulder", "right_elbow", "right_wrist",
)
EXTRA_JOINT_NAMES = (
    "right_hip_extra", "left_hip_extra", "neck_extra", "headtop",
    "pelvis_extra", "thorax_extra", "spine_extra", "jaw_extra", "head_extra",
)

#: Vertex ids that smplx (and 2D keypoint layouts built on it) read directly.
VERTEX_LANDMARKS = dict(SMPL_VERTEX_JOINTS)

_J = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}
_JH = {name: i for i, name in enumerate(SMPLH_JOINT_NAMES)}


def _mirror_perm(names):
    """Index map j -> joint mirrored left<->right (an involution)."""
    idx = {n: i for i, n in enumerate(names)}
    out = []
    for n in names:
        if n.startswith("left_"):
            out.append(idx["right_" + n[5:]])
        elif n.startswith("right_"):
            out.append(idx["left_" + n[6:]])
        else:
            out.append(idx[n])
    return np.asarray(out)


_MIRROR_SMPL = _mirror_perm(SMPL_JOINT_NAMES)
_MIRROR_SMPLH = _mirror_perm(SMPLH_JOINT_NAMES)
_FLIPX = np.array([-1.0, 1.0, 1.0])


def _smoothstep(x):
    """C2 'smootherstep' clamped to [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * x * (x * (x * 6.0 - 15.0) + 10.0)


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


# ---------------------------------------------------------------------------
# Body proportions
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """Proportion factors relative to the neutral adult (all 1.0)."""

    sy_torso: float = 1.0     # vertical scale pelvis..neck
    sy_leg: float = 1.0       # leg length
    s_arm: float = 1.0        # arm length
    s_head: float = 1.0       # head and neck size
    sx_shoulder: float = 1.0  # shoulder width
    sx_hip: float = 1.0       # hip width
    g_torso: float = 1.0      # torso girth / depth
    g_limb: float = 1.0       # limb girth
    waist: float = 1.0        # waist width factor
    bust: float = 1.0         # chest depth factor
    s_hand: float = 1.0       # hand size
    s_foot: float = 1.0       # foot size


_SPECS = {
    "neutral": _Spec(),
    "male": _Spec(sy_torso=1.04, sy_leg=1.045, s_arm=1.045, s_head=1.02,
                  sx_shoulder=1.08, sx_hip=0.98, g_torso=1.04, g_limb=1.06,
                  waist=1.03, bust=1.0, s_hand=1.06, s_foot=1.06),
    "female": _Spec(sy_torso=0.96, sy_leg=0.955, s_arm=0.95, s_head=0.97,
                    sx_shoulder=0.92, sx_hip=1.07, g_torso=0.97, g_limb=0.95,
                    waist=0.90, bust=1.08, s_hand=0.92, s_foot=0.93),
    "kid": _Spec(sy_torso=0.66, sy_leg=0.575, s_arm=0.60, s_head=0.84,
                 sx_shoulder=0.63, sx_hip=0.64, g_torso=0.66, g_limb=0.62,
                 waist=1.06, bust=0.95, s_hand=0.58, s_foot=0.62),
}


def _check_gender(gender):
    if gender not in ("neutral", "male", "female"):
        raise ValueError(f"gender must be 'neutral', 'male' or 'female', got {gender!r}")


# ---------------------------------------------------------------------------
# Tubes: closed "UV sphere" parts with a varying super-elliptic cross-section
# ---------------------------------------------------------------------------


@dataclass
class _Tube:
    """One closed body part: rings x segments + 2 poles, faces = 2 V - 4.

    The part runs from ``start`` (pole 0) to ``end`` (pole 1).  ``table`` rows
    are ``(t, r1, r2, c1, c2)``: at axial fraction ``t`` the cross-section is a
    super-ellipse with half-axes ``r1`` along ``e1`` and ``r2`` along ``e2``,
    centred at ``c1 e1 + c2 e2`` off the axis (metres).  ``e1`` is ``hint``
    made orthogonal to the axis ``d`` and ``e2 = d x e1``.  The ends are
    rounded over ``caps`` metres with super-elliptic exponents ``capexp``.
    """

    name: str
    rings: int
    segs: int
    start: np.ndarray
    end: np.ndarray
    hint: np.ndarray
    table: np.ndarray
    caps: tuple
    capexp: tuple = (2.0, 2.0)
    pexp: float = 2.0
    warp: float = 0.0
    arcw: float = 1.0   # weight of radius changes when spacing rings
    d: np.ndarray = field(init=False)
    e1: np.ndarray = field(init=False)
    e2: np.ndarray = field(init=False)
    L: float = field(init=False)

    def __post_init__(self):
        self.start = np.asarray(self.start, dtype=np.float64)
        self.end = np.asarray(self.end, dtype=np.float64)
        axis = self.end - self.start
        self.L = float(np.linalg.norm(axis))
        self.d = axis / self.L
        h = np.asarray(self.hint, dtype=np.float64)
        h = h - (h @ self.d) * self.d
        self.e1 = h / np.linalg.norm(h)
        self.e2 = np.cross(self.d, self.e1)
        tab = np.asarray(self.table, dtype=np.float64)
        self._interp = PchipInterpolator(tab[:, 0] * self.L, tab[:, 1:], axis=0)

    @property
    def nverts(self):
        return self.rings * self.segs + 2

    def capf(self, s):
        s = np.asarray(s, dtype=np.float64)
        out = np.ones_like(s)
        c0, c1 = self.caps
        q0, q1 = self.capexp
        u = np.clip(1.0 - s / c0, 0.0, 1.0)
        out = out * np.clip(1.0 - u ** q0, 0.0, 1.0) ** (1.0 / q0)
        u = np.clip(1.0 - (self.L - s) / c1, 0.0, 1.0)
        out = out * np.clip(1.0 - u ** q1, 0.0, 1.0) ** (1.0 / q1)
        return out

    def profile(self, s):
        """(n, 4) array r1, r2, c1, c2 at axial positions s (metres)."""
        return self._interp(np.clip(s, 0.0, self.L))

    def ring_s(self):
        """Axial positions of the rings, evenly spaced in profile arc length."""
        s = np.linspace(0.0, self.L, 1601)
        p = self.profile(s)
        r = np.maximum(p[:, 0], p[:, 1]) * self.capf(s) * self.arcw
        seg = np.hypot(np.diff(s), np.diff(r))
        cum = np.concatenate([[0.0], np.cumsum(seg)])
        targets = cum[-1] * np.arange(1, self.rings + 1) / (self.rings + 1)
        return np.interp(targets, cum, s)

    def angles(self):
        u = np.arange(self.segs) / self.segs
        return 2.0 * np.pi * u - self.warp * np.sin(2.0 * np.pi * u)

    def vertices(self):
        """(rings*segs+2, 3): pole 0, ring 0 ... ring R-1, pole 1."""
        s = self.ring_s()
        p = self.profile(s)
        cf = self.capf(s)
        th = self.angles()
        q = 2.0 / self.pexp
        cx = np.sign(np.cos(th)) * np.abs(np.cos(th)) ** q
        cy = np.sign(np.sin(th)) * np.abs(np.sin(th)) ** q
        a1 = p[:, 2:3] + (p[:, 0] * cf)[:, None] * cx[None, :]
        a2 = p[:, 3:4] + (p[:, 1] * cf)[:, None] * cy[None, :]
        ring = (self.start[None, None, :] + s[:, None, None] * self.d
                + a1[..., None] * self.e1 + a2[..., None] * self.e2)
        p0 = self.profile(np.array([0.0]))[0]
        p1 = self.profile(np.array([self.L]))[0]
        pole0 = self.start + p0[2] * self.e1 + p0[3] * self.e2
        pole1 = self.end + p1[2] * self.e1 + p1[3] * self.e2
        return np.vstack([pole0, ring.reshape(-1, 3), pole1])

    def faces(self):
        """(2*rings*segs, 3) outward oriented (counter-clockwise from outside)."""
        R, S = self.rings, self.segs
        k = np.arange(S)
        kn = (k + 1) % S
        out = [np.stack([np.zeros(S, int), 1 + kn, 1 + k], 1)]
        for i in range(R - 1):
            a = 1 + i * S + k
            b = 1 + i * S + kn
            c = 1 + (i + 1) * S + kn
            dd = 1 + (i + 1) * S + k
            out.append(np.stack([a, b, c], 1))
            out.append(np.stack([a, c, dd], 1))
        top = 1 + R * S
        out.append(np.stack([np.full(S, top), 1 + (R - 1) * S + k,
                             1 + (R - 1) * S + kn], 1))
        return np.concatenate(out).astype(np.int64)

    def ring_index(self):
        """Ring id per vertex: -1 for pole 0, 0..R-1, R for pole 1."""
        return np.concatenate([[-1], np.repeat(np.arange(self.rings), self.segs),
                               [self.rings]])

    def rho(self, x):
        """Super-elliptic 'radius' of points x (n, 3): < 1 inside, > 1 outside."""
        rel = np.asarray(x, dtype=np.float64) - self.start
        s = rel @ self.d
        sc = np.clip(s, 0.0, self.L)
        p = self.profile(sc)
        cf = self.capf(sc)
        u1 = rel @ self.e1 - p[:, 2]
        u2 = rel @ self.e2 - p[:, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.abs(u1 / (p[:, 0] * cf)) ** self.pexp
            b = np.abs(u2 / (p[:, 1] * cf)) ** self.pexp
            r = (a + b) ** (1.0 / self.pexp)
        r[(s <= 0.0) | (s >= self.L) | ~np.isfinite(r)] = np.inf
        return r


@dataclass
class _Part:
    """A tube placed in the body: centre (side 0), left (+1) or right (-1)."""

    name: str
    side: int
    tube: _Tube

    def vertices(self):
        v = self.tube.vertices()
        return v * _FLIPX if self.side < 0 else v

    def faces(self):
        f = self.tube.faces()
        return f[:, [0, 2, 1]] if self.side < 0 else f

    def rho(self, x):
        x = np.asarray(x, dtype=np.float64)
        return self.tube.rho(x * _FLIPX if self.side < 0 else x)

    def axis(self):
        """(origin, unit direction) of the part axis in world coordinates."""
        if self.side < 0:
            return self.tube.start * _FLIPX, self.tube.d * _FLIPX
        return self.tube.start.copy(), self.tube.d.copy()


# Vertex budget: (rings, segs) per tube; total must be exactly 6890.
_RES = {
    "torso": (44, 36), "neck": (12, 16), "head": (28, 34),
    "upperarm": (16, 18), "forearm": (16, 16), "palm": (18, 20),
    "thumb": (6, 8), "index": (6, 8), "middle": (6, 8), "ring": (6, 8),
    "pinky": (6, 8), "thigh": (20, 20), "shin": (20, 16), "foot": (12, 16),
}
_LIMB_PARTS = ("upperarm", "forearm", "palm", "thumb", "index", "middle",
               "ring", "pinky", "thigh", "shin", "foot")
_PART_NAMES = (("torso", "neck", "head")
               + tuple("l_" + n for n in _LIMB_PARTS)
               + tuple("r_" + n for n in _LIMB_PARTS))
_PIDX = {n: i for i, n in enumerate(_PART_NAMES)}
_JOINS = [("torso", "neck"), ("neck", "head")]
for _s in ("l_", "r_"):
    _JOINS += [("torso", _s + "upperarm"), (_s + "upperarm", _s + "forearm"),
               (_s + "forearm", _s + "palm")]
    _JOINS += [(_s + "palm", _s + f) for f in ("thumb", "index", "middle", "ring", "pinky")]
    _JOINS += [("torso", _s + "thigh"), (_s + "thigh", _s + "shin"),
               (_s + "shin", _s + "foot")]


# ---------------------------------------------------------------------------
# Skeleton and parts for a given set of proportions
# ---------------------------------------------------------------------------


@dataclass
class _Body:
    joints: np.ndarray        # (24, 3) SMPL rest joints (targets)
    fingers: np.ndarray       # (2, 5, 3, 3): side, finger (SMPL-H order), k, xyz
    tips: np.ndarray          # (2, 5, 3) fingertip points
    parts: list               # list of _Part in _PART_NAMES order
    head_centre: np.ndarray
    head_top: float
    floor: float
    head_scale: float


def _rotate_towards(d, lat, ang):
    return np.cos(ang) * d + np.sin(ang) * lat


@functools.lru_cache(maxsize=None)
def _body(specname):
    sp = _SPECS[specname]
    J = np.zeros((24, 3))
    P0 = np.array([0.0, -0.23, 0.02])
    sy, gz, sxs, sxh = sp.sy_torso, sp.g_torso, sp.sx_shoulder, sp.sx_hip
    sa, sh, syl, sf, hs = sp.s_arm, sp.s_head, sp.sy_leg, sp.s_foot, sp.s_hand
    J[0] = P0
    J[1] = P0 + [0.065 * sxh, -0.09 * sy, -0.01 * gz]
    J[3] = P0 + [0.0, 0.11 * sy, -0.02 * gz]
    J[6] = P0 + [0.0, 0.25 * sy, 0.0]
    J[9] = P0 + [0.0, 0.305 * sy, 0.01 * gz]
    J[12] = P0 + [0.0, 0.515 * sy, -0.02 * gz]
    J[13] = P0 + [0.075 * sxs, 0.425 * sy, -0.01 * gz]
    J[16] = P0 + [0.17 * sxs, 0.452 * sy, -0.02 * gz]
    J[15] = J[12] + np.array([0.0, 0.065, 0.04]) * sh
    J[18] = J[16] + np.array([0.26, -0.01, -0.02]) * sa
    J[20] = J[18] + np.array([0.258, 0.008, 0.01]) * sa
    J[22] = J[20] + np.array([0.085, -0.006, -0.005]) * hs
    J[4] = J[1] + np.array([0.035 * sxh, -0.39 * syl, 0.005 * syl])
    J[7] = J[4] + np.array([-0.01 * sxh, -0.39 * syl, -0.035 * syl])
    J[10] = J[7] + np.array([0.025 * sxh, -0.04 * syl, 0.125 * sf])
    floor = J[7, 1] - 0.065 * syl
    for j in range(24):
        m = _MIRROR_SMPL[j]
        if SMPL_JOINT_NAMES[j].startswith("left_"):
            J[m] = J[j] * _FLIPX

    up = np.array([0.0, 1.0, 0.0])
    zz = np.array([0.0, 0.0, 1.0])
    xx = np.array([1.0, 0.0, 0.0])
    parts = {}
    gl = sp.g_limb

    # --- torso (vertical, e1 = +z depth, e2 = +x width) -------------------
    tt = np.array([
        # y rel. pelvis, half-depth, half-width, z-offset
        [-0.20, 0.080, 0.120, 0.000],
        [-0.15, 0.100, 0.150, 0.000],
        [-0.09, 0.108, 0.168, -0.005],
        [-0.02, 0.106, 0.166, 0.000],
        [0.08, 0.100, 0.150, 0.010],
        [0.18, 0.097, 0.138, 0.018],
        [0.28, 0.105, 0.146, 0.022],
        [0.36, 0.113, 0.160, 0.022],
        [0.43, 0.105, 0.172, 0.012],
        [0.48, 0.090, 0.172, 0.000],
        [0.53, 0.080, 0.160, -0.005],
    ])
    t = (tt[:, 0] + 0.20) / 0.73
    wscale = sxh + (sxs - sxh) * _smoothstep((t - 0.3) / 0.5)
    waist = 1.0 + (sp.waist - 1.0) * np.exp(-((t - 0.52) / 0.12) ** 2)
    bust = 1.0 + (sp.bust - 1.0) * np.exp(-((t - 0.77) / 0.08) ** 2)
    table = np.stack([t, tt[:, 1] * gz * bust, tt[:, 2] * wscale * waist,
                      tt[:, 3] * gz * bust, np.zeros_like(t)], 1)
    parts["torso"] = _Tube("torso", *_RES["torso"],
                           start=P0 + [0.0, -0.20 * sy, -0.02],
                           end=P0 + [0.0, 0.53 * sy, -0.02], hint=zz,
                           table=table, caps=(0.11 * sy, 0.09 * sy),
                           capexp=(2.0, 2.3), pexp=2.4)

    # --- neck ---------------------------------------------------------------
    n0 = J[12] + np.array([0.0, -0.085, 0.0]) * sh
    n1 = J[12] + np.array([0.0, 0.115, 0.015]) * sh
    parts["neck"] = _Tube("neck", *_RES["neck"], start=n0, end=n1, hint=zz,
                          table=np.array([[0.0, 0.058, 0.060, 0.0, 0.0],
                                          [0.4, 0.052, 0.054, 0.0, 0.0],
                                          [1.0, 0.050, 0.051, 0.0, 0.0]])
                          * [1, sh * gz, sh * gz, 1, 1],
                          caps=(0.03 * sh, 0.03 * sh))

    # --- head ---------------------------------------------------------------
    hc = J[12] + np.array([0.0, 0.14, 0.035]) * sh
    h0 = hc + np.array([0.0, -0.125, 0.0]) * sh
    h1 = hc + np.array([0.0, 0.112, 0.0]) * sh
    ht = np.array([
        [0.00, 0.050, 0.045, 0.030],
        [0.12, 0.062, 0.055, 0.028],
        [0.28, 0.082, 0.068, 0.018],
        [0.45, 0.097, 0.076, 0.008],
        [0.62, 0.101, 0.079, 0.000],
        [0.80, 0.094, 0.074, -0.004],
        [1.00, 0.080, 0.062, -0.006],
    ])
    parts["head"] = _Tube("head", *_RES["head"], start=h0, end=h1, hint=zz,
                          table=np.column_stack([ht[:, 0], ht[:, 1:] * sh,
                                                 np.zeros(len(ht))]),
                          caps=(0.045 * sh, 0.085 * sh), warp=0.45)

    # --- left arm (e1 = up, e2 = +z) ---------------------------------------
    du = _unit(J[18] - J[16])
    parts["l_upperarm"] = _Tube(
        "upperarm", *_RES["upperarm"], start=J[16] - 0.075 * sa * du,
        end=J[18] + 0.035 * sa * du, hint=up,
        table=np.array([[0.0, 0.048, 0.050, 0, 0], [0.2, 0.052, 0.054, 0, 0],
                        [0.45, 0.047, 0.046, 0, 0], [0.75, 0.041, 0.040, 0, 0],
                        [0.9, 0.038, 0.038, 0, 0], [1.0, 0.036, 0.037, 0, 0]])
        * [1, gl, gl, 1, 1], caps=(0.05 * sa, 0.035 * sa))
    dfo = _unit(J[20] - J[18])
    parts["l_forearm"] = _Tube(
        "forearm", *_RES["forearm"], start=J[18] - 0.035 * sa * dfo,
        end=J[20] + 0.018 * sa * dfo, hint=up,
        table=np.array([[0.0, 0.036, 0.038, 0, 0], [0.12, 0.038, 0.041, 0, 0],
                        [0.30, 0.040, 0.044, 0, 0], [0.60, 0.031, 0.036, 0, 0],
                        [0.88, 0.023, 0.030, 0, 0], [1.0, 0.021, 0.028, 0, 0]])
        * [1, gl, gl, 1, 1], caps=(0.035 * sa, 0.02 * sa))

    # hand frame
    dh = _unit(J[22] - J[20])
    hup = _unit(up - (up @ dh) * dh)
    lat = np.cross(dh, hup)  # +z for the left hand

    def hand_pt(a, b, c):
        return J[20] + hs * (a * dh + b * hup + c * lat)

    kx = 0.080
    parts["l_palm"] = _Tube(
        "palm", *_RES["palm"], start=hand_pt(-0.022, 0.0, 0.0),
        end=hand_pt(kx + 0.012, 0.0, 0.0), hint=hup,
        table=np.array([[0.0, 0.017, 0.026, 0, 0.0], [0.2, 0.018, 0.033, 0, 0.002],
                        [0.5, 0.016, 0.042, 0, 0.0], [0.75, 0.0135, 0.045, 0, -0.001],
                        [0.9, 0.0095, 0.045, 0, -0.001],
                        [1.0, 0.0072, 0.044, 0, -0.001]]) * [1, hs, hs, hs, hs],
        caps=(0.022 * hs, 0.011 * hs), capexp=(2.0, 2.6), pexp=3.0)

    # fingers in SMPL-H order: index, middle, pinky, ring, thumb
    fdefs = {
        # lateral offset, knuckle along dh, length, radius, spread angle (deg)
        "index": (0.027, kx, 0.078, 0.0092, 4.0),
        "middle": (0.008, kx + 0.003, 0.086, 0.0094, 0.0),
        "ring": (-0.011, kx - 0.001, 0.080, 0.0088, -3.0),
        "pinky": (-0.029, kx - 0.010, 0.064, 0.0082, -7.0),
    }
    fingers = np.zeros((2, 5, 3, 3))
    tips = np.zeros((2, 5, 3))
    for fi, fname in enumerate(_FINGERS):
        if fname == "thumb":
            base = hand_pt(0.016, -0.006, 0.018)
            fd = _unit(0.70 * dh - 0.20 * hup + 0.69 * lat)
            length, rad = 0.088 * hs, 0.0105 * hs
            knuck = base
            start = base - 0.01 * hs * fd
            jpos = [base + 0.015 * hs * fd, base + 0.048 * hs * fd,
                    base + 0.070 * hs * fd]
        else:
            latoff, kpos, flen, rad, ang = fdefs[fname]
            knuck = hand_pt(kpos, 0.0, latoff)
            fd = _rotate_towards(dh, lat, np.radians(ang))
            length, rad = flen * hs, rad * hs
            start = knuck - 0.02 * hs * fd
            jpos = [knuck, knuck + 0.45 * length * fd, knuck + 0.73 * length * fd]
        end = knuck + length * fd
        tb = np.array([[0.0, 1.0, 1.0], [0.3, 0.98, 1.0], [0.65, 0.85, 0.92],
                       [1.0, 0.78, 0.85]])
        parts["l_" + fname] = _Tube(
            fname, *_RES[fname], start=start, end=end, hint=hup,
            table=np.column_stack([tb[:, 0], tb[:, 1] * rad, tb[:, 2] * rad,
                                   np.zeros(4), np.zeros(4)]),
            caps=(0.012 * hs, 0.9 * rad), capexp=(2.0, 2.2), arcw=3.0)
        fingers[0, fi] = np.array(jpos)
        tips[0, fi] = end
    fingers[1] = fingers[0] * _FLIPX
    tips[1] = tips[0] * _FLIPX

    # --- left leg (e1 = +x, e2 = +z) ---------------------------------------
    dt = _unit(J[4] - J[1])
    parts["l_thigh"] = _Tube(
        "thigh", *_RES["thigh"], start=J[1] - 0.11 * syl * dt,
        end=J[4] + 0.045 * syl * dt, hint=xx,
        table=np.array([[0.0, 0.080, 0.090, 0, -0.012], [0.2, 0.088, 0.096, 0, -0.010],
                        [0.45, 0.078, 0.080, 0, 0.002], [0.7, 0.064, 0.062, 0, 0.003],
                        [0.88, 0.053, 0.052, 0, 0.0], [1.0, 0.050, 0.050, 0, 0.0]])
        * [1, gl, gl, 1, gl], caps=(0.07 * syl, 0.045 * syl))
    ds = _unit(J[7] - J[4])
    parts["l_shin"] = _Tube(
        "shin", *_RES["shin"], start=J[4] - 0.06 * syl * ds,
        end=J[7] + 0.035 * syl * ds, hint=xx,
        table=np.array([[0.0, 0.049, 0.049, 0, 0.0], [0.13, 0.050, 0.050, 0, 0.0],
                        [0.28, 0.050, 0.057, 0, -0.012], [0.45, 0.044, 0.049, 0, -0.010],
                        [0.65, 0.036, 0.038, 0, -0.004], [0.88, 0.030, 0.032, 0, 0.0],
                        [1.0, 0.029, 0.031, 0, 0.0]])
        * [1, gl, gl, 1, gl], caps=(0.05 * syl, 0.032 * syl))
    fh = 0.04 * sf
    heel = np.array([J[7, 0] + 0.004 * sxh, floor + fh, J[7, 2] - 0.058 * sf])
    toe = np.array([J[7, 0] + 0.03 * sf, floor + fh, J[10, 2] + 0.08 * sf])
    ft = np.array([[0.0, 0.036, 0.030], [0.15, 0.040, 0.034], [0.35, 0.042, 0.040],
                   [0.6, 0.030, 0.047], [0.8, 0.021, 0.049], [1.0, 0.016, 0.044]])
    r1 = ft[:, 1] * sf
    parts["l_foot"] = _Tube(
        "foot", *_RES["foot"], start=heel, end=toe, hint=up,
        table=np.column_stack([ft[:, 0], r1, ft[:, 2] * sf, r1 - fh,
                               np.zeros(len(ft))]),
        caps=(0.035 * sf, 0.03 * sf), capexp=(2.0, 2.2), pexp=2.5)

    plist = []
    for name in _PART_NAMES:
        if name.startswith("r_"):
            plist.append(_Part(name, -1, parts["l_" + name[2:]]))
        elif name.startswith("l_"):
            plist.append(_Part(name, 1, parts[name]))
        else:
            plist.append(_Part(name, 0, parts[name]))
    return _Body(joints=J, fingers=fingers, tips=tips, parts=plist,
                 head_centre=hc, head_top=float(h1[1]), floor=float(floor),
                 head_scale=sh)


def _face_features(v, body):
    """Nose, eye sockets and ears on the head vertices v (n, 3), in place."""
    hc, sh = body.head_centre, body.head_scale
    rel = (v - hc) / sh
    front = _smoothstep(rel[:, 2] / 0.08)
    g = lambda a, s: np.exp(-0.5 * (a / s) ** 2)  # noqa: E731
    nose = 0.021 * g(rel[:, 0], 0.013) * g(rel[:, 1] + 0.018, 0.020) * front
    eyes = -0.007 * (g(rel[:, 0] - 0.033, 0.011) + g(rel[:, 0] + 0.033, 0.011)) \
        * g(rel[:, 1] - 0.012, 0.010) * front
    chin = 0.006 * g(rel[:, 0], 0.02) * g(rel[:, 1] + 0.085, 0.015) * front
    v[:, 2] += sh * (nose + eyes + chin)
    side = _smoothstep((np.abs(rel[:, 0]) - 0.05) / 0.025)
    ear = 0.011 * g(rel[:, 1] + 0.005, 0.022) * g(rel[:, 2] + 0.012, 0.012) * side
    v[:, 0] += sh * ear * np.sign(rel[:, 0])
    v[:, 1] -= sh * 0.003 * g(rel[:, 1] + 0.018, 0.02) * g(rel[:, 0], 0.012) * front
    return v


def _raw_vertices(body):
    """Vertices in construction order (part by part), and part offsets."""
    verts, offsets = [], [0]
    for part in body.parts:
        v = part.vertices()
        if part.name == "head":
            v = _face_features(v, body)
        verts.append(v)
        offsets.append(offsets[-1] + len(v))
    return np.vstack(verts), np.asarray(offsets)


# ---------------------------------------------------------------------------
# Topology (computed once from the neutral body, shared by every variant)
# ---------------------------------------------------------------------------


@dataclass
class _Topology:
    faces: np.ndarray        # (13776, 3) int64, final vertex ids
    is_join: np.ndarray      # (13776,) bool, faces of the hidden joining tubes
    new_to_old: np.ndarray   # (6890,) construction index of each final vertex
    part: np.ndarray         # (6890,) part index (into _PART_NAMES)
    ring: np.ndarray         # (6890,) ring index in its part (-1 / R for poles)
    join_vertices: np.ndarray  # (k, 2) final ids: (vertex, part it must lie in)


def _mirror_face(verts, faces, fi, banned):
    """Face of a centre part nearest to the x-mirror of face ``fi``."""
    cen = verts[faces].mean(1)
    target = cen[fi] * _FLIPX
    dist = np.linalg.norm(cen - target, axis=1)
    dist[np.isin(faces, list(banned)).any(1)] = np.inf
    return int(np.argmin(dist))


def _pick_join(parent, pf, pv, child, cf, cv, banned_p, banned_c):
    """Faces (parent, child) deepest inside each other, avoiding banned verts."""
    rp = child.rho(pv)   # parent vertices measured in the child
    rc = parent.rho(cv)  # child vertices measured in the parent
    sp_ = rp[pf].max(1)
    sc = rc[cf].max(1)
    sp_[np.isin(pf, list(banned_p)).any(1)] = np.inf
    sc[np.isin(cf, list(banned_c)).any(1)] = np.inf
    fp = int(np.argmin(sp_))
    fc = int(np.argmin(sc))
    if not (sp_[fp] < 0.85 and sc[fc] < 0.85):
        raise RuntimeError(f"cannot join {parent.name} and {child.name}: "
                           f"{sp_[fp]:.2f} {sc[fc]:.2f}")
    return fp, fc


def _tube_faces(q, p, pos):
    """6 triangles joining hole (q0,q1,q2) of one part to hole (p...) of another.

    ``q`` is the removed (outward oriented) parent triangle and ``p`` the
    removed child triangle; the rotation of ``p`` minimises the tube length.
    """
    p = [p[0], p[2], p[1]]  # the tube runs against the child's own orientation
    best = None
    for r in range(3):
        pr = [p[(i + r) % 3] for i in range(3)]
        cost = sum(np.linalg.norm(pos[q[i]] - pos[pr[i]]) for i in range(3))
        if best is None or cost < best[0] - 1e-12:
            best = (cost, pr)
    pr = best[1]
    out = []
    for i in range(3):
        j = (i + 1) % 3
        out.append((q[i], q[j], pr[j]))
        out.append((q[i], pr[j], pr[i]))
    return out


@functools.lru_cache(maxsize=None)
def _topology():
    body = _body("neutral")
    pos, offsets = _raw_vertices(body)
    nv = int(offsets[-1])
    if nv != NUM_VERTICES:
        raise AssertionError(f"vertex budget is {nv}, not {NUM_VERTICES}")
    parts = body.parts
    pfaces = [p.faces() for p in parts]
    removed = [set() for _ in parts]
    used_v = [set() for _ in parts]
    tubes = []
    join_vertices = []
    chosen = {}
    for pname, cname in _JOINS:
        ip, ic = _PIDX[pname], _PIDX[cname]
        P, C = parts[ip], parts[ic]
        if cname.startswith("r_"):
            # right side: mirror the choice made for the left side
            lp = "l_" + pname[2:] if pname.startswith("r_") else pname
            fp_l, fc = chosen[(lp, "l_" + cname[2:])]
            if P.side == 0:
                fp = _mirror_face(pos[offsets[ip]:offsets[ip + 1]], pfaces[ip],
                                  fp_l, used_v[ip])
            else:
                fp = fp_l
        else:
            pv = pos[offsets[ip]:offsets[ip + 1]]
            cv = pos[offsets[ic]:offsets[ic + 1]]
            fp, fc = _pick_join(P, pfaces[ip], pv, C, pfaces[ic], cv,
                                used_v[ip], used_v[ic])
        chosen[(pname, cname)] = (fp, fc)
        removed[ip].add(fp)
        removed[ic].add(fc)
        used_v[ip].update(pfaces[ip][fp].tolist())
        used_v[ic].update(pfaces[ic][fc].tolist())
        q = pfaces[ip][fp] + offsets[ip]
        p = pfaces[ic][fc] + offsets[ic]
        tubes += _tube_faces(list(q), list(p), pos)
        join_vertices += [(v, ic) for v in q] + [(v, ip) for v in p]
    faces = []
    for i, f in enumerate(pfaces):
        keep = np.ones(len(f), bool)
        keep[list(removed[i])] = False
        faces.append(f[keep] + offsets[i])
    nsurf = sum(len(f) for f in faces)
    faces = np.vstack(faces + [np.asarray(tubes, dtype=np.int64)])
    is_join = np.zeros(len(faces), bool)
    is_join[nsurf:] = True
    if len(faces) != NUM_FACES:
        raise AssertionError(f"{len(faces)} faces, expected {NUM_FACES}")

    part_of = np.concatenate([np.full(p.tube.nverts, i) for i, p in enumerate(parts)])
    ring_of = np.concatenate([p.tube.ring_index() for p in parts])

    # landmarks (left side picked geometrically, right side mirrored)
    def pverts(name):
        i = _PIDX[name]
        return pos[offsets[i]:offsets[i + 1]], offsets[i]

    land_old = {}
    hv, ho = pverts("head")
    hc = body.head_centre
    centre_col = np.abs(hv[:, 0]) < 1e-9
    land_old["nose"] = ho + int(np.argmax(np.where(centre_col, hv[:, 2], -np.inf)))
    yeye = hc[1] + 0.012
    front = hv[:, 2] > hc[2]
    for side, sx in (("left", 1.0), ("right", -1.0)):
        score = (hv[:, 0] - sx * 0.033) ** 2 + (hv[:, 1] - yeye) ** 2
        land_old[side + "_eye"] = ho + int(np.argmin(np.where(front, score, np.inf)))
        sidev = sx * hv[:, 0] > 0.6 * np.abs(hv[:, 0]).max()
        score = (hv[:, 1] - (hc[1] - 0.005)) ** 2 + (hv[:, 2] - (hc[2] - 0.012)) ** 2
        land_old[side + "_ear"] = ho + int(np.argmin(np.where(sidev, score, np.inf)))
    fv, fo = pverts("l_foot")
    ft = parts[_PIDX["l_foot"]].tube
    toe_z = fv[:, 2].max()
    heel_z = fv[:, 2].min()
    floor = body.floor
    targets = {
        "big_toe": np.array([ft.end[0] - 0.022, floor + 0.014, toe_z]),
        "small_toe": np.array([ft.end[0] + 0.03, floor + 0.012, toe_z - 0.03]),
        "heel": np.array([ft.start[0], floor + 0.012, heel_z]),
    }
    for key, tgt in targets.items():
        li = int(np.argmin(np.linalg.norm(fv - tgt, axis=1)))
        land_old["left_" + key] = fo + li
        _, ro = pverts("r_foot")
        land_old["right_" + key] = ro + li
    for fname in ("thumb", "index", "middle", "ring", "pinky"):
        for s, pre in (("left", "l_"), ("right", "r_")):
            i = _PIDX[pre + fname]
            land_old[f"{s}_{fname}"] = offsets[i + 1] - 1  # tip pole
    chosen_old = np.array([land_old[k] for k in VERTEX_LANDMARKS])
    target_new = np.array(list(VERTEX_LANDMARKS.values()))
    assert len(set(chosen_old.tolist())) == len(chosen_old)
    new_to_old = np.full(nv, -1, dtype=np.int64)
    new_to_old[target_new] = chosen_old
    free_new = np.setdiff1d(np.arange(nv), target_new)
    rest_old = np.setdiff1d(np.arange(nv), chosen_old)
    new_to_old[free_new] = rest_old
    old_to_new = np.empty(nv, dtype=np.int64)
    old_to_new[new_to_old] = np.arange(nv)
    jv = np.asarray(join_vertices, dtype=np.int64)
    jv[:, 0] = old_to_new[jv[:, 0]]
    return _Topology(faces=old_to_new[faces], is_join=is_join,
                     new_to_old=new_to_old, part=part_of[new_to_old],
                     ring=ring_of[new_to_old], join_vertices=jv)


@functools.lru_cache(maxsize=None)
def _ring_table():
    """{part index: list of vertex-id arrays, one per ring, poles included}."""
    topo = _topology()
    out = {}
    for pi, p in enumerate(_PART_NAMES):
        ids = np.nonzero(topo.part == pi)[0]
        rings = topo.ring[ids]
        order = np.argsort(rings, kind="stable")
        ids, rings = ids[order], rings[order]
        splits = np.nonzero(np.diff(rings))[0] + 1
        out[pi] = np.split(ids, splits)
    return out


# ---------------------------------------------------------------------------
# Geometry per proportion set
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _template(specname):
    """(6890, 3) template vertices of a proportion set (final vertex order)."""
    topo = _topology()
    pos, _ = _raw_vertices(_body(specname))
    v = pos[topo.new_to_old]
    v.setflags(write=False)
    return v


def _vertex_normals(v, faces):
    fn = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, faces[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


@functools.lru_cache(maxsize=None)
def _normals(specname):
    topo = _topology()
    n = _vertex_normals(_template(specname), topo.faces[~topo.is_join])
    n.setflags(write=False)
    return n


@functools.lru_cache(maxsize=None)
def _smooth_normals(specname, iterations=12):
    """Vertex normals averaged over the surface: a low-frequency direction
    field (no sharp turns at fingertips, poles or the nose)."""
    n = np.array(_normals(specname))
    P = _surface_averaging()
    for _ in range(iterations):
        n = P @ n
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    n.setflags(write=False)
    return n


# ---------------------------------------------------------------------------
# Skinning weights
# ---------------------------------------------------------------------------


def _chain(x, origin, d, bpts, joints, widths, nj):
    """Partition of unity along an axis: segment k (between breakpoints k-1 and
    k) belongs to joints[k]; transitions are smooth over +-widths."""
    s = (x - origin) @ d
    b = (np.asarray(bpts) - origin) @ d
    widths = np.asarray(widths, dtype=np.float64).copy()
    for i in range(len(b)):  # keep transition zones disjoint
        gaps = [np.inf]
        if i > 0:
            gaps.append(b[i] - b[i - 1])
        if i + 1 < len(b):
            gaps.append(b[i + 1] - b[i])
        widths[i] = min(widths[i], 0.45 * min(gaps))
    h = [_smoothstep((s - b[i] + widths[i]) / (2 * widths[i])) for i in range(len(b))]
    w = np.zeros((len(x), nj))
    w[:, joints[0]] += 1.0 - h[0]
    for k in range(1, len(b)):
        w[:, joints[k]] += np.maximum(h[k - 1] - h[k], 0.0)
    w[:, joints[-1]] += h[-1]
    return w


def _left_rules(pname, x, body, hands):
    """Weights (n, nj) for vertices x of a left or centre part.

    hands=False: SMPL (24 joints, fingers driven by the 'hand' joint);
    hands=True: SMPL-H (52 joints, finger chains).
    """
    J = body.joints
    nj = 52 if hands else 24
    yv = np.array([0.0, 1.0, 0.0])
    base = pname[2:] if pname.startswith("l_") else pname
    if base in ("thumb", "index", "middle", "ring", "pinky") and not hands:
        base = "palm"  # fingers follow the SMPL hand chain
    if base == "torso":
        spine = _chain(x, J[0], yv, J[[3, 6, 9, 12]], [0, 3, 6, 9, 12],
                       [0.05, 0.025, 0.025, 0.04], nj)
        sy = body.joints[12, 1] - body.joints[0, 1]
        a = (_smoothstep((x[:, 0] - 0.035) / 0.10)
             * _smoothstep((x[:, 1] - (J[9, 1] + 0.06 * sy / 0.515)) / (0.12 * sy / 0.515)))
        arm = _chain(x, J[13], _unit(J[16] - J[13]), J[[16]], [13, 16], [0.03], nj)
        b = (_smoothstep((x[:, 0] - 0.02) / 0.06)
             * _smoothstep((J[1, 1] + 0.05 - x[:, 1]) / 0.08))
        leg = _chain(x, J[1], _unit(J[4] - J[1]), J[[1]], [0, 1], [0.05], nj)
        return (1 - a - b)[:, None] * spine + a[:, None] * arm + b[:, None] * leg
    if base == "neck":
        return _chain(x, J[9], yv, J[[12, 15]], [9, 12, 15], [0.035, 0.035], nj)
    if base == "head":
        return _chain(x, J[12], yv, [J[15] - [0, 0.02, 0]], [12, 15], [0.015], nj)
    if base in ("upperarm", "forearm", "palm"):
        d = _unit(J[20] - J[16])
        if hands:
            w = _chain(x, J[16], d, J[[16, 18, 20]], [13, 16, 18, 20],
                       [0.035, 0.045, 0.025], nj)
            if base != "palm":
                return w
            # blend the knuckle region of the palm into the first finger joints
            bases = body.fingers[0, :4, 0]  # index, middle, pinky, ring
            dh = _unit(J[22] - J[20])
            lat = np.cross(dh, _unit(yv - (yv @ dh) * dh))
            s = (x - J[20]) @ dh
            kn = float(np.mean((bases - J[20]) @ dh))
            u = _smoothstep((s - (kn - 0.022)) / 0.02)
            lz = (x - J[20]) @ lat
            bz = (bases - J[20]) @ lat
            order = np.argsort(bz)
            bz, ids = bz[order], np.array([22, 25, 28, 31])[order]
            fw = np.zeros((len(x), nj))
            lzc = np.clip(lz, bz[0], bz[-1])
            k = np.clip(np.searchsorted(bz, lzc) - 1, 0, len(bz) - 2)
            f = (lzc - bz[k]) / (bz[k + 1] - bz[k])
            np.add.at(fw, (np.arange(len(x)), ids[k]), 1 - f)
            np.add.at(fw, (np.arange(len(x)), ids[k + 1]), f)
            return (1 - u)[:, None] * w + u[:, None] * fw
        return _chain(x, J[16], d, J[[16, 18, 20, 22]], [13, 16, 18, 20, 22],
                      [0.035, 0.045, 0.025, 0.02], nj)
    if base in ("thumb", "index", "middle", "ring", "pinky"):
        fi = _FINGERS.index(base)
        fj = body.fingers[0, fi]
        first = 22 + 3 * fi
        d = _unit(fj[2] - fj[0])
        return _chain(x, fj[0], d, fj, [20, first, first + 1, first + 2],
                      [0.012, 0.008, 0.007], nj)
    if base == "thigh":
        return _chain(x, J[1], _unit(J[4] - J[1]), J[[1, 4]], [0, 1, 4],
                      [0.05, 0.045], nj)
    if base == "shin":
        return _chain(x, J[4], _unit(J[7] - J[4]), J[[4, 7]], [1, 4, 7],
                      [0.045, 0.03], nj)
    if base == "foot":
        fd = _unit(J[10] - J[7] - ((J[10] - J[7]) @ yv) * yv)
        foot = _chain(x, J[7], fd, J[[10]], [7, 10], [0.03], nj)
        shin = _chain(x, J[4], _unit(J[7] - J[4]), J[[4, 7]], [1, 4, 7],
                      [0.045, 0.03], nj)
        c = _smoothstep((x[:, 1] - (J[7, 1] - 0.01)) / 0.04)
        return (1 - c)[:, None] * foot + c[:, None] * shin
    raise KeyError(pname)


@functools.lru_cache(maxsize=None)
def _surface_averaging():
    """Row-normalised vertex adjacency of the visible surface (joins excluded)."""
    topo = _topology()
    f = topo.faces[~topo.is_join]
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    A = scipy.sparse.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])),
                                shape=(NUM_VERTICES, NUM_VERTICES)).tocsr()
    A = ((A + A.T) > 0).astype(np.float64)
    deg = np.asarray(A.sum(1)).ravel()
    return scipy.sparse.diags(1.0 / deg) @ A


def _top4(w):
    """Keep the 4 largest weights per row and renormalise."""
    if w.shape[1] > 4:
        idx = np.argsort(-w, axis=1, kind="stable")[:, 4:]
        np.put_along_axis(w, idx, 0.0, axis=1)
    w[w < 1e-6] = 0.0
    return w / w.sum(1, keepdims=True)


@functools.lru_cache(maxsize=None)
def _weights(specname, hands):
    body = _body(specname)
    topo = _topology()
    v = _template(specname)
    nj = 52 if hands else 24
    mirror = _MIRROR_SMPLH if hands else _MIRROR_SMPL
    w = np.zeros((NUM_VERTICES, nj))
    for pi, pname in enumerate(_PART_NAMES):
        ids = np.nonzero(topo.part == pi)[0]
        x = v[ids]
        if pname.startswith("r_"):
            w[ids] = _left_rules("l_" + pname[2:], x * _FLIPX, body, hands)[:, mirror]
        elif pname.startswith("l_"):
            w[ids] = _left_rules(pname, x, body, hands)
        else:
            wl = _left_rules(pname, x, body, hands)
            wr = _left_rules(pname, x * _FLIPX, body, hands)[:, mirror]
            w[ids] = np.where((x[:, 0] >= 0)[:, None], wl, wr)
    # a little smoothing over the surface (not across the hidden joins) so
    # transitions span at least a couple of rings everywhere
    P = _surface_averaging()
    for _ in range(3):
        w = 0.5 * w + 0.5 * (P @ w)
    w = _top4(w)
    w.setflags(write=False)
    return w


# ---------------------------------------------------------------------------
# Joint regressors
# ---------------------------------------------------------------------------


def _fit_row(P, target):
    """Non-negative weights w (sum 1) with w @ P == target (least change from
    uniform).  P: (n, 3) candidate vertex positions."""
    n = len(P)
    mu = 1e3
    A = np.vstack([mu * P.T, mu * np.ones((1, n)), np.eye(n)])
    b = np.concatenate([mu * np.asarray(target, float), [mu], np.full(n, 1.0 / n)])
    w, _ = nnls(A, b, maxiter=50 * n)
    w[w < 1e-9] = 0.0
    return w / w.sum()


def _ring_candidates(v, target, part_ids, spread=1):
    """Vertex ids of the rings of the given parts nearest to ``target``."""
    rt = _ring_table()
    ids = []
    for pi in part_ids:
        rings = rt[pi]
        cents = np.array([v[r].mean(0) for r in rings])
        k = int(np.argmin(np.linalg.norm(cents - target, axis=1)))
        for kk in range(max(0, k - spread), min(len(rings), k + spread + 1)):
            ids.append(rings[kk])
    return np.unique(np.concatenate(ids))


def _regress_point(v, target, part_names):
    """Dense (6890,) regressor row for one point, from rings around it."""
    part_ids = [_PIDX[p] for p in part_names]
    row = np.zeros(len(v))
    for spread in (1, 2, 3, 5):
        ids = _ring_candidates(v, target, part_ids, spread)
        w = _fit_row(v[ids], target)
        if np.linalg.norm(w @ v[ids] - target) < 5e-4:
            break
    row[ids] = w
    return row


_SMPL_JOINT_PARTS = {
    0: ["torso"], 3: ["torso"], 6: ["torso"], 9: ["torso"], 12: ["neck"],
    15: ["neck", "head"], 1: ["l_thigh"], 4: ["l_thigh", "l_shin"],
    7: ["l_shin", "l_foot"], 10: ["l_foot"], 13: ["torso"],
    16: ["l_upperarm"], 18: ["l_upperarm", "l_forearm"],
    20: ["l_forearm", "l_palm"], 22: ["l_palm"],
}


def _right(parts):
    return [("r_" + p[2:]) if p.startswith("l_") else p for p in parts]


@functools.lru_cache(maxsize=None)
def _j_regressor(specname, hands):
    body = _body(specname)
    v = _template(specname)
    rows = []
    nj = 52 if hands else 24
    for j in range(nj):
        if j < 22 or not hands:
            name = SMPL_JOINT_NAMES[j]
            left = _MIRROR_SMPL[j] if name.startswith("right_") else j
            parts = _SMPL_JOINT_PARTS[left]
            if name.startswith("right_"):
                parts = _right(parts)
            target = body.joints[j]
        else:
            side = 0 if j < 37 else 1
            fi, k = divmod(j - 22 - 15 * side, 3)
            target = body.fingers[side, fi, k]
            parts = [("l_" if side == 0 else "r_") + _FINGERS[fi]]
        rows.append(_regress_point(v, target, parts))
    R = scipy.sparse.csc_matrix(np.vstack(rows))
    return R


# ---------------------------------------------------------------------------
# Blend shapes
# ---------------------------------------------------------------------------


def _bone_frames(J, parents):
    """Per joint: unit bone direction (from the joint towards its main child)."""
    n = len(parents)
    d = np.zeros((n, 3))
    main_child = {0: 3, 3: 6, 6: 9, 9: 12, 12: 15, 13: 16, 14: 17}
    for j in range(n):
        if j in main_child:
            c = main_child[j]
            d[j] = J[c] - J[j]
        else:
            kids = [c for c in range(n) if parents[c] == j]
            if kids:
                d[j] = J[kids[0]] - J[j]
            else:
                d[j] = J[j] - J[parents[j]]
    d[[0, 3, 6, 9, 12, 15]] = [0.0, 1.0, 0.0]
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _bone_field(v, w, J, parents, dirs, a, p):
    """Displacements of bone-wise axial stretch ``a`` and radial scaling ``p``.

    a, p: (nj, K).  Each joint's affine map stretches along its bone by a and
    scales perpendicular to it by p, and translates by the displacement its
    parent chain imposes on it; maps are blended with the skinning weights.
    Returns (V, 3, K).
    """
    nj, K = a.shape
    t = np.zeros((nj, 3, K))
    for j in range(1, nj):
        q = parents[j]
        r = J[j] - J[q]
        ax = (r @ dirs[q]) * dirs[q]
        t[j] = t[q] + ax[:, None] * a[q][None, :] + (r - ax)[:, None] * p[q][None, :]
    rel = v[:, None, :] - J[None, :, :]                       # V, nj, 3
    ax = np.einsum("vjc,jc->vj", rel, dirs)[..., None] * dirs[None]  # V, nj, 3
    perp = rel - ax
    out = np.einsum("vj,jck->vck", w, t)
    out += np.einsum("vjc,jk->vck", w[..., None] * ax, a)
    out += np.einsum("vjc,jk->vck", w[..., None] * perp, p)
    return out


@functools.lru_cache(maxsize=4)
def _shapedirs_base(specname, num_betas, seed):
    v = _template(specname)
    w = _weights(specname, False)
    n = _smooth_normals(specname)
    body = _body(specname)
    J = body.joints
    parents = np.array(SMPL_PARENTS)
    parents[0] = 0
    dirs = _bone_frames(J, parents)
    K = num_betas
    sd = np.zeros((NUM_VERTICES, 3, K))
    # beta 0: overall scale about the pelvis (~3.5 cm at the head top)
    sd[:, :, 0] = 0.045 * (v - J[0])
    # beta 1: girth -- radial thickening around every bone + a belly
    g = np.full(24, 0.06)
    g[[0, 3, 6, 9]] = 0.085
    g[[12, 15]] = 0.02
    g[[10, 11, 20, 21, 22, 23]] = 0.03
    zero = np.zeros((24, 1))
    girth = _bone_field(v, w, J, parents, dirs, zero, g[:, None])[..., 0]
    belly = 0.012 * np.exp(-0.5 * ((v[:, 1] - (J[3, 1] + J[6, 1]) / 2) / 0.09) ** 2) \
        * np.exp(-0.5 * (v[:, 0] / 0.12) ** 2) * _smoothstep((v[:, 2] - J[3, 2]) / 0.08)
    girth[:, 2] += belly
    sd[:, :, 1] = girth
    if K > 2:
        a = np.zeros((24, 1))
        for j in (1, 2, 4, 5, 16, 17, 18, 19):
            a[j] = 0.045
        for j in (0, 3, 6, 9):
            a[j] = -0.03
        sd[:, :, 2] = _bone_field(v, w, J, parents, dirs, a, np.zeros((24, 1)))[..., 0]
    if K > 3:
        # Each direction k >= 3 has its own generator, so the first directions
        # do not depend on how many are requested (10 vs 300).
        M = K - 3
        T = 3
        k = np.arange(3, K, dtype=np.float64)
        a = np.zeros((24, M))
        p = np.zeros((24, M))
        wx, wy, wz, ph, amp = (np.zeros((M, T)) for _ in range(5))
        mix = np.zeros(M)
        left = np.array([i for i, nm in enumerate(SMPL_JOINT_NAMES) if nm.startswith("left_")])
        ext = [10, 11, 15, 20, 21, 22, 23]  # feet, head, hands: subtler
        for m in range(M):
            rng = np.random.default_rng([int(seed), 7331, m + 3])
            a[:, m] = rng.normal(0.0, 0.03, size=24)
            p[:, m] = rng.normal(0.0, 0.05, size=24)
            # the spine joints are only 5-14 cm apart: vary them coherently
            base, slope = rng.normal(0.0, 0.05), rng.normal(0.0, 0.03)
            p[[0, 3, 6, 9], m] = base + slope * np.array([-1.0, -0.33, 0.33, 1.0])
            freq = 3.0 + 14.0 * min(1.0, m / 150.0)   # rad/m, wavelength >= 0.37 m
            wx[m] = rng.uniform(0.3, 1.2, size=T) * freq
            wy[m] = rng.uniform(-1.0, 1.0, size=T) * freq
            wz[m] = rng.uniform(-1.0, 1.0, size=T) * freq
            ph[m] = rng.uniform(0.0, 2 * np.pi, size=T)
            amp[m] = rng.normal(0.0, 1.0, size=T)
            mix[m] = rng.uniform(0.3, 0.7)
        a[ext] *= 0.3
        p[ext] *= 0.3
        # left/right symmetric bone-wise stretch and thickness changes
        a[_MIRROR_SMPL[left]] = a[left]
        p[_MIRROR_SMPL[left]] = p[left]
        bone = _bone_field(v, w, J, parents, dirs, a, p)
        # smooth fields along the normal, even in x (left/right symmetric)
        arg = (v[:, 1, None, None] * wy[None] + v[:, 2, None, None] * wz[None] + ph[None])
        f = np.einsum("vmt,mt->vm", np.cos(v[:, 0, None, None] * wx[None]) * np.sin(arg), amp)
        bn = np.abs(bone).max(axis=(0, 1))
        fn = np.abs(f).max(axis=0)
        field = (mix[None, None] * bone / bn[None, None]
                 + (1 - mix)[None, None] * n[:, :, None] * (f / fn)[:, None, :])
        mag = 0.012 * (3.0 / k) ** 1.1   # 12 mm for beta 3, ~0.1 mm for beta 299
        field *= (mag / np.abs(field).max(axis=(0, 1)))[None, None]
        sd[:, :, 3:] = field
    sd.setflags(write=False)
    return sd


def _posedirs(specname, hands, seed):
    v = _template(specname)
    n = _normals(specname)
    w = _weights(specname, hands)
    body = _body(specname)
    parents = SMPLH_PARENTS if hands else SMPL_PARENTS
    nj = len(parents)
    if hands:
        J = np.vstack([body.joints[:22], body.fingers[0].reshape(15, 3),
                       body.fingers[1].reshape(15, 3)])
    else:
        J = body.joints
    rng = np.random.default_rng([seed, 4242, int(hands)])
    alpha = rng.normal(0.0, 1.0, size=(nj - 1, 9))
    beta = rng.normal(0.0, 0.6, size=(nj - 1, 9, 3))
    pd = np.zeros((NUM_VERTICES, 3, (nj - 1) * 9))
    for j in range(1, nj):
        q = parents[j]
        bone = np.linalg.norm(J[j] - J[q])
        finger = j >= 22 and hands
        sigma = float(np.clip(0.45 * bone, 0.012, 0.09))
        amp = 0.0008 if finger else 0.003
        rel = (v - J[j]) / sigma
        r2 = (rel ** 2).sum(1)
        mask = (w[:, j] + w[:, q]) * np.exp(-0.5 * r2) * np.clip(1.0 - r2 / 9.0, 0.0, 1.0) ** 2
        sel = mask > 1e-4
        if not sel.any():
            continue
        coef = alpha[j - 1][None, :] + rel[sel] @ beta[j - 1].T  # (n_sel, 9)
        disp = amp * (mask[sel][:, None] * coef)                 # (n_sel, 9)
        pd[sel, :, 9 * (j - 1):9 * j] = n[sel][:, :, None] * disp[:, None, :]
    return pd


def _hand_pca(seed):
    """Orthonormal (45, 45) PCA-like hand components and means (left, right)."""
    rng = np.random.default_rng([seed, 99])
    curl = np.zeros((15, 3))
    curl[:12] = [0.0, 0.0, -1.0]           # fingers flex about -z (left hand)
    curl[12:] = _unit([0.4, 0.3, -0.85])   # thumb flexes towards the palm
    curl = curl.reshape(-1)
    spread = np.zeros((15, 3))
    for fi, s in enumerate((1.0, 0.0, -1.0, -0.5, 0.6)):
        spread[3 * fi] = [0.0, s, 0.0]
    spread = spread.reshape(-1)
    M = np.vstack([curl, spread, rng.normal(size=(43, 45))])
    Q, R = np.linalg.qr(M.T)
    Q = Q * np.sign(np.diag(R))[None, :]
    comps_l = Q.T.copy()
    mean_l = 0.15 * curl / np.abs(curl).max() + rng.normal(0.0, 0.02, 45)
    mir = np.tile([1.0, -1.0, -1.0], 15)
    return comps_l, comps_l * mir[None, :], mean_l, mean_l * mir


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def _kintree(parents):
    k = np.zeros((2, len(parents)), dtype=np.int64)
    k[0] = [_ROOT_PARENT if q < 0 else q for q in parents]
    k[1] = np.arange(len(parents))
    return k


def _check_betas(num_betas):
    if not (isinstance(num_betas, (int, np.integer)) and num_betas >= 1):
        raise ValueError("num_betas must be a positive integer")


def make_smpl_arrays(gender="neutral", num_betas=10, seed=0):
    """Synthetic SMPL v1.0 model arrays (the unpickled ``SMPL_*.pkl`` dict).

    Parameters
    ----------
    gender : 'neutral' | 'male' | 'female'
    num_betas : int, number of shape directions (10 or 300 like SMPL's files;
        any positive number works)
    seed : int, drives the higher (index >= 3) shape directions and the pose
        blend shapes; the template, weights and regressors are seed independent.

    Returns
    -------
    dict with (all float64 unless said otherwise, metres)
        'v_template' (6890, 3); 'f' (13776, 3) uint32;
        'J_regressor', 'J_regressor_prior' scipy.sparse.csc_matrix (24, 6890),
        non-negative rows summing to 1 (a few rings of vertices per joint);
        'J' (24, 3) = J_regressor @ v_template;
        'kintree_table' (2, 24) int64, root parent stored as 2**32 - 1;
        'weights', 'weights_prior' (6890, 24) linear blend skinning weights
        (non-negative, rows sum to 1, at most 4 non-zeros);
        'posedirs' (6890, 3, 207) pose correctives for (R_j - I), j = 1..23,
        joint-major then row-major; 'shapedirs' (6890, 3, num_betas) plain
        ndarray (beta 0: overall size, beta 1: girth, beta 2: limb vs torso
        length, then smooth deformations of decreasing size);
        'bs_style' 'lbs'; 'bs_type' 'lrotmin';
        'vert_sym_idxs' (6890,) int64 left/right mirror map (male/female only);
        'pose_training_info' small dict.
    Every call returns fresh arrays (safe to mutate).
    """
    _check_gender(gender)
    _check_betas(num_betas)
    topo = _topology()
    v = np.array(_template(gender))
    jreg = _j_regressor(gender, False)
    w = np.array(_weights(gender, False))
    out = {
        "v_template": v,
        "f": topo.faces.astype(np.uint32),
        "J_regressor": jreg.copy(),
        "J_regressor_prior": jreg.copy(),
        "J": np.asarray(jreg @ v),
        "kintree_table": _kintree(SMPL_PARENTS),
        "weights": w,
        "weights_prior": w.copy(),
        "posedirs": _posedirs(gender, False, seed),
        "shapedirs": np.array(_shapedirs_base(gender, int(num_betas), seed)),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "pose_training_info": {
            "generator": "meshrec.body.mannequin",
            "synthetic": True,
            "gender": gender,
            "seed": int(seed),
            "num_betas": int(num_betas),
        },
    }
    if gender != "neutral":
        out["vert_sym_idxs"] = _vert_sym_idxs(gender)
    return out


def _vert_sym_idxs(specname):
    v = _template(specname)
    tree = cKDTree(v)
    _, idx = tree.query(v * _FLIPX)
    return idx.astype(np.int64)


def make_smplh_arrays(gender="neutral", num_betas=10, seed=0):
    """Synthetic SMPL-H model arrays (52 joints, SMPL topology).

    Joints: SMPL's first 22, then 15 left-hand finger joints, then 15 right
    (index1..3, middle1..3, pinky1..3, ring1..3, thumb1..3), see
    :data:`SMPLH_JOINT_NAMES` / :data:`SMPLH_PARENTS`.

    Returns a dict: 'v_template' (6890, 3); 'f' (13776, 3) uint32;
    'J_regressor' csc (52, 6890); 'J' (52, 3); 'kintree_table' (2, 52) int64;
    'weights' (6890, 52); 'posedirs' (6890, 3, 459); 'shapedirs'
    (6890, 3, num_betas); 'hands_componentsl' / 'hands_componentsr' (45, 45)
    with orthonormal rows; 'hands_meanl' / 'hands_meanr' (45,); 'bs_style',
    'bs_type'.  All float64, metres.
    """
    _check_gender(gender)
    _check_betas(num_betas)
    topo = _topology()
    v = np.array(_template(gender))
    jreg = _j_regressor(gender, True)
    cl, cr, ml, mr = _hand_pca(seed)
    return {
        "v_template": v,
        "f": topo.faces.astype(np.uint32),
        "J_regressor": jreg.copy(),
        "J": np.asarray(jreg @ v),
        "kintree_table": _kintree(SMPLH_PARENTS),
        "weights": np.array(_weights(gender, True)),
        "posedirs": _posedirs(gender, True, seed),
        "shapedirs": np.array(_shapedirs_base(gender, int(num_betas), seed)),
        "hands_componentsl": cl,
        "hands_componentsr": cr,
        "hands_meanl": ml,
        "hands_meanr": mr,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def make_kid_template(seed=0):
    """(6890, 3) float64 child template (~1.1 m tall, relatively larger head),
    same topology and landmark ids as the adult; like smplx's
    ``smpl_kid_template.npy``.  ``seed`` is accepted for API symmetry; the
    template does not depend on it."""
    del seed
    return np.array(_template("kid"))


def _arrays_geometry(arrays):
    v = np.asarray(arrays["v_template"], dtype=np.float64)
    jr = arrays["J_regressor"]
    jr = jr.toarray() if scipy.sparse.issparse(jr) else np.asarray(jr)
    if v.shape != (NUM_VERTICES, 3):
        raise ValueError("arrays['v_template'] must have shape (6890, 3)")
    return v, np.asarray(jr, dtype=np.float64)


def _head_points(v):
    topo = _topology()
    hv = v[topo.part == _PIDX["head"]]
    top = hv[np.argmax(hv[:, 1])]
    lo, hi = hv[:, 1].min(), hv[:, 1].max()
    centre = np.array([0.0, 0.5 * (lo + hi), np.median(hv[:, 2])])
    return hv, top, lo, hi, centre


def _common_points(v, jr):
    J = jr @ v
    hv, top, lo, hi, centre = _head_points(v)
    size = hi - lo
    pts = {
        "headtop": (top - [0.0, 0.02 * size / 0.237, 0.0], ["head"]),
        "spine": (np.array([0.0, 0.5 * (J[3, 1] + J[6, 1]), 0.5 * (J[3, 2] + J[6, 2]) + 0.01]),
                  ["torso"]),
        "thorax": (np.array([0.0, J[12, 1] - 0.03 * size / 0.237, J[12, 2]]),
                   ["torso", "neck"]),
        "jaw": (np.array([0.0, lo + 0.07 * size / 0.237, centre[2] + 0.045 * size / 0.237]),
                ["head"]),
        "head": (np.array([0.0, centre[1] + 0.01 * size / 0.237, centre[2]]), ["head"]),
        "nosejaw": (np.array([0.0, lo + 0.1 * size / 0.237, centre[2] + 0.03 * size / 0.237]),
                    ["head"]),
        "neck_lsp": (np.array([0.0, J[12, 1] + 0.07 * size / 0.237, J[12, 2] + 0.01]),
                     ["neck"]),
    }
    return J, pts


def make_h36m_regressor(arrays):
    """(17, 6890) float64 dense regressor of Human3.6M joints (order
    :data:`H36M_JOINT_NAMES`, mmhuman3d's H36M convention) to be applied to
    *posed* vertices.  Rows are non-negative and sum to 1; each row uses a few
    rings of vertices around its joint so it follows the pose.

    ``arrays``: a dict from :func:`make_smpl_arrays` / :func:`make_smplh_arrays`
    (uses 'v_template' and the first 22 rows of 'J_regressor')."""
    v, jr = _arrays_geometry(arrays)
    J, pts = _common_points(v, jr)
    R = np.zeros((17, NUM_VERTICES))
    R[0] = 0.5 * (jr[1] + jr[2])
    for i, j in ((1, 1), (2, 4), (3, 7), (4, 2), (5, 5), (6, 8), (11, 16),
                 (12, 18), (13, 20), (14, 17), (15, 19), (16, 21)):
        R[i] = jr[j]
    for i, key in ((7, "spine"), (8, "thorax"), (9, "nosejaw"), (10, "headtop")):
        tgt, parts = pts[key]
        R[i] = _regress_point(v, tgt, parts)
    return R / R.sum(1, keepdims=True)


def make_extra_regressor(arrays):
    """(9, 6890) float64 dense regressor for mmhuman3d's 9 extra joints (order
    :data:`EXTRA_JOINT_NAMES`), applied to posed vertices; rows non-negative,
    summing to 1.  ``arrays`` as for :func:`make_h36m_regressor`."""
    v, jr = _arrays_geometry(arrays)
    J, pts = _common_points(v, jr)
    hv, top, lo, hi, centre = _head_points(v)
    s = (hi - lo) / 0.237
    R = np.zeros((9, NUM_VERTICES))
    rhip = J[2] + np.array([-0.012, -0.045, 0.0]) * s
    lhip = J[1] + np.array([0.012, -0.045, 0.0]) * s
    R[0] = _regress_point(v, rhip, ["r_thigh"])
    R[1] = _regress_point(v, lhip, ["l_thigh"])
    R[2] = _regress_point(v, pts["neck_lsp"][0], pts["neck_lsp"][1])
    R[3] = _regress_point(v, *pts["headtop"])
    R[4] = 0.5 * (R[0] + R[1])
    R[5] = _regress_point(v, *pts["thorax"])
    R[6] = _regress_point(v, *pts["spine"])
    R[7] = _regress_point(v, *pts["jaw"])
    R[8] = _regress_point(v, *pts["head"])
    return R / R.sum(1, keepdims=True)


def round_to_float32(arrays: dict) -> dict:
    """Float arrays rounded to float32-representable values: smplx loads every model array through
    float32, so only such arrays give bit-comparable float64 results in both libraries."""
    rounded = {}
    for key, value in arrays.items():
        if scipy.sparse.issparse(value):
            value = value.copy()
            value.data = value.data.astype(np.float32).astype(np.float64)
        elif isinstance(value, np.ndarray) and value.dtype == np.float64:
            value = value.astype(np.float32).astype(np.float64)
        rounded[key] = value
    return rounded


def mannequin_smpl(gender: str = "neutral", num_betas: int = 10, seed: int = 0, dtype=None, **kwargs):
    """A :class:`meshrec.body.SMPL` on the mannequin's arrays, built in memory (no file).

    Used where no SMPL files exist (the demo, methods run without licensed files). Arrays are
    rounded to float32-representable values, as SMPL files loaded through float32 are.
    ``kwargs`` go to :class:`meshrec.body.SMPL` (e.g. ``create_transl=False``).
    """
    import torch

    from meshrec.body.smpl import SMPL

    arrays = round_to_float32(make_smpl_arrays(gender=gender, num_betas=num_betas, seed=seed))
    return SMPL(data_struct=arrays, gender=gender, num_betas=num_betas, dtype=dtype or torch.float32, **kwargs)
