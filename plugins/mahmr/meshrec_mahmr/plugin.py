"""Hook implementations of meshrec-mahmr. Cheap to import: names and targets only."""

import meshrec


@meshrec.hookimpl
def meshrec_register_methods(registry):
    registry.add("meshrec_mahmr.method:MAHMR")
    registry.add("meshrec_mahmr.method:SATHMR")
