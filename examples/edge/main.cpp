// edge_chain: runs a model exported with slimtorch.export_chain, with no
// Python and no torch: only the slimtorch kernel library.
//
//   edge_chain MODEL INPUT [--logits FILE] [--threads N] [--batch ROWS]
//
// INPUT: raw little-endian float32 rows of the model's in_features values
// (numpy: x.astype("<f4").tofile(path)). Prints the predicted class (argmax
// of each output row; the first maximum, or the first NaN as torch.argmax
// does) one per line; --logits also writes the output rows as raw float32.
// The rows run as one batch, as a Python call on the whole input does, or in
// chunks of --batch rows. Exit status: 0 on success, 1 for an unreadable or
// malformed file, 2 for bad usage.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "chain.h"

namespace {

int usage(const char* message) {
  std::fprintf(stderr, "edge_chain: %s\nusage: edge_chain MODEL INPUT [--logits FILE] [--threads N] [--batch ROWS]\n",
               message);
  return 2;
}

bool parse_positive(const char* text, long long* out) {
  char* end = nullptr;
  const long long value = std::strtoll(text, &end, 10);
  if (end == text || *end != '\0' || value < 1 || value > (1LL << 40)) return false;
  *out = value;
  return true;
}

std::vector<float> read_rows(const std::string& path, int64_t features, int64_t* rows) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error("cannot open " + path);
  file.seekg(0, std::ios::end);
  const std::streamoff size = file.tellg();
  file.seekg(0, std::ios::beg);
  const int64_t row_bytes = features * int64_t(sizeof(float));
  if (size < 0 || size % row_bytes != 0) {
    throw std::runtime_error(path + ": " + std::to_string(size) + " bytes is not a whole number of rows of " +
                             std::to_string(features) + " float32 values");
  }
  *rows = size / row_bytes;
  std::vector<float> x(size_t(size / int64_t(sizeof(float))));
  if (size > 0 && !file.read(reinterpret_cast<char*>(x.data()), size)) throw std::runtime_error("cannot read " + path);
  return x;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage("expected MODEL and INPUT");
  const std::string model_path = argv[1], input_path = argv[2];
  std::string logits_path;
  long long threads = std::max(1u, std::thread::hardware_concurrency());
  long long batch_rows = 0;  // 0: all rows at once
  for (int i = 3; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) return usage(("missing value after " + flag).c_str());
    const char* value = argv[++i];
    if (flag == "--logits") {
      logits_path = value;
    } else if (flag == "--threads") {
      if (!parse_positive(value, &threads) || threads > 1024) return usage("--threads: expected 1..1024");
    } else if (flag == "--batch") {
      if (!parse_positive(value, &batch_rows)) return usage("--batch: expected a positive number of rows");
    } else {
      return usage(("unknown option " + flag).c_str());
    }
  }
  try {
    const edge::Chain chain = edge::load_chain(model_path);
    if (chain.in_features == 0) throw std::runtime_error("the model takes 0 input features");
    int64_t rows = 0;
    const std::vector<float> x = read_rows(input_path, chain.in_features, &rows);
    const int64_t step = batch_rows > 0 ? batch_rows : std::max<int64_t>(rows, 1);
    std::vector<float> logits;
    logits.reserve(size_t(rows * chain.out_features));
    for (int64_t start = 0; start < rows; start += step) {
      const int64_t count = std::min(step, rows - start);
      const std::vector<float> y = edge::run_chain(chain, x.data() + start * chain.in_features, count, int(threads));
      logits.insert(logits.end(), y.begin(), y.end());
    }
    std::string predictions;
    for (int64_t r = 0; r < rows && chain.out_features > 0; ++r) {
      const float* row = logits.data() + r * chain.out_features;
      int64_t best = 0;
      for (int64_t j = 0; j < chain.out_features; ++j) {
        if (std::isnan(row[j])) {
          best = j;
          break;
        }
        if (row[j] > row[best]) best = j;
      }
      predictions += std::to_string(best) + "\n";
    }
    std::fputs(predictions.c_str(), stdout);
    if (!logits_path.empty()) {
      std::ofstream out(logits_path, std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(logits.data()), std::streamsize(logits.size() * sizeof(float)));
      if (!out) throw std::runtime_error("cannot write " + logits_path);
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "edge_chain: error: %s\n", error.what());
    return 1;
  }
  return 0;
}
