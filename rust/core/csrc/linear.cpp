// `fastembed::linear(input, weight, bias, activation)`: the operator exported bundles call for
// every float linear layer. Same contract as `aten::linear`, optionally followed by GELU; a few
// rows on a CPU with AVX2 or AVX-512 take the skinny GEMM of skinny_kernel.h, everything else
// goes to `at::linear` (MKL).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <c10/core/GradMode.h>
#include <torch/library.h>

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "skinny.h"

namespace fastembed {
namespace {

// Up to this many rows (tokens of the batch) the skinny GEMM beats MKL on every layer shape of
// the supported models (bench/linear_forms.py; for AVX2, against MKL held to AVX2 with
// MKL_ENABLE_INSTRUCTIONS=AVX2). Past it the arithmetic, not the weight stream, sets the pace.
constexpr int64_t kMaxRowsAvx512 = 64;
constexpr int64_t kMaxRowsAvx2 = 24;
// Output columns per parallel task.
constexpr int64_t kColumnsPerTask = 16;

enum class Kernel { Aten, Avx2, Avx512 };

// The bytes of input rows the skinny GEMM keeps in L1 at once: 7/12 of the L1 data cache (28 KiB
// of 48, 18.7 of 32), leaving the rest to the weight rows and outputs of a tile. Measured with
// bench/linear_forms.py on a 48 KiB L1: 20 KiB was slower, 28 and 40 the same.
int64_t l1_input_budget() {
  static const int64_t budget = [] {
    const long l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE);
    return static_cast<int64_t>(l1 > 0 ? l1 : 32 * 1024) * 7 / 12;
  }();
  return budget;
}

Kernel kernel = Kernel::Aten;

const char* kernel_name(Kernel k) {
  switch (k) {
    case Kernel::Avx512: return "avx512";
    case Kernel::Avx2: return "avx2";
    case Kernel::Aten: return "aten";
  }
  return "aten";
}

// The best the CPU runs, or the one FASTEMBED_EXT_LINEAR_KERNEL asks for if the CPU runs it.
Kernel choose_kernel() {
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  Kernel best = avx512 ? Kernel::Avx512 : avx2 ? Kernel::Avx2 : Kernel::Aten;
  const char* wanted = std::getenv("FASTEMBED_EXT_LINEAR_KERNEL");
  if (wanted == nullptr || *wanted == '\0') return best;
  if (std::strcmp(wanted, "aten") == 0) return Kernel::Aten;
  if (std::strcmp(wanted, "avx2") == 0 && avx2) return Kernel::Avx2;
  if (std::strcmp(wanted, "avx2") != 0 && std::strcmp(wanted, "avx512") != 0)
    TORCH_WARN("FASTEMBED_EXT_LINEAR_KERNEL=", wanted,
               " is not one of avx512, avx2, aten; using ", kernel_name(best));
  return best;
}

bool skinny_applies(const at::Tensor& input, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias) {
  if (kernel == Kernel::Aten) return false;
  if (input.device().type() != c10::DeviceType::CPU || input.layout() != at::kStrided ||
      input.scalar_type() != at::kFloat || input.dim() < 1 || input.numel() == 0)
    return false;
  if (weight.device().type() != c10::DeviceType::CPU || weight.layout() != at::kStrided ||
      weight.scalar_type() != at::kFloat || weight.dim() != 2 || !weight.is_contiguous() ||
      weight.size(1) != input.size(-1))
    return false;
  if (bias.has_value() && bias->defined() &&
      (bias->device().type() != c10::DeviceType::CPU || bias->scalar_type() != at::kFloat ||
       bias->dim() != 1 || !bias->is_contiguous() || bias->size(0) != weight.size(0)))
    return false;
  if (c10::GradMode::is_enabled() &&
      (input.requires_grad() || weight.requires_grad() ||
       (bias.has_value() && bias->defined() && bias->requires_grad())))
    return false;
  const int64_t rows = input.numel() / input.size(-1);
  return rows <= (kernel == Kernel::Avx512 ? kMaxRowsAvx512 : kMaxRowsAvx2);
}

// The activations a linear layer's output can go through inside the operator.
enum class Activation { None, Gelu };

Activation parse_activation(const std::optional<c10::string_view>& name) {
  if (!name.has_value()) return Activation::None;
  if (*name == "gelu") return Activation::Gelu;  // exact (erf) GELU, as torch.nn.functional.gelu
  TORCH_CHECK(false, "fastembed::linear: unknown activation '", std::string(*name),
              "'; expected None or 'gelu'");
}

at::Tensor linear(const at::Tensor& input, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias,
                  std::optional<c10::string_view> activation_name) {
  const Activation activation = parse_activation(activation_name);
  if (!skinny_applies(input, weight, bias)) {
    at::Tensor out = at::linear(input, weight, bias);
    return activation == Activation::Gelu ? at::gelu(out) : out;
  }
  const int64_t k = input.size(-1);
  const int64_t n = weight.size(0);
  const at::Tensor x = input.contiguous();
  std::vector<int64_t> out_sizes = input.sizes().vec();
  out_sizes.back() = n;
  at::Tensor y = at::empty(out_sizes, input.options());
  const bool has_bias = bias.has_value() && bias->defined();
  const int64_t m = x.numel() / k;
  const skinny::Problem problem{x.const_data_ptr<float>(),
                                m,
                                k,
                                weight.const_data_ptr<float>(),
                                has_bias ? bias->const_data_ptr<float>() : nullptr,
                                y.mutable_data_ptr<float>(),
                                n,
                                skinny::k_slice(m, k, l1_input_budget())};
  const auto run = kernel == Kernel::Avx512 ? skinny::linear_avx512 : skinny::linear_avx2;
  const int64_t tasks = (n + kColumnsPerTask - 1) / kColumnsPerTask;
  const at::Tensor y2d = y.view({problem.m, n});
  // OpenMP workers do not inherit the caller's thread-local state (inference mode, grad mode),
  // which at::gelu_ on them needs.
  const at::ThreadLocalState caller_state;
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard state_guard(caller_state);
    const int64_t col_begin = begin * kColumnsPerTask;
    const int64_t col_end = std::min(end * kColumnsPerTask, n);
    run(problem, col_begin, col_end);
    // The same GELU kernel as aten::gelu, on the columns this thread just wrote (still in its
    // cache), instead of a separate operator that reads all of them back on both cores.
    if (activation == Activation::Gelu) {
      at::Tensor mine = y2d.narrow(1, col_begin, col_end - col_begin);
      at::gelu_(mine);
    }
  });
  return y;
}

}  // namespace
}  // namespace fastembed

// Registers the operator once per process. Returns null, or why it could not be registered.
extern "C" const char* fastembed_register_ops() {
  static std::string error;
  static const bool once = [] {
    try {
      fastembed::kernel = fastembed::choose_kernel();
      // Leaked on purpose: the registration must outlive every module that calls the operator.
      auto* library = new torch::Library(torch::Library::DEF, "fastembed", std::nullopt,
                                         __FILE__, __LINE__);
      library->def(
          "linear(Tensor input, Tensor weight, Tensor? bias=None, str? activation=None) -> Tensor",
          &fastembed::linear);
    } catch (const std::exception& e) {
      error = e.what();
    } catch (...) {
      error = "unknown C++ exception";
    }
    return true;
  }();
  (void)once;
  return error.empty() ? nullptr : error.c_str();
}

// The kernel the operator uses for a few rows: "avx512", "avx2" or "aten".
extern "C" const char* fastembed_linear_kernel() {
  return fastembed::kernel_name(fastembed::kernel);
}
