// The libtorch operators exported bundles call for their float linear layers:
//
// - `fastembed::pack_linear_weight(weight)`: nn.Linear's [n, k] weight in the packed layout of
//   packed.h, done once at export; `fastembed::unpack_linear_weight(packed, n)` gives it back.
// - `fastembed::packed_linear(input, packed, n, bias, activation)`: `aten::linear` on a packed
//   weight, optionally followed by GELU. With AVX-512 or AVX2 it runs the GEMM of
//   packed_kernel.h; otherwise (or for other dtypes, or where autograd needs the graph) it unpacks
//   the weight and calls `at::addmm` (MKL).
// - `fastembed::linear(input, weight, bias, activation)`: the same on a plain weight, through
//   `at::linear`; bundles of export revision 5 call it.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <c10/core/GradMode.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "packed.h"

namespace fastembed {
namespace {

// Up to this many rows the AVX2 kernel beats MKL held to AVX2 (MKL_ENABLE_INSTRUCTIONS=AVX2,
// bench/linear_forms.py); past it the weight is unpacked for at::addmm. The AVX-512 kernel
// matches MKL at every row count and takes them all.
constexpr int64_t kMaxRowsAvx2 = 64;

enum class Kernel { Aten, Avx2, Avx512 };

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

// Into how many row parts to split `rows` so that `panels` x parts keeps `threads` busy: 1 when
// the panels alone do; never parts of fewer than kMinRowsPerPart rows (a part reads every weight
// of its panels, so tiny parts would multiply the weight traffic for little arithmetic).
constexpr int64_t kMinRowsPerPart = 16;

int64_t row_split(int64_t rows, int64_t panels, int64_t threads) {
  if (panels >= threads || rows < 2 * kMinRowsPerPart) return 1;
  const int64_t wanted = (threads + panels - 1) / panels;
  return std::max<int64_t>(1, std::min(wanted, rows / kMinRowsPerPart));
}

// Whether the own kernel takes this call; the checks the operator's contract needs are done.
bool kernel_applies(const at::Tensor& input, const at::Tensor& packed,
                    const std::optional<at::Tensor>& bias) {
  if (kernel == Kernel::Aten) return false;
  if (input.device().type() != c10::DeviceType::CPU || input.layout() != at::kStrided ||
      input.scalar_type() != at::kFloat || input.numel() == 0)
    return false;
  if (packed.device().type() != c10::DeviceType::CPU || packed.layout() != at::kStrided ||
      packed.scalar_type() != at::kFloat || !packed.is_contiguous())
    return false;
  if (bias.has_value() && bias->defined() &&
      (bias->device().type() != c10::DeviceType::CPU || bias->scalar_type() != at::kFloat ||
       !bias->is_contiguous()))
    return false;
  if (c10::GradMode::is_enabled() &&
      (input.requires_grad() || packed.requires_grad() ||
       (bias.has_value() && bias->defined() && bias->requires_grad())))
    return false;
  const int64_t rows = input.numel() / input.size(-1);
  return kernel == Kernel::Avx512 || rows <= kMaxRowsAvx2;
}

// The activations a linear layer's output can go through inside the operator.
enum class Activation { None, Gelu };

Activation parse_activation(const std::optional<c10::string_view>& name) {
  if (!name.has_value()) return Activation::None;
  if (*name == "gelu") return Activation::Gelu;  // exact (erf) GELU, as torch.nn.functional.gelu
  TORCH_CHECK(false, "fastembed: unknown activation '", std::string(*name),
              "'; expected None or 'gelu'");
}

at::Tensor apply(Activation activation, at::Tensor out) {
  return activation == Activation::Gelu ? at::gelu(out) : out;
}

at::Tensor linear(const at::Tensor& input, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias,
                  std::optional<c10::string_view> activation) {
  return apply(parse_activation(activation), at::linear(input, weight, bias));
}

at::Tensor pack_linear_weight(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2, "fastembed::pack_linear_weight: expected a 2-D [out, in] weight, got ",
              weight.dim(), " dimensions");
  const int64_t n = weight.size(0);
  const int64_t k = weight.size(1);
  const int64_t panels = packed::panels(n);
  const at::Tensor padded = at::constant_pad_nd(weight, {0, 0, 0, panels * packed::kPanel - n});
  return padded.view({panels, packed::kPanel, k}).transpose(1, 2).contiguous();
}

// Checks that `packed` is a packed weight of `out_features` outputs; returns its k.
int64_t check_packed(const char* op, const at::Tensor& packed, int64_t out_features) {
  TORCH_CHECK(out_features > 0, "fastembed::", op, ": out_features must be positive, got ",
              out_features);
  TORCH_CHECK(packed.dim() == 3 && packed.size(0) == packed::panels(out_features) &&
                  packed.size(2) == packed::kPanel,
              "fastembed::", op, ": the weight ", packed.sizes(), " is not a packed weight of ",
              out_features, " outputs (expected [", packed::panels(out_features), ", in, ",
              packed::kPanel, "]; see fastembed::pack_linear_weight)");
  return packed.size(1);
}

// The packed weight as the [k, n] matrix wᵀ (a strided view of a copy).
at::Tensor transposed(const at::Tensor& packed, int64_t n) {
  const int64_t k = packed.size(1);
  return packed.permute({1, 0, 2}).reshape({k, packed.size(0) * packed::kPanel}).narrow(1, 0, n);
}

at::Tensor unpack_linear_weight(const at::Tensor& packed, int64_t out_features) {
  check_packed("unpack_linear_weight", packed, out_features);
  return transposed(packed, out_features).t().contiguous();
}

at::Tensor packed_linear(const at::Tensor& input, const at::Tensor& weight, int64_t out_features,
                         const std::optional<at::Tensor>& bias,
                         std::optional<c10::string_view> activation_name) {
  const Activation activation = parse_activation(activation_name);
  const int64_t k = check_packed("packed_linear", weight, out_features);
  const int64_t n = out_features;
  TORCH_CHECK(input.dim() >= 1, "fastembed::packed_linear: the input is a scalar; expected [..., ",
              k, "]");
  TORCH_CHECK(input.size(-1) == k, "fastembed::packed_linear: the input has ", input.size(-1),
              " features, the layer takes ", k);
  const bool has_bias = bias.has_value() && bias->defined();
  TORCH_CHECK(!has_bias || (bias->dim() == 1 && bias->size(0) == n),
              "fastembed::packed_linear: the bias has shape ", has_bias ? bias->sizes() : at::IntArrayRef{},
              ", the layer has ", n, " outputs");
  std::vector<int64_t> out_sizes = input.sizes().vec();
  out_sizes.back() = n;
  if (!kernel_applies(input, weight, bias)) {
    // [rows, k] (flatten, not reshape(-1, k), which cannot infer rows when k is 0)
    const at::Tensor x = input.dim() == 1 ? input.unsqueeze(0) : input.flatten(0, -2);
    const at::Tensor w = transposed(weight, n);
    return apply(activation, (has_bias ? at::addmm(*bias, x, w) : at::mm(x, w)).view(out_sizes));
  }
  const at::Tensor x = input.contiguous();
  at::Tensor y = at::empty(out_sizes, input.options());
  const packed::Problem problem{x.const_data_ptr<float>(),
                                x.numel() / k,
                                k,
                                weight.const_data_ptr<float>(),
                                n,
                                has_bias ? bias->const_data_ptr<float>() : nullptr,
                                y.mutable_data_ptr<float>()};
  const auto run = kernel == Kernel::Avx512 ? packed::linear_avx512 : packed::linear_avx2;
  const at::Tensor y2d = y.view({problem.m, n});
  // Work is split over panels of 64 output columns; when there are fewer panels than threads
  // (a 384-wide layer has 6) the rows are split too, so that every thread has work. Each output
  // is still computed by one tile walking k in the same order, so the result is bit-identical
  // whatever the split.
  const int64_t panel_count = packed::panels(n);
  const int64_t row_parts = row_split(problem.m, panel_count, at::get_num_threads());
  const int64_t rows_per_part = (problem.m + row_parts - 1) / row_parts;
  // OpenMP workers do not inherit the caller's thread-local state (inference mode, grad mode),
  // which at::gelu_ on them needs.
  const at::ThreadLocalState caller_state;
  at::parallel_for(0, panel_count * row_parts, 1, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard state_guard(caller_state);
    for (int64_t item = begin; item < end;) {
      // a run of panels of one row part
      const int64_t part = item / panel_count;
      const int64_t panel_begin = item % panel_count;
      const int64_t panel_end = std::min(panel_count, panel_begin + (end - item));
      item += panel_end - panel_begin;
      const int64_t row0 = part * rows_per_part;
      const int64_t rows = std::min(rows_per_part, problem.m - row0);
      if (rows <= 0) continue;
      packed::Problem mine = problem;
      mine.x += row0 * k;
      mine.y += row0 * n;
      mine.m = rows;
      run(mine, panel_begin, panel_end);
    }
  });
  // The same GELU kernel as aten::gelu, in the same call, over contiguous blocks of whole rows:
  // aten::gelu_ computes a strided block (a thread's columns) slightly differently from a
  // contiguous run (up to 5e-7), so blocks of whole rows keep every value independent of how
  // the matrix product was split; applied row by row it cost 20 us a row in dispatch.
  if (activation == Activation::Gelu) {
    at::parallel_for(0, problem.m, std::max<int64_t>(1, 16384 / n), [&](int64_t begin, int64_t end) {
      const at::ThreadLocalStateGuard state_guard(caller_state);
      at::Tensor block = y2d.narrow(0, begin, end - begin);
      at::gelu_(block);
    });
  }
  return y;
}

}  // namespace
}  // namespace fastembed

// Registers the operators once per process. Returns null, or why it could not be registered.
extern "C" const char* fastembed_register_ops() {
  static std::string error;
  static const bool once = [] {
    try {
      fastembed::kernel = fastembed::choose_kernel();
      // Leaked on purpose: the registration must outlive every module that calls the operator.
      auto* library = new torch::Library(torch::Library::DEF, "fastembed", std::nullopt,
                                         __FILE__, __LINE__);
      library->def("pack_linear_weight(Tensor weight) -> Tensor", &fastembed::pack_linear_weight);
      library->def("unpack_linear_weight(Tensor packed, int out_features) -> Tensor",
                   &fastembed::unpack_linear_weight);
      library->def(
          "packed_linear(Tensor input, Tensor weight, int out_features, Tensor? bias=None, "
          "str? activation=None) -> Tensor",
          &fastembed::packed_linear);
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

// The kernel fastembed::packed_linear uses: "avx512", "avx2" or "aten".
extern "C" const char* fastembed_linear_kernel() {
  return fastembed::kernel_name(fastembed::kernel);
}
