"""meshrec-mahmr: MA-HMR (metric-aware multi-person HMR) and SAT-HMR for meshrec.

The network lives in :mod:`meshrec_mahmr.model` (imported on use, not here: importing the
package must stay cheap for plugin discovery).
"""

__version__ = "0.1.0"
