"""Hook implementations of meshrec-sahmr. Cheap to import: names and targets only."""

import meshrec


@meshrec.hookimpl
def meshrec_register_methods(registry):
    registry.add("meshrec_sahmr.method:SAHMR")


@meshrec.hookimpl
def meshrec_register_datasets(registry):
    registry.add("rich-sahmr", "meshrec_sahmr.evaluation:evaluate_rich",
                 summary="RICH test split (3116 frames, 5 scans) from SA-HMR's sahmr_support folder")
    registry.add("prox-sahmr", "meshrec_sahmr.evaluation:evaluate_prox",
                 summary="PROX quantitative (vicon scene) from SA-HMR's sahmr_support folder")
