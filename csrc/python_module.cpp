// `import meshrec._C` loads this shared library, which runs the static TORCH_LIBRARY
// initialisers. The module has no Python functions: every op is reached through the
// dispatcher as torch.ops.meshrec.<name>, so the library needs neither pybind11 nor
// libtorch_python.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "meshrec compiled ops", -1, nullptr,
                                      nullptr,               nullptr, nullptr,                 nullptr};
  return PyModule_Create(&module);
}
