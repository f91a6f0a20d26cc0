"""Hook implementations of meshrec-egohmr. Cheap to import: names and targets only."""

import meshrec


@meshrec.hookimpl
def meshrec_register_methods(registry):
    registry.add("meshrec_egohmr.method:EgoHMR")
    registry.add("meshrec_egohmr.method:ProHMRSceneMethod")


@meshrec.hookimpl
def meshrec_register_datasets(registry):
    registry.add("egobody-egohmr", "meshrec_egohmr.evaluation:evaluate_egobody",
                 summary="EgoBody egocentric test set as EgoHMR's test_egohmr.py reports it")
