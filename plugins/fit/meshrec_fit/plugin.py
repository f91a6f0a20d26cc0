"""Hook implementations of meshrec-fit. Cheap to import: names and targets only."""

import meshrec


@meshrec.hookimpl
def meshrec_register_methods(registry):
    registry.add("meshrec_fit.method:Fit")
