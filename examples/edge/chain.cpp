#include "chain.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <stdexcept>

#include "json.h"
#include "slimtorch/common.h"
#include "slimtorch/qgemm.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian; so is this reader");

namespace edge {
namespace {

// Sizes a chain file may declare: features fit the kernels' int64 sizes and
// every product below stays far from overflow.
constexpr int64_t kMaxFeatures = (int64_t(1) << 31) - 1;
constexpr int64_t kMaxElements = int64_t(1) << 48;
constexpr uint64_t kMaxHeaderBytes = 100u << 20;
// Python's SparseWeight builds the batch-1 column bitmap from this density
// on (slimtorch/ops/spmm.py BITMAP_MIN_DENSITY: float32 values from 20%, and
// bfloat16 ones where the CPU has AVX512_VBMI2, the others from 30%); the
// same rule here makes the same kernel run.
double bitmap_min_density(const std::string& values_dtype) {
  const bool expands_from_memory =
      values_dtype == "F32" || (values_dtype == "BF16" && slimtorch::cpu_has_avx512_vbmi2());
  return expands_from_memory ? 0.2 : 0.3;
}
// Python's SparseLinear quantizes rows with the int8_dynamic kernel only
// from this many rows on (slimtorch/nn/sparse_linear.py DYNAMIC_MIN_BATCH).
constexpr int64_t kDynamicMinBatch = 32;
// The row scale an int8 row without nonzeros gets (choose_qparams's minimum).
constexpr float kEmptyRowScale = 1.1920928955078125e-07f;

[[noreturn]] void fail(const std::string& message) { throw std::runtime_error(message); }

void check_status(slimtorch::Status status, const std::string& what) {
  if (status != slimtorch::Status::kOk) fail(what + ": kernel returned status " + std::to_string(int(status)));
}

std::vector<uint8_t> read_whole_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) fail("cannot open " + path);
  file.seekg(0, std::ios::end);
  const std::streamoff size = file.tellg();
  if (size < 0) fail("cannot read the size of " + path);
  file.seekg(0, std::ios::beg);
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  if (size > 0 && !file.read(reinterpret_cast<char*>(bytes.data()), size)) fail("cannot read " + path);
  return bytes;
}

struct Tensor {
  std::string dtype;  // safetensors name: F32, F16, BF16, I8, U8, I16, I32, I64
  std::vector<int64_t> shape;
  int64_t numel = 0;
  const uint8_t* data = nullptr;
  bool used = false;
};

int64_t element_size(const std::string& dtype) {
  static const std::map<std::string, int64_t> sizes = {
      {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I8", 1}, {"U8", 1}, {"I16", 2}, {"I32", 4}, {"I64", 8}};
  const auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

// The safetensors container: 8-byte little-endian header length, the JSON
// header, then the tensor data. Every size and offset is checked against the
// file before anything points into it.
struct SafetensorsFile {
  std::vector<uint8_t> bytes;
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;

  explicit SafetensorsFile(const std::string& path) : bytes(read_whole_file(path)) {
    if (bytes.size() < 8) fail("file too short for a safetensors header (" + std::to_string(bytes.size()) + " bytes)");
    uint64_t header_bytes = 0;
    for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | bytes[size_t(i)];
    if (header_bytes > bytes.size() - 8 || header_bytes > kMaxHeaderBytes) {
      fail("header length " + std::to_string(header_bytes) + " does not fit in the file (" +
           std::to_string(bytes.size()) + " bytes)");
    }
    const std::string text(reinterpret_cast<const char*>(bytes.data() + 8), size_t(header_bytes));
    const Json header = Json::parse(text);
    const uint8_t* data = bytes.data() + 8 + header_bytes;
    const uint64_t data_bytes = bytes.size() - 8 - header_bytes;
    for (const std::string& key : header.keys("safetensors header")) {
      const Json& entry = header.at(key, "safetensors header");
      if (key == "__metadata__") {
        for (const std::string& name : entry.keys("__metadata__")) {
          metadata[name] = entry.at(name, "__metadata__").as_string("__metadata__." + name);
        }
        continue;
      }
      const std::string what = "tensor \"" + key + "\"";
      if (entry.keys(what).size() != 3) fail(what + ": expected exactly dtype, shape and data_offsets");
      Tensor tensor;
      tensor.dtype = entry.at("dtype", what).as_string(what + " dtype");
      const int64_t item = element_size(tensor.dtype);
      if (item == 0) fail(what + ": unsupported dtype " + tensor.dtype);
      const std::vector<Json>& shape = entry.at("shape", what).as_array(what + " shape");
      if (shape.size() > 8) fail(what + ": more than 8 dimensions");
      tensor.numel = 1;
      for (const Json& dim : shape) {
        const int64_t size = dim.as_int(what + " shape", 0, kMaxElements);
        // numel <= kMaxElements before, size <= kMaxElements: checked by division.
        if (size != 0 && tensor.numel > kMaxElements / size) fail(what + ": too many elements");
        tensor.numel *= size;
        tensor.shape.push_back(size);
      }
      const std::vector<Json>& offsets = entry.at("data_offsets", what).as_array(what + " data_offsets");
      if (offsets.size() != 2) fail(what + ": data_offsets must hold two numbers");
      const int64_t limit = int64_t(std::min<uint64_t>(data_bytes, uint64_t(kMaxElements) * 8));
      const int64_t begin = offsets[0].as_int(what + " data_offsets", 0, limit);
      const int64_t end = offsets[1].as_int(what + " data_offsets", 0, limit);
      if (end < begin || end - begin != tensor.numel * item) {
        fail(what + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + ") do not hold " +
             std::to_string(tensor.numel) + " " + tensor.dtype + " elements");
      }
      tensor.data = data + begin;
      tensors.emplace(key, std::move(tensor));
    }
  }

  // A 1-d uint8 tensor of any length.
  Tensor& get_stream(const std::string& key) {
    const auto it = tensors.find(key);
    if (it == tensors.end()) fail("tensor \"" + key + "\" is missing");
    if (it->second.shape.size() != 1) fail("tensor \"" + key + "\": expected a 1-d uint8 stream");
    return get(key, {"U8"}, {it->second.shape[0]});
  }

  Tensor& get(const std::string& key, std::initializer_list<const char*> dtypes, std::vector<int64_t> shape) {
    const auto it = tensors.find(key);
    if (it == tensors.end()) fail("tensor \"" + key + "\" is missing");
    Tensor& tensor = it->second;
    bool dtype_ok = false;
    std::string expected;
    for (const char* dtype : dtypes) {
      dtype_ok = dtype_ok || tensor.dtype == dtype;
      expected += (expected.empty() ? "" : "/") + std::string(dtype);
    }
    if (!dtype_ok) fail("tensor \"" + key + "\": expected dtype " + expected + ", got " + tensor.dtype);
    if (tensor.shape != shape) {
      std::string text;
      for (int64_t s : shape) text += (text.empty() ? "" : ", ") + std::to_string(s);
      fail("tensor \"" + key + "\": expected shape [" + text + "]");
    }
    tensor.used = true;
    return tensor;
  }
};

// Element i of an integer tensor (U8, I16, I32, I64), read without assuming alignment.
int64_t load_int(const Tensor& t, int64_t i) {
  if (t.dtype == "U8") return t.data[i];
  if (t.dtype == "I8") return int8_t(t.data[i]);
  if (t.dtype == "I16") {
    int16_t v;
    std::memcpy(&v, t.data + 2 * i, 2);
    return v;
  }
  if (t.dtype == "I32") {
    int32_t v;
    std::memcpy(&v, t.data + 4 * i, 4);
    return v;
  }
  int64_t v;
  std::memcpy(&v, t.data + 8 * i, 8);
  return v;
}

// A float tensor (F32, F16, BF16) as float32, every value finite.
Buffer<float> load_floats(const Tensor& t, const std::string& what) {
  Buffer<float> out(static_cast<size_t>(t.numel));
  for (int64_t i = 0; i < t.numel; ++i) {
    if (t.dtype == "F32") {
      std::memcpy(&out[i], t.data + 4 * i, 4);
    } else {
      uint16_t bits;
      std::memcpy(&bits, t.data + 2 * i, 2);
      out[i] = t.dtype == "F16" ? slimtorch::fp16_to_float(bits) : slimtorch::bf16_to_float(bits);
    }
    if (!std::isfinite(out[i])) fail(what + ": non-finite value at index " + std::to_string(i));
  }
  return out;
}

slimtorch::SparseValues value_type_of(const std::string& dtype) {
  if (dtype == "F32") return slimtorch::SparseValues::kFloat32;
  if (dtype == "F16") return slimtorch::SparseValues::kFloat16;
  if (dtype == "BF16") return slimtorch::SparseValues::kBFloat16;
  return slimtorch::SparseValues::kInt8;
}

void set_columns(Layer& layer, std::vector<int64_t> columns) {
  if (layer.in_features <= 65536) {
    layer.col16.resize(columns.size());
    for (size_t i = 0; i < columns.size(); ++i) layer.col16[i] = uint16_t(columns[i]);  // 65535 max: fits
    layer.matrix.col_idx = layer.col16.data();
  } else {
    layer.col32.assign(columns.begin(), columns.end());
    layer.matrix.col_idx = layer.col32.data();
    layer.matrix.wide_idx = true;
  }
}

// Python's rule (ops/spmm.py _column_bitmap): dense enough and columns
// strictly ascending within every row.
void build_bitmap(Layer& layer, const std::vector<int64_t>& columns, const std::string& values_dtype) {
  const int64_t rows = layer.out_features, cols = layer.in_features;
  const int64_t nnz = int64_t(columns.size());
  const double min_density = bitmap_min_density(values_dtype);
  if (rows == 0 || cols == 0 || double(nnz) < min_density * double(rows) * double(cols)) return;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = layer.row_ptr[r] + 1; k < layer.row_ptr[r + 1]; ++k) {
      if (columns[k] <= columns[k - 1]) return;
    }
  }
  const int64_t blocks = (cols + 15) / 16;
  layer.bitmap.assign(size_t(rows * blocks), 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = layer.row_ptr[r]; k < layer.row_ptr[r + 1]; ++k) {
      layer.bitmap[r * blocks + columns[k] / 16] |= uint16_t(1u << (columns[k] % 16));
    }
  }
  layer.matrix.bitmap = layer.bitmap.data();
}

// The layer's sparse matrix from its row offsets (in layer.row_ptr), the
// column of every stored entry and their values.
void set_matrix(Layer& layer, const std::vector<int64_t>& columns, const Tensor& values) {
  layer.op = Op::kSparse;
  set_columns(layer, columns);
  build_bitmap(layer, columns, values.dtype);
  const size_t bytes = size_t(values.numel * element_size(values.dtype));
  layer.values.resize(bytes);
  if (bytes) std::memcpy(layer.values.data(), values.data, bytes);
  layer.matrix.rows = layer.out_features;
  layer.matrix.cols = layer.in_features;
  layer.matrix.row_ptr = layer.row_ptr.data();
  layer.matrix.values = layer.values.data();
  layer.matrix.value_type = value_type_of(values.dtype);
  layer.matrix.row_scales = layer.row_scales.empty() ? nullptr : layer.row_scales.data();
}

void load_bias(SafetensorsFile& file, const std::string& key, const Json& entry, const std::string& what,
               Layer& layer) {
  if (entry.at("bias", what).as_bool(what + " bias")) {
    layer.bias = load_floats(file.get(key + "bias", {"F32", "F16", "BF16"}, {layer.out_features}), what + " bias");
  }
}

void load_linear(SafetensorsFile& file, const std::string& key, const Json& entry, const std::string& what,
                 Layer& layer) {
  // Every entry stored: the sparse kernel runs it like a SparseLinear of density 1.
  const Tensor& weight = file.get(key + "weight", {"F32", "F16", "BF16"}, {layer.out_features, layer.in_features});
  load_floats(weight, what + " weight");  // rejects NaN / Inf
  layer.row_ptr.resize(size_t(layer.out_features + 1));
  std::vector<int64_t> columns(static_cast<size_t>(weight.numel));
  for (int64_t r = 0; r <= layer.out_features; ++r) layer.row_ptr[r] = r * layer.in_features;
  for (int64_t i = 0; i < weight.numel; ++i) columns[i] = i % layer.in_features;
  set_matrix(layer, columns, weight);
  load_bias(file, key, entry, what, layer);
}

void load_sparse(SafetensorsFile& file, const std::string& key, const Json& entry, const std::string& what,
                 Layer& layer) {
  const int64_t rows = layer.out_features, cols = layer.in_features;
  const int64_t nnz = entry.at("nnz", what).as_int(what + " nnz", 0, kMaxElements);
  const std::string& values_dtype = entry.at("values_dtype", what).as_string(what + " values_dtype");
  static const std::map<std::string, const char*> stored = {
      {"float32", "F32"}, {"float16", "F16"}, {"bfloat16", "BF16"}, {"int8", "I8"}};
  const auto dtype = stored.find(values_dtype);
  if (dtype == stored.end()) fail(what + ": unsupported values_dtype \"" + values_dtype + "\"");
  const bool int8 = values_dtype == "int8";
  const Json& scheme_json = entry.at("scheme", what);
  const std::string scheme = scheme_json.is(Json::Kind::kNull) ? "" : scheme_json.as_string(what + " scheme");
  if (int8 ? scheme != "int8_weight_only" && scheme != "int8_dynamic" : !scheme.empty()) {
    fail(what + ": scheme \"" + scheme + "\" does not go with " + values_dtype + " values");
  }
  layer.dynamic = scheme == "int8_dynamic";

  const Tensor& counts = file.get(key + "row_counts", {"U8", "I16", "I32"}, {rows});
  layer.row_ptr.resize(size_t(rows + 1));
  layer.row_ptr[0] = 0;
  int64_t nonempty = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t count = load_int(counts, r);
    if (count < 0 || count > nnz - layer.row_ptr[r]) fail(what + ": row counts do not add up to nnz");
    layer.row_ptr[r + 1] = layer.row_ptr[r] + count;
    nonempty += count > 0;
  }
  if (layer.row_ptr[rows] != nnz) fail(what + ": row counts do not add up to nnz");
  if (nnz > rows * cols) fail(what + ": more nonzeros than weights");  // both below 2^31: no overflow

  // The values tensor exists with nnz elements: nnz is bounded by the file size.
  const Tensor& values = file.get(key + "values", {dtype->second}, {nnz});
  std::vector<int64_t> columns(static_cast<size_t>(nnz));
  const std::string& encoding = entry.at("columns", what).as_string(what + " columns");
  if (encoding == "plain") {
    const Tensor& stored_columns = file.get(key + "columns", {"U8", "I16", "I32"}, {nnz});
    for (int64_t i = 0; i < nnz; ++i) columns[i] = load_int(stored_columns, i);
  } else if (encoding == "varint_row_deltas") {
    const Tensor& stream = file.get_stream(key + "columns");
    int64_t pos = 0;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t k = layer.row_ptr[r]; k < layer.row_ptr[r + 1]; ++k) {
        uint64_t delta = 0;
        for (int shift = 0;; shift += 7) {
          // A column is below 2^31: five 7-bit groups are the most it needs.
          if (pos >= stream.numel || shift > 28) fail(what + ": malformed column varints");
          const uint8_t byte = stream.data[pos++];
          delta |= uint64_t(byte & 0x7F) << shift;
          if (!(byte & 0x80)) break;
        }
        const bool first = k == layer.row_ptr[r];
        if (!first && delta == 0) fail(what + ": columns must ascend within a row");
        const uint64_t column = first ? delta : uint64_t(columns[k - 1]) + delta;
        if (column >= uint64_t(cols)) fail(what + ": column index out of range");
        columns[k] = int64_t(column);
      }
    }
    if (pos != stream.numel) fail(what + ": column varints hold more bytes than the row counts use");
  } else {
    fail(what + ": unknown columns encoding \"" + encoding + "\"");
  }
  for (int64_t c : columns) {
    if (c < 0 || c >= cols) fail(what + ": column index out of range");
  }
  if (!int8) load_floats(values, what + " values");  // rejects NaN / Inf
  if (int8) {
    const Buffer<float> kept = load_floats(file.get(key + "row_scales", {"F32", "F16", "BF16"}, {nonempty}),
                                           what + " row_scales");
    layer.row_scales.assign(size_t(rows), kEmptyRowScale);
    int64_t next = 0;
    for (int64_t r = 0; r < rows; ++r) {
      if (layer.row_ptr[r + 1] > layer.row_ptr[r]) layer.row_scales[r] = kept[next++];
    }
  }
  set_matrix(layer, columns, values);
  load_bias(file, key, entry, what, layer);
}

void load_int8(SafetensorsFile& file, const std::string& key, const Json& entry, const std::string& what,
               Layer& layer) {
  layer.op = Op::kInt8;
  const int64_t n = layer.out_features, k = layer.in_features;
  layer.scheme = entry.at("scheme", what).as_string(what + " scheme");
  if (layer.scheme != "int8_dynamic" && layer.scheme != "int8_weight_only" && layer.scheme != "int8_static") {
    fail(what + ": unknown scheme \"" + layer.scheme + "\"");
  }
  if (layer.scheme != "int8_weight_only" && k > slimtorch::kQgemmMaxK) {
    fail(what + ": in_features above " + std::to_string(slimtorch::kQgemmMaxK) + " overflow int32 sums");
  }
  if (layer.scheme == "int8_static") {
    const double scale = entry.at("activation_scale", what).as_double(what + " activation_scale");
    layer.activation_scale = float(scale);
    if (!(layer.activation_scale > 0.0f) || !std::isfinite(layer.activation_scale) ||
        !std::isfinite(1.0f / layer.activation_scale)) {
      fail(what + ": activation_scale must be positive with a finite reciprocal");
    }
    layer.activation_zero_point =
        int32_t(entry.at("activation_zero_point", what).as_int(what + " activation_zero_point", 0, 255));
  }
  const Tensor& q = file.get(key + "weight_int8", {"I8"}, {n, k});
  for (int64_t i = 0; i < q.numel; ++i) {
    if (int8_t(q.data[i]) == -128) fail(what + ": weight_int8 holds -128 (symmetric int8 is [-127, 127])");
  }
  layer.weight_scale = load_floats(file.get(key + "weight_scale", {"F32", "F16", "BF16"}, {n}), what + " weight_scale");
  layer.packed.resize(size_t(slimtorch::qgemm_packed_bytes(n, k)));
  layer.colsum.resize(size_t(n));
  check_status(slimtorch::qgemm_pack(reinterpret_cast<const int8_t*>(q.data), n, k, k, layer.packed.data(),
                                     layer.colsum.data()), what + " packing");
  load_bias(file, key, entry, what, layer);
}

}  // namespace

Chain load_chain(const std::string& path) {
  SafetensorsFile file(path);
  const auto text = file.metadata.find("slimtorch_chain");
  if (text == file.metadata.end()) fail("not a chain file: no \"slimtorch_chain\" metadata");
  const Json description = Json::parse(text->second);
  if (description.at("format", "chain").as_string("format") != "slimtorch-chain") fail("format: not \"slimtorch-chain\"");
  const int64_t version = description.at("version", "chain").as_int("version", 0, 1 << 30);
  if (version != 1) fail("version " + std::to_string(version) + " is not supported (this reader knows 1)");
  Chain chain;
  chain.in_features = description.at("in_features", "chain").as_int("in_features", 0, kMaxFeatures);
  chain.out_features = description.at("out_features", "chain").as_int("out_features", 0, kMaxFeatures);
  int64_t width = chain.in_features;
  bool sized = false;
  const std::vector<Json>& entries = description.at("layers", "chain").as_array("layers");
  for (size_t i = 0; i < entries.size(); ++i) {
    const Json& entry = entries[i];
    const std::string key = std::to_string(i) + ".";
    Layer layer;
    layer.name = entry.at("name", "layer " + std::to_string(i)).as_string("layer name");
    const std::string what = "layer " + std::to_string(i) + " (\"" + layer.name + "\")";
    const std::string& op = entry.at("op", what).as_string(what + " op");
    if (op == "relu" || op == "gelu") {
      layer.op = Op::kRelu;
      if (op == "gelu") {
        const std::string& approximate = entry.at("approximate", what).as_string(what + " approximate");
        if (approximate != "none" && approximate != "tanh") fail(what + ": unknown GELU approximation");
        layer.op = approximate == "none" ? Op::kGelu : Op::kGeluTanh;
      }
      layer.in_features = layer.out_features = width;
    } else {
      layer.in_features = entry.at("in_features", what).as_int(what + " in_features", 0, kMaxFeatures);
      layer.out_features = entry.at("out_features", what).as_int(what + " out_features", 0, kMaxFeatures);
      if (layer.in_features != width) {
        fail(what + ": takes " + std::to_string(layer.in_features) + " features, gets " + std::to_string(width));
      }
      if (op == "linear") load_linear(file, key, entry, what, layer);
      else if (op == "sparse_linear") load_sparse(file, key, entry, what, layer);
      else if (op == "int8_linear") load_int8(file, key, entry, what, layer);
      else fail(what + ": unknown op \"" + op + "\"");
      width = layer.out_features;
      sized = true;
    }
    chain.layers.push_back(std::move(layer));
  }
  if (!sized) fail("layers: the chain holds no linear layer");
  if (width != chain.out_features) fail("out_features: the layers give " + std::to_string(width));
  for (const auto& [name, tensor] : file.tensors) {
    if (!tensor.used) fail("tensor \"" + name + "\" belongs to no layer");
  }
  return chain;
}

namespace {

// x + (dequantize(quantize(x)) - x), row by row: what Python's SparseLinear
// feeds the float kernel when the int8_dynamic kernel does not run (same
// operations in the same order, no fused multiply-add: see CMakeLists.txt).
void fake_quantize_rows(float* x, int64_t batch, int64_t k, int n_threads) {
  Buffer<uint8_t> codes(static_cast<size_t>(batch * k));
  Buffer<float> scale(static_cast<size_t>(batch));
  Buffer<int32_t> zero_point(static_cast<size_t>(batch));
  check_status(slimtorch::quantize_rows_u8(x, batch, k, k, codes.data(), k, scale.data(), zero_point.data(),
                                           n_threads), "quantize_rows_u8");
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < k; ++i) {
      float& value = x[b * k + i];
      const float dequantized = (float(codes[b * k + i]) - float(zero_point[b])) * scale[b];
      value = value + (dequantized - value);
    }
  }
}

}  // namespace

std::vector<float> run_chain(const Chain& chain, const float* x, int64_t batch, int n_threads) {
  Buffer<float> current(x, x + batch * chain.in_features);
  for (const Layer& layer : chain.layers) {
    const float* bias = layer.bias.empty() ? nullptr : layer.bias.data();
    const int64_t m = batch, k = layer.in_features, n = layer.out_features;
    Buffer<float> next(static_cast<size_t>(m * n));
    switch (layer.op) {
      case Op::kSparse:
        if (m == 0) break;
        if (layer.dynamic && m >= kDynamicMinBatch && k > 0 && slimtorch::spmm_dynamic_supported(layer.matrix)) {
          check_status(slimtorch::spmm_forward_dynamic(layer.matrix, current.data(), m, k, bias, next.data(), n_threads),
                       layer.name);
        } else {
          if (layer.dynamic) fake_quantize_rows(current.data(), m, k, n_threads);
          check_status(slimtorch::spmm_forward(layer.matrix, current.data(), m, k, bias, next.data(), n_threads),
                       layer.name);
        }
        break;
      case Op::kInt8:
        if (m == 0) break;
        if (layer.scheme == "int8_weight_only") {
          check_status(slimtorch::qlinear_weight_only(current.data(), m, k, k, layer.packed.data(),
                                                      layer.weight_scale.data(), bias, n, next.data(), n, n_threads),
                       layer.name);
        } else {
          const bool is_static = layer.scheme == "int8_static";
          check_status(slimtorch::qlinear_u8s8(current.data(), m, k, k, layer.packed.data(), layer.weight_scale.data(),
                                               layer.colsum.data(), bias, n, next.data(), n,
                                               is_static ? &layer.activation_scale : nullptr,
                                               layer.activation_zero_point, n_threads),
                       layer.name);
        }
        break;
      case Op::kRelu:
        for (size_t i = 0; i < current.size(); ++i) next[i] = current[i] < 0.0f ? 0.0f : current[i];
        break;
      case Op::kGelu:
        for (size_t i = 0; i < current.size(); ++i) {
          const float v = current[i];
          next[i] = 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752f));
        }
        break;
      case Op::kGeluTanh:
        for (size_t i = 0; i < current.size(); ++i) {
          const float v = current[i];
          next[i] = 0.5f * v * (1.0f + std::tanh(0.79788456080286536f * (v + 0.044715f * v * v * v)));
        }
        break;
    }
    current.swap(next);
  }
  return std::vector<float>(current.begin(), current.end());
}

}  // namespace edge
