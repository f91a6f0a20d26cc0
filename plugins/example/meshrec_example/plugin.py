"""Hook implementations of the example plugin. Cheap to import: names and targets only."""

import meshrec


@meshrec.hookimpl
def meshrec_register_methods(registry):
    registry.add(
        "example",
        "meshrec_example.method:TemplateBaseline",
        summary="template body standing upright in each box (baseline; the plugin template)",
    )
