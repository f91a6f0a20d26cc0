"""Hook implementations of meshrec-hmr. Cheap to import: names and targets only."""

import meshrec


@meshrec.hookimpl
def meshrec_register_methods(registry):
    registry.add("meshrec_hmr.method:HMR")


@meshrec.hookimpl
def meshrec_register_datasets(registry):
    registry.add("pw3d", "meshrec_hmr.evaluation:evaluate_pw3d",
                 summary="3DPW test set as mmhuman3d reports it (HumanData pw3d_test.npz)")
