// Autograd of meshrec::rodrigues (and a guard against the double backward), in C++: a fitting
// loop converts a body's 24 rotations a few hundred times, where the Python glue of a
// torch.library.register_autograd formula cost more than the kernels. Fake kernels stay in
// Python (meshrec/ops/_registrations/rotation.py).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace meshrec {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

const c10::TypedOperatorHandle<at::Tensor(const at::Tensor&)>& forward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("meshrec::rodrigues", "")
                             .typed<at::Tensor(const at::Tensor&)>();
  return op;
}

const c10::TypedOperatorHandle<at::Tensor(const at::Tensor&, const at::Tensor&)>& backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("meshrec::rodrigues_backward", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  return op;
}

class RodriguesBackward : public torch::autograd::Function<RodriguesBackward> {
 public:
  static at::Tensor forward(AutogradContext*, const at::Tensor& grad_rotation, const at::Tensor& axis_angle) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return backward_op().call(grad_rotation, axis_angle);
  }
  static variable_list backward(AutogradContext*, variable_list) {
    TORCH_CHECK(false, "meshrec::rodrigues has no double backward (gradients of its gradient). "
                       "Use the pure-PyTorch reference in meshrec.ops.reference for higher-order derivatives.");
  }
};

class Rodrigues : public torch::autograd::Function<Rodrigues> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& axis_angle) {
    ctx->save_for_backward({axis_angle});
    at::AutoDispatchBelowADInplaceOrView guard;
    return forward_op().call(axis_angle);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor axis_angle = ctx->get_saved_variables()[0];
    return {RodriguesBackward::apply(grads[0], axis_angle)};
  }
};

at::Tensor rodrigues_autograd(const at::Tensor& axis_angle) { return Rodrigues::apply(axis_angle); }

at::Tensor rodrigues_backward_autograd(const at::Tensor& grad_rotation, const at::Tensor& axis_angle) {
  return RodriguesBackward::apply(grad_rotation, axis_angle);
}

}  // namespace

TORCH_LIBRARY_IMPL(meshrec, Autograd, m) {
  m.impl("rodrigues", &rodrigues_autograd);
  m.impl("rodrigues_backward", &rodrigues_backward_autograd);
}

}  // namespace meshrec
