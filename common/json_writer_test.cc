#include "common/json_writer.h"

#include <cmath>
#include <limits>
#include <string>

#include "gtest/gtest.h"

namespace dexec {
namespace {

TEST(JsonWriter, PlacesCommasInNestedObjectsAndArrays) {
  JsonWriter w;
  w.BeginObject();
  w.Key("id");
  w.Uint(18446744073709551615ull);
  w.Key("tags");
  w.BeginArray();
  w.String("a");
  w.BeginObject();
  w.EndObject();
  w.BeginArray();
  w.EndArray();
  w.Int(-7);
  w.EndArray();
  w.Key("ok");
  w.Bool(true);
  w.Key("none");
  w.Null();
  w.EndObject();
  EXPECT_EQ(w.str(), R"({"id":18446744073709551615,"tags":["a",{},[],-7],)"
                     R"("ok":true,"none":null})");
}

TEST(JsonWriter, EscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(JsonWriter::Quote("a\"b\\c"), R"("a\"b\\c")");
  EXPECT_EQ(JsonWriter::Quote("\n\r\t\b\f"), R"("\n\r\t\b\f")");
  EXPECT_EQ(JsonWriter::Quote(std::string("\x01\x1f\x7f", 3)),
            R"("\u0001\u001f\u007f")");
  EXPECT_EQ(JsonWriter::Quote(std::string("a\0b", 3)), R"("a\u0000b")");
  // "</script>" stays as is: the dashboard never puts JSON inside HTML.
  EXPECT_EQ(JsonWriter::Quote("</x>"), R"("</x>")");
}

TEST(JsonWriter, KeepsValidUtf8) {
  const std::string s = "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80";
  EXPECT_EQ(JsonWriter::Quote(s), "\"" + s + "\"");
}

TEST(JsonWriter, ReplacesInvalidUtf8WithReplacementCharacter) {
  const std::string kFffd = "\xEF\xBF\xBD";
  // A stray continuation byte, a truncated sequence at the end.
  EXPECT_EQ(JsonWriter::Quote("a\x80z"), "\"a" + kFffd + "z\"");
  EXPECT_EQ(JsonWriter::Quote("a\xE2\x82"), "\"a" + kFffd + kFffd + "\"");
  // Overlong "/" (C0 AF), a UTF-16 surrogate (ED A0 80), above U+10FFFF.
  EXPECT_EQ(JsonWriter::Quote("\xC0\xAF"), "\"" + kFffd + kFffd + "\"");
  EXPECT_EQ(JsonWriter::Quote("\xED\xA0\x80"),
            "\"" + kFffd + kFffd + kFffd + "\"");
  EXPECT_EQ(JsonWriter::Quote("\xF4\x90\x80\x80"),
            "\"" + kFffd + kFffd + kFffd + kFffd + "\"");
  // A bad lead byte does not swallow the valid sequence after it.
  EXPECT_EQ(JsonWriter::Quote("\xFF\xC3\xA9"), "\"" + kFffd + "\xC3\xA9\"");
}

TEST(JsonWriter, EveryByteValueGivesValidOutput) {
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  const std::string q = JsonWriter::Quote(all);
  // No raw control character and no byte >= 0x80 outside a valid sequence.
  for (size_t i = 0; i < q.size(); ++i) {
    const unsigned char c = q[i];
    EXPECT_GE(c, 0x20) << "raw control byte at " << i;
  }
  EXPECT_EQ(q.front(), '"');
  EXPECT_EQ(q.back(), '"');
}

TEST(JsonWriter, WritesNonFiniteDoublesAsNull) {
  JsonWriter w;
  w.BeginArray();
  w.Double(1.5);
  w.Double(std::numeric_limits<double>::quiet_NaN());
  w.Double(std::numeric_limits<double>::infinity());
  w.Double(0.1);
  w.EndArray();
  EXPECT_EQ(w.str(), "[1.5,null,null,0.10000000000000001]");
}

}  // namespace
}  // namespace dexec
