#include "protos/chunk.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "protos/tasks.pb.h"

namespace dexec::chunk {
namespace {

// Items of every shape a map sends: empty, binary with NULs, one whose
// length needs a two- and a three-byte varint.
std::vector<std::string> Items() {
  return {"",
          "a",
          std::string("\0\x80\xff", 3),
          std::string(200, 'x'),
          std::string(70000, 'y'),
          "last"};
}

TEST(Chunk, ItemWriterWritesWhatProtobufWrites) {
  tasks::Chunk chunk;
  ItemWriter w;
  for (const std::string& item : Items()) {
    chunk.add_items(item);
    w.Add(item);
  }
  EXPECT_EQ(w.size(), Items().size());
  EXPECT_EQ(std::move(w).Finish(),
            absl::StrCat(kMarker, chunk.SerializeAsString()));
}

TEST(Chunk, DecodeItemsReadsWhatProtobufWrites) {
  tasks::Chunk chunk;
  for (const std::string& item : Items()) chunk.add_items(item);
  const std::string payload = absl::StrCat(kMarker, chunk.SerializeAsString());
  absl::StatusOr<std::vector<absl::string_view>> items = DecodeItems(payload);
  ASSERT_TRUE(items.ok()) << items.status();
  ASSERT_EQ(items->size(), Items().size());
  for (size_t i = 0; i < items->size(); ++i) {
    EXPECT_EQ((*items)[i], Items()[i]) << i;
  }
  // And Decode, the message way, agrees with Encode.
  absl::StatusOr<tasks::Chunk> decoded = Decode(Encode(Items()));
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->items_size(), static_cast<int>(Items().size()));
  EXPECT_EQ(decoded->items(4), Items()[4]);
}

TEST(Chunk, DecodeItemsOfAnEmptyChunkIsEmpty) {
  absl::StatusOr<std::vector<absl::string_view>> items =
      DecodeItems(std::string(kMarker));
  ASSERT_TRUE(items.ok());
  EXPECT_TRUE(items->empty());
}

TEST(Chunk, DecodeItemsSkipsUnknownFields) {
  // A later version's field 7 (varint) and 9 (bytes) between the items.
  std::string payload(kMarker);
  payload += std::string(
      "\x0a\x01"
      "a"
      "\x38\x96\x01"
      "\x4a\x02zz"
      "\x0a\x00",
      12);
  absl::StatusOr<std::vector<absl::string_view>> items = DecodeItems(payload);
  ASSERT_TRUE(items.ok()) << items.status();
  EXPECT_EQ(*items, (std::vector<absl::string_view>{"a", ""}));
}

TEST(Chunk, DecodeItemsRejectsWhatIsNotAChunk) {
  EXPECT_EQ(DecodeItems("plain payload").status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::string whole = Encode(Items());
  // Cut inside the long item, inside a length varint, and garbage after.
  for (const std::string& bad :
       {whole.substr(0, whole.size() - 10),
        whole.substr(0, kMarker.size() + 2 + 3 + 5 + 2),  // "x"*200's length
        absl::StrCat(whole, "\xff"),
        absl::StrCat(kMarker,
                     "\x0a\x05"
                     "ab")}) {
    absl::StatusOr<std::vector<absl::string_view>> items = DecodeItems(bad);
    EXPECT_EQ(items.status().code(), absl::StatusCode::kInvalidArgument)
        << bad.size();
    EXPECT_FALSE(Decode(bad).ok()) << "the message way agrees";
  }
}

TEST(Chunk, ResultWriterWritesWhatProtobufWrites) {
  tasks::ChunkResult results;
  ResultWriter w;
  for (const std::string& item : Items()) {
    tasks::ItemResult* r = results.add_results();
    r->set_ok(true);
    r->set_output(item);
    w.AddOk(item);
  }
  tasks::ItemResult* r = results.add_results();
  r->set_output("partial");
  r->set_error_kind("task_error");
  r->set_error_message(std::string(300, 'm'));
  w.AddError("partial", "task_error", std::string(300, 'm'));
  r = results.add_results();  // a failure with nothing to say
  w.AddError("", "", "");
  EXPECT_EQ(w.size(), Items().size() + 2);
  EXPECT_EQ(std::move(w).Finish(), results.SerializeAsString());
}

TEST(Chunk, DecodeResultsReadsWhatProtobufWrites) {
  tasks::ChunkResult results;
  for (const std::string& item : Items()) {
    tasks::ItemResult* r = results.add_results();
    r->set_ok(true);
    r->set_output(item);
  }
  tasks::ItemResult* r = results.add_results();
  r->set_output("partial");
  r->set_error_kind("task_error");
  r->set_error_message("item 7 broke");
  const std::string bytes = results.SerializeAsString();
  absl::StatusOr<std::vector<ItemResultView>> views = DecodeResults(bytes);
  ASSERT_TRUE(views.ok()) << views.status();
  ASSERT_EQ(views->size(), Items().size() + 1);
  for (size_t i = 0; i < Items().size(); ++i) {
    EXPECT_TRUE((*views)[i].ok);
    EXPECT_EQ((*views)[i].output, Items()[i]);
    EXPECT_TRUE((*views)[i].error_kind.empty());
  }
  const ItemResultView& last = views->back();
  EXPECT_FALSE(last.ok);
  EXPECT_EQ(last.output, "partial");
  EXPECT_EQ(last.error_kind, "task_error");
  EXPECT_EQ(last.error_message, "item 7 broke");
}

TEST(Chunk, DecodeResultsSkipsUnknownFieldsAtBothLevels) {
  // ChunkResult field 5 (varint), then an ItemResult {ok, field 9 bytes,
  // output "o"}.
  const std::string bytes(
      "\x28\x01"
      "\x0a\x09"
      "\x08\x01"
      "\x4a\x02zz"
      "\x12\x01o",
      13);
  absl::StatusOr<std::vector<ItemResultView>> views = DecodeResults(bytes);
  ASSERT_TRUE(views.ok()) << views.status();
  ASSERT_EQ(views->size(), 1u);
  EXPECT_TRUE((*views)[0].ok);
  EXPECT_EQ((*views)[0].output, "o");
}

TEST(Chunk, DecodeResultsRejectsWhatDoesNotParse) {
  ResultWriter w;
  w.AddOk("some output");
  w.AddError("", "task_error", "no");
  const std::string whole = std::move(w).Finish();
  for (const std::string& bad :
       {whole.substr(0, whole.size() - 1), whole.substr(0, 5),
        absl::StrCat(whole, "\x0a"), std::string("\x0a\x02\x12\x05", 4),
        std::string("not a ChunkResult at all")}) {
    EXPECT_EQ(DecodeResults(bad).status().code(), absl::StatusCode::kDataLoss)
        << bad.size();
    tasks::ChunkResult parsed;
    EXPECT_FALSE(parsed.ParseFromString(bad)) << "protobuf agrees";
  }
}

}  // namespace
}  // namespace dexec::chunk
