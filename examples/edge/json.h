// A small strict JSON reader for the two JSON texts of a chain file: the
// safetensors header and the chain description inside its metadata.
//
// Strict: one value, nothing after it but whitespace; no comments, no
// trailing commas, no duplicate object keys, no control characters in
// strings; nesting at most kMaxDepth deep (so hostile input cannot exhaust
// the stack). Errors throw std::runtime_error with the byte offset.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace edge {

class Json {
 public:
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };

  static constexpr int kMaxDepth = 32;

  // Parses `text` completely or throws std::runtime_error.
  static Json parse(const std::string& text);

  Kind kind() const { return kind_; }
  bool is(Kind kind) const { return kind_ == kind; }

  // Typed access; each throws std::runtime_error naming `what` on a mismatch.
  bool as_bool(const std::string& what) const;
  const std::string& as_string(const std::string& what) const;
  double as_double(const std::string& what) const;
  // An integer written without fraction or exponent, in [minimum, maximum].
  int64_t as_int(const std::string& what, int64_t minimum, int64_t maximum) const;
  const std::vector<Json>& as_array(const std::string& what) const;
  // An object's keys, in file order.
  const std::vector<std::string>& keys(const std::string& what) const;

  // Member `key` of an object (`what` names the object in errors); at
  // throws when it is absent, find returns nullptr.
  const Json& at(const std::string& key, const std::string& what) const;
  const Json* find(const std::string& key) const;

 private:
  friend class JsonParser;
  Kind kind_ = Kind::kNull;
  bool boolean_ = false;
  std::string text_;  // a string's value, or a number's literal text
  std::vector<Json> items_;             // array elements, or object values
  std::vector<std::string> keys_;       // object keys, parallel to items_
  std::map<std::string, size_t> index_;  // object key -> position
};

}  // namespace edge
