"""meshrec-egohmr: EgoHMR (Zhang et al., ICCV 2023) for meshrec.

Methods ``egohmr`` (both stages) and ``prohmr-scene`` (stage 1 alone); dataset
``egobody-egohmr``. Networks live in :mod:`meshrec_egohmr.stage1` / :mod:`meshrec_egohmr.stage2`,
checkpoint conversion in :mod:`meshrec_egohmr.checkpoint`.
"""

__version__ = "0.1.0"
