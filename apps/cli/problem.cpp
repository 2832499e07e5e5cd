#include "problem.h"

#include <algorithm>
#include <filesystem>
#include <random>
#include <sstream>
#include <system_error>
#include <vector>

#include "burst/documents.h"
#include "burst/npy.h"
#include "burst/error.h"

namespace burst::cli {
namespace {

// Bounds every tensor so that byte counts stay far from int64 overflow; larger problems would
// not fit in memory anyway.
constexpr double kMaxElements = 1099511627776.0;  // 2^40

void check_elements(const char* what, std::int64_t b, std::int64_t s, std::int64_t h,
                    std::int64_t d) {
  const double n = static_cast<double>(b) * static_cast<double>(s) * static_cast<double>(h) *
                   static_cast<double>(d);
  BURST_CHECK(n <= kMaxElements, what, ": expected at most 2^40 elements, got ", n, " (b ", b,
              ", s ", s, ", h ", h, ", d ", d, ")");
}

// Stores fp32 values into `t` (fp32 or bf16, dense); bf16 rounds to nearest even.
void store(const Tensor& t, const float* values) {
  const auto n = static_cast<std::size_t>(t.view().numel());
  if (t.view().dtype == DType::kF32) {
    std::copy_n(values, n, t.data<float>());
  } else {
    bf16_bits* out = t.data<bf16_bits>();
    for (std::size_t i = 0; i < n; ++i) out[i] = float_to_bf16(values[i]);
  }
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::ostringstream os;
  os << "(";
  for (std::size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << (shape.size() == 1 ? ",)" : ")");
  return os.str();
}

// Reads a float32 [b, s, h, d] file; `flag` names it in errors.
NpyArray read_rank4(const std::string& path, const char* flag) {
  NpyArray a = read_npy(path, flag);
  BURST_CHECK(a.shape.size() == 4, flag, ": expected a 4-D array [b, s, h, d], got shape ",
              shape_text(a.shape), " in '", path, "'");
  for (std::int64_t dim : a.shape) {
    BURST_CHECK(dim >= 1, flag, ": expected every dimension >= 1, got shape ", shape_text(a.shape));
  }
  check_elements(flag, a.shape[0], a.shape[1], a.shape[2], a.shape[3]);
  return a;
}

Tensor tensor_from(const NpyArray& a, DType dtype) {
  Tensor t(dtype, a.shape[0], a.shape[1], a.shape[2], a.shape[3]);
  store(t, a.data.data());
  return t;
}

void load_files(const RunArgs& args, Problem& p) {
  BURST_CHECK(args.size_flags.empty(), args.size_flags.front(),
              ": expected no size flags with --q (the .npy shapes set the sizes), got one");
  BURST_CHECK(!args.k_path.empty(), "--k: expected a K.npy file since --q is given, got none");
  BURST_CHECK(!args.v_path.empty(), "--v: expected a V.npy file since --q is given, got none");
  const NpyArray q = read_rank4(args.q_path, "--q");
  const NpyArray k = read_rank4(args.k_path, "--k");
  const NpyArray v = read_rank4(args.v_path, "--v");
  BURST_CHECK(k.shape[0] == q.shape[0], "--k: expected batch ", q.shape[0], " like --q, got ",
              k.shape[0]);
  BURST_CHECK(k.shape[3] == q.shape[3], "--k: expected head_dim ", q.shape[3], " like --q, got ",
              k.shape[3]);
  BURST_CHECK(v.shape == k.shape, "--v: expected the shape of --k ", shape_text(k.shape), ", got ",
              shape_text(v.shape));
  BURST_CHECK(q.shape[2] % k.shape[2] == 0, "--k: expected a head count dividing the ",
              q.shape[2], " heads of --q, got ", k.shape[2]);
  BURST_CHECK(q.shape[3] <= kernels::kMaxHeadDim, "--q: expected head_dim <= ",
              kernels::kMaxHeadDim, ", got ", q.shape[3]);
  p.q = tensor_from(q, args.dtype);
  p.k = tensor_from(k, args.dtype);
  p.v = tensor_from(v, args.dtype);
  if (!args.do_path.empty()) {
    const NpyArray dout = read_rank4(args.do_path, "--do");
    BURST_CHECK(dout.shape == q.shape, "--do: expected the shape of --q ", shape_text(q.shape),
                ", got ", shape_text(dout.shape));
    p.dout = tensor_from(dout, args.dtype);
  }
}

void make_random(const RunArgs& args, Problem& p) {
  const std::int64_t kv_heads = args.kv_heads.value_or(args.heads);
  const std::int64_t seqlen_k = args.seqlen_k.value_or(args.seqlen);
  BURST_CHECK(args.heads % kv_heads == 0, "--kv-heads: expected a divisor of --heads ",
              args.heads, ", got ", kv_heads);
  BURST_CHECK(args.head_dim <= kernels::kMaxHeadDim, "--head-dim: expected at most ",
              kernels::kMaxHeadDim, ", got ", args.head_dim);
  check_elements("q", args.batch, args.seqlen, args.heads, args.head_dim);
  check_elements("k", args.batch, seqlen_k, kv_heads, args.head_dim);
  std::mt19937_64 rng(args.seed);
  p.q = random_tensor(rng, args.dtype, args.batch, args.seqlen, args.heads, args.head_dim);
  p.k = random_tensor(rng, args.dtype, args.batch, seqlen_k, kv_heads, args.head_dim);
  p.v = random_tensor(rng, args.dtype, args.batch, seqlen_k, kv_heads, args.head_dim);
}

}  // namespace

// Normal(0, 1) values, so scores have a realistic spread and no tensor is all zeros. One
// generator feeds q, k, v, dO in that order, so --backward does not change q, k and v.
Tensor random_tensor(std::mt19937_64& rng, DType dtype, std::int64_t b, std::int64_t s,
                     std::int64_t h, std::int64_t d) {
  Tensor t(dtype, b, s, h, d);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values(static_cast<std::size_t>(t.view().numel()));
  for (float& x : values) x = normal(rng);
  store(t, values.data());
  return t;
}


std::vector<std::int64_t> documents_of(const RunArgs& args, std::int64_t seqlen, std::string_view source) {
  if (!args.has_documents()) return {};
  const std::string flag = !args.doc_lens.empty()        ? "--doc-lens"
                           : !args.doc_lens_path.empty() ? "--doc-lens-from"
                                                         : "--doc-dist";
  // The kernels' limit, checked before drawing or reading a length list that long.
  constexpr std::int64_t kMaxDocumentTokens = std::int64_t{1} << 31;
  BURST_CHECK(seqlen <= kMaxDocumentTokens, flag, ": packed documents take at most 2^31 tokens, got a sequence of ",
              seqlen, " (", source, ")");
  std::vector<std::int64_t> lengths;
  std::string what = "lengths";
  if (!args.doc_lens.empty()) {
    lengths = args.doc_lens;
  } else if (!args.doc_lens_path.empty()) {
    lengths = algo::read_document_lengths(args.doc_lens_path, flag);
    what = "the lengths in '" + args.doc_lens_path + "'";
  } else {
    lengths = algo::draw_document_lengths(args.doc_dist, seqlen, args.seed, flag);  // fills the sequence exactly
  }
  std::vector<std::int64_t> bounds = algo::document_boundaries(lengths, flag);
  BURST_CHECK(bounds.back() == seqlen, flag, ": expected ", what, " to sum to the sequence length ", seqlen, " (", source,
              "), got ", bounds.back(), " (", lengths.size(), lengths.size() == 1 ? " document)" : " documents)");
  return bounds;
}

kernels::MaskSpec mask_of(const RunArgs& args, std::span<const std::int64_t> documents) {
  kernels::MaskSpec m;
  m.causal = args.causal;
  m.window_left = args.window_left;
  m.window_right = args.window_right;
  m.documents = documents;
  return m;
}

Problem make_problem(const RunArgs& args) {
  const bool any_file = !args.k_path.empty() || !args.v_path.empty() || !args.do_path.empty();
  BURST_CHECK(args.from_files() || !any_file,
              "--q: expected a Q.npy file since --k, --v or --do is given, got none");
  Problem p;
  p.from_files = args.from_files();
  if (p.from_files) {
    load_files(args, p);
  } else {
    make_random(args, p);
  }
  p.backward = args.backward || !args.do_path.empty();
  if (p.backward && p.dout.view().data == nullptr) {
    // Seeded apart from q, k, v so that dO is not a copy of q when the sizes agree.
    std::mt19937_64 rng(args.seed ^ 0x9e3779b97f4a7c15ull);
    p.dout = random_tensor(rng, args.dtype, p.batch(), p.seqlen_q(), p.heads(), p.head_dim());
  }

  if (args.has_documents()) {
    // Documents cover the keys; queries must lie among them (bottom-right aligned).
    const char* source = p.from_files ? "the --k file" : args.seqlen_k ? "--seqlen-k" : "--seqlen";
    p.documents = documents_of(args, p.seqlen_k(), source);
    BURST_CHECK(p.seqlen_q() <= p.seqlen_k(), "--seqlen: packed documents need the queries among the keys "
                "(seqlen_q <= seqlen_k ", p.seqlen_k(), "), got seqlen_q ", p.seqlen_q());
  }
  kernels::AttentionOptions& o = p.options;
  o.mask = mask_of(args, p.documents);
  // Bottom-right alignment: the queries are the last seqlen_q of the seqlen_k key positions
  // (a negative offset when seqlen_q > seqlen_k: the first queries precede every key).
  o.q_pos.offset = p.seqlen_k() - p.seqlen_q();
  o.k_pos.offset = 0;
  o.scale = args.scale;
  o.threads = args.threads;
  o.isa = args.isa;
  if (args.block_m > 0) o.block_m = args.block_m;
  if (args.block_n > 0) o.block_n = args.block_n;
  return p;
}

void save_outputs(Outputs& outputs, const std::string& dir, const ForwardOutputs& fwd, const Gradients* grads) {
  const TensorView& o = fwd.out.view();
  const std::vector<std::int64_t> o_shape{o.b, o.s, o.h, o.d};
  const auto save = [&](const char* name, const float* data, const std::vector<std::int64_t>& shape) {
    outputs.write((std::filesystem::path(dir) / name).string(),
                  [&](const std::string& temporary) { write_npy(temporary, data, shape); });
  };
  if (o.dtype == DType::kF32) {
    save("o.npy", fwd.out.data<float>(), o_shape);
  } else {
    std::vector<float> values(static_cast<std::size_t>(o.numel()));
    const bf16_bits* bits = fwd.out.data<bf16_bits>();
    for (std::size_t i = 0; i < values.size(); ++i) values[i] = bf16_to_float(bits[i]);
    save("o.npy", values.data(), o_shape);
  }
  save("lse.npy", fwd.lse.data(), {o.b, o.h, o.s});
  if (grads != nullptr) {
    const auto write = [&](const char* name, const Tensor& t) {
      const TensorView& g = t.view();
      save(name, t.data<float>(), {g.b, g.s, g.h, g.d});
    };
    write("dq.npy", grads->dq);
    write("dk.npy", grads->dk);
    write("dv.npy", grads->dv);
  }
}

}  // namespace burst::cli
