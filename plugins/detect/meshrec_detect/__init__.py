"""meshrec detectors built on weights that ship inside registry packages (nothing downloaded)."""

from meshrec_detect.layouts import BLAZEPOSE33, blazepose_to_layout

__all__ = ["BLAZEPOSE33", "blazepose_to_layout"]
