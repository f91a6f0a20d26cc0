"""Hook implementations of meshrec-mahmr. Cheap to import: names and targets only."""

import meshrec


@meshrec.hookimpl
def meshrec_register_methods(registry):
    registry.add("meshrec_mahmr.method:MAHMR")
    registry.add("meshrec_mahmr.method:SATHMR")


@meshrec.hookimpl
def meshrec_register_datasets(registry):
    registry.add("relative-human", "meshrec_mahmr.evaluation:evaluate_rh",
                 summary="Relative Human test set as MA-HMR / BEV evaluate it (P/R/F1, mPCKh, PCRD_0.2 by age)")
