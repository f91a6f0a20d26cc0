"""Hook implementations of meshrec-motionbert. Cheap to import: names and targets only."""

import meshrec


@meshrec.hookimpl
def meshrec_register_methods(registry):
    registry.add("meshrec_motionbert.method:MotionBERT")


@meshrec.hookimpl
def meshrec_register_datasets(registry):
    registry.add("pw3d-motionbert", "meshrec_motionbert.evaluation:evaluate_pw3d_motionbert",
                 summary="3DPW test set as MotionBERT reports it (data/mesh/mesh_det_pw3d.pkl)")
