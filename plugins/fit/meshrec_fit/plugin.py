"""Hook implementations of meshrec-fit. Cheap to import: names and targets only."""

import meshrec


@meshrec.hookimpl
def meshrec_register_methods(registry):
    registry.add("fit", "meshrec_fit.method:Fit",
                 summary="SMPL fitted to 2D keypoints (COCO-17, OpenPose-25, H36M-17), optional scene terms")
