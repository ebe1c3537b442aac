#include "json.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

namespace edge {

class JsonParser {
 public:
  explicit JsonParser(const std::string& text) : text_(text) {}

  Json parse_document() {
    Json value = parse_value(0);
    skip_space();
    if (pos_ != text_.size()) fail("unexpected text after the JSON value");
    return value;
  }

 private:
  [[noreturn]] void fail(const std::string& message) const {
    throw std::runtime_error("JSON: " + message + " at byte " + std::to_string(pos_));
  }

  void skip_space() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }

  bool consume(char c) {
    if (peek() != c) return false;
    ++pos_;
    return true;
  }

  // An empty object or array: its closing bracket right after the opening one.
  bool at_end_of(char close) {
    skip_space();
    return consume(close);
  }

  // After an item: true on ',' (another item follows), false on the closing bracket.
  bool another_item(char close) {
    skip_space();
    if (consume(',')) return true;
    if (consume(close)) return false;
    fail(std::string("expected ',' or '") + close + "'");
  }

  void expect_word(const char* word) {
    for (const char* c = word; *c; ++c) {
      if (pos_ >= text_.size() || text_[pos_] != *c) fail(std::string("expected '") + word + "'");
      ++pos_;
    }
  }

  Json parse_value(int depth) {
    if (depth > Json::kMaxDepth) fail("nesting deeper than " + std::to_string(Json::kMaxDepth));
    skip_space();
    Json value;
    const char c = peek();
    if (c == '{') {
      value.kind_ = Json::Kind::kObject;
      ++pos_;
      if (at_end_of('}')) return value;
      do {
        skip_space();
        if (peek() != '"') fail("expected a string key");
        std::string key = parse_string();
        if (value.index_.count(key)) fail("duplicate key \"" + key + "\"");
        skip_space();
        if (!consume(':')) fail("expected ':'");
        value.index_.emplace(key, value.items_.size());
        value.keys_.push_back(std::move(key));
        value.items_.push_back(parse_value(depth + 1));
      } while (another_item('}'));
      return value;
    }
    if (c == '[') {
      value.kind_ = Json::Kind::kArray;
      ++pos_;
      if (at_end_of(']')) return value;
      do {
        value.items_.push_back(parse_value(depth + 1));
      } while (another_item(']'));
      return value;
    }
    if (c == '"') {
      value.kind_ = Json::Kind::kString;
      value.text_ = parse_string();
      return value;
    }
    if (c == 't' || c == 'f') {
      value.kind_ = Json::Kind::kBool;
      value.boolean_ = c == 't';
      expect_word(c == 't' ? "true" : "false");
      return value;
    }
    if (c == 'n') {
      expect_word("null");
      return value;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      value.kind_ = Json::Kind::kNumber;
      value.text_ = parse_number();
      return value;
    }
    fail("expected a JSON value");
  }

  static bool is_digit(char c) { return c >= '0' && c <= '9'; }

  // Checks the JSON number grammar and returns the literal.
  std::string parse_number() {
    const size_t start = pos_;
    if (peek() == '-') ++pos_;
    if (peek() == '0') {
      ++pos_;
    } else if (is_digit(peek())) {
      while (is_digit(peek())) ++pos_;
    } else {
      fail("malformed number");
    }
    if (peek() == '.') {
      ++pos_;
      if (!is_digit(peek())) fail("malformed number");
      while (is_digit(peek())) ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!is_digit(peek())) fail("malformed number");
      while (is_digit(peek())) ++pos_;
    }
    if (pos_ - start > 64) fail("number literal too long");
    return text_.substr(start, pos_ - start);
  }

  unsigned hex4() {
    if (text_.size() - pos_ < 4) fail("truncated \\u escape");
    unsigned code = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_++];
      code <<= 4;
      if (c >= '0' && c <= '9') code |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f') code |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') code |= unsigned(c - 'A' + 10);
      else fail("bad hex digit in \\u escape");
    }
    return code;
  }

  static void append_utf8(std::string& out, unsigned code) {
    if (code < 0x80) {
      out += char(code);
    } else if (code < 0x800) {
      out += char(0xC0 | (code >> 6));
      out += char(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += char(0xE0 | (code >> 12));
      out += char(0x80 | ((code >> 6) & 0x3F));
      out += char(0x80 | (code & 0x3F));
    } else {
      out += char(0xF0 | (code >> 18));
      out += char(0x80 | ((code >> 12) & 0x3F));
      out += char(0x80 | ((code >> 6) & 0x3F));
      out += char(0x80 | (code & 0x3F));
    }
  }

  std::string parse_string() {
    ++pos_;  // the opening quote
    std::string out;
    while (true) {
      if (pos_ >= text_.size()) fail("unterminated string");
      const unsigned char c = static_cast<unsigned char>(text_[pos_++]);
      if (c == '"') return out;
      if (c < 0x20) fail("control character in string");
      if (c != '\\') {
        out += char(c);
        continue;
      }
      if (pos_ >= text_.size()) fail("unterminated escape");
      const char e = text_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned code = hex4();
          if (code >= 0xD800 && code < 0xDC00) {  // high surrogate: a low one must follow
            if (text_.size() - pos_ < 2 || text_[pos_] != '\\' || text_[pos_ + 1] != 'u') fail("lone surrogate");
            pos_ += 2;
            const unsigned low = hex4();
            if (low < 0xDC00 || low >= 0xE000) fail("bad surrogate pair");
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          } else if (code >= 0xDC00 && code < 0xE000) {
            fail("lone surrogate");
          }
          append_utf8(out, code);
          break;
        }
        default: fail("unknown escape");
      }
    }
  }

  const std::string& text_;
  size_t pos_ = 0;
};

Json Json::parse(const std::string& text) { return JsonParser(text).parse_document(); }

namespace {
[[noreturn]] void type_error(const std::string& what, const char* expected) {
  throw std::runtime_error(what + ": expected " + expected);
}
}  // namespace

bool Json::as_bool(const std::string& what) const {
  if (kind_ != Kind::kBool) type_error(what, "true or false");
  return boolean_;
}

const std::string& Json::as_string(const std::string& what) const {
  if (kind_ != Kind::kString) type_error(what, "a string");
  return text_;
}

double Json::as_double(const std::string& what) const {
  if (kind_ != Kind::kNumber) type_error(what, "a number");
  errno = 0;
  const double value = std::strtod(text_.c_str(), nullptr);
  if (errno == ERANGE || !std::isfinite(value)) type_error(what, "a finite number");
  return value;
}

int64_t Json::as_int(const std::string& what, int64_t minimum, int64_t maximum) const {
  if (kind_ != Kind::kNumber || text_.find_first_of(".eE") != std::string::npos) type_error(what, "an integer");
  errno = 0;
  char* end = nullptr;
  const long long value = std::strtoll(text_.c_str(), &end, 10);
  if (errno == ERANGE || *end != '\0' || value < minimum || value > maximum) {
    throw std::runtime_error(what + ": expected an integer in [" + std::to_string(minimum) + ", " +
                             std::to_string(maximum) + "], got " + text_);
  }
  return value;
}

const std::vector<Json>& Json::as_array(const std::string& what) const {
  if (kind_ != Kind::kArray) type_error(what, "an array");
  return items_;
}

const std::vector<std::string>& Json::keys(const std::string& what) const {
  if (kind_ != Kind::kObject) type_error(what, "an object");
  return keys_;
}

const Json* Json::find(const std::string& key) const {
  if (kind_ != Kind::kObject) return nullptr;
  const auto it = index_.find(key);
  return it == index_.end() ? nullptr : &items_[it->second];
}

const Json& Json::at(const std::string& key, const std::string& what) const {
  if (kind_ != Kind::kObject) type_error(what, "an object");
  const Json* value = find(key);
  if (value == nullptr) throw std::runtime_error(what + ": missing \"" + key + "\"");
  return *value;
}

}  // namespace edge
