"""Autograd formulas and fake ("meta") kernels of the compiled ops, one module per op family.

Imported only after ``meshrec._C`` has loaded (see meshrec.extension), so a missing or broken
library never turns into an import error here. The schemas themselves are declared in
csrc/ops.cpp, whose ``set_python_module`` points the dispatcher to this package.
"""

from meshrec.ops._registrations import rotation  # noqa: F401
from meshrec.ops._registrations import metrics  # noqa: F401
from meshrec.ops._registrations import smpl  # noqa: F401
from meshrec.ops._registrations import sparse  # noqa: F401
