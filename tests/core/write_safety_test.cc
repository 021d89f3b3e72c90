// Safety rules of the write side that need no image (issue 9): when a
// .create document written in pieces can still become a <volume> and when
// it must be refused, how rmdir refusals name dependents, and that
// chainctl's suggestions never speak of a mount.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "core/chain/trust.h"
#include "core/write/remove.h"
#include "core/write/volume_xml_parse.h"

namespace chainfs::core {
namespace {

// Valid documents, each with the constructs whose truncation pugixml
// reports in a different way.
std::vector<std::string> ValidDocuments() {
  return {
      "<volume><name>a.raw</name><capacity>1</capacity></volume>",
      "\xEF\xBB\xBF  \n<?xml version='1.0' encoding='UTF-8'?>\n"
      "<!-- a comment < with > and -- inside? no: one dash - -->\n"
      "<!DOCTYPE volume [ <!ENTITY x 'a>b'> ]>\n"
      "<volume type='file'>\n"
      "  <name>a&amp;b.qcow2</name>\n"
      "  <capacity unit='G'>1</capacity>\n"
      "  <![CDATA[x < y > z]]>\n"
      "  <?pi some > thing?>\n"
      "  <target><format type=\"qcow2\"/><features><lazy_refcounts/></features>\n"
      "   <permissions><mode>0644</mode><label attr='a>b'/></permissions></target>\n"
      "  <backingStore><path>/x/y z</path><format type='raw'/></backingStore>\n"
      "</volume>\n",
      "<volume\n  type = \"file\" ><name>n</name><capacity unit='KiB'>64</capacity>"
      "<target><format type='raw'/></target><a/><b></b><c x='1' y=\"2\"/></volume>",
  };
}

TEST(VolumeXmlPrefix, EveryPrefixOfAValidDocumentCanStillBecomeOne) {
  for (const std::string& doc : ValidDocuments()) {
    for (size_t n = 0; n < doc.size(); ++n) {
      XmlPrefix p = ClassifyVolumeXmlPrefix(std::string_view(doc).substr(0, n));
      // A prefix may already be complete only after the root's end tag.
      if (p.state == XmlPrefixState::kComplete) {
        EXPECT_NE(doc.substr(0, n).find("</volume>"), std::string::npos) << n;
        continue;
      }
      EXPECT_EQ(p.state, XmlPrefixState::kIncomplete)
          << "prefix of " << n << " bytes: " << p.reason << "\n"
          << doc.substr(0, n);
    }
    EXPECT_EQ(ClassifyVolumeXmlPrefix(doc).state, XmlPrefixState::kComplete) << doc;
  }
}

// Returns the shortest prefix length at which `doc` is refused, or npos.
size_t RefusedAt(const std::string& doc, std::string* reason) {
  for (size_t n = 1; n <= doc.size(); ++n) {
    XmlPrefix p = ClassifyVolumeXmlPrefix(std::string_view(doc).substr(0, n));
    if (p.state == XmlPrefixState::kInvalid) {
      *reason = p.reason;
      return n;
    }
    if (p.state == XmlPrefixState::kComplete) return std::string::npos;
  }
  return std::string::npos;
}

TEST(VolumeXmlPrefix, ErrorsInBytesAlreadyWrittenAreRefusedSoonAfterThem) {
  struct Case {
    std::string doc;
    size_t error_at;     // first byte that makes the document wrong
    const char* reason;  // part of the reason
  };
  const std::vector<Case> cases = {
      {"# chainfs\n\nA FUSE file system <b>for</b> libvirt hosts.\n", 0, "starts with '#"},
      {"  \n\tplain text", 4, "not '<'"},
      {"<domain type='kvm'><name>vm</name></domain>", 1, "the root element is <d...>"},
      {"<vol/>", 4, "<vol>"},
      {"<volumes><name>x</name></volumes>", 7, "the root element is <volumes...>"},
      {"<volume><name>x</nam><capacity>1</capacity></volume>", 20, "mismatch"},
      {"<volume><name>x</name><capacity unit=G>1</capacity></volume>", 37, "attribute"},
      {"<volume><name>x</name>< capacity>1</capacity></volume>", 23, "bad volume XML"},
  };
  for (const Case& c : cases) {
    std::string reason;
    size_t at = RefusedAt(c.doc, &reason);
    ASSERT_NE(at, std::string::npos) << c.doc;
    // Refused at the latest a few bytes after the offending one: a tag
    // name, or the '>' that shows the tag is over.
    EXPECT_LE(at, c.error_at + 12) << c.doc << " refused only after " << at << ": " << reason;
    EXPECT_NE(reason.find(c.reason), std::string::npos) << c.doc << ": " << reason;
    // And a longer document with the same start is refused too.
    EXPECT_EQ(ClassifyVolumeXmlPrefix(c.doc + std::string(5000, ' ') + "<x/>").state,
              XmlPrefixState::kInvalid)
        << c.doc;
  }
}

TEST(VolumeXmlPrefix, GarbageOfAnySizeIsRefusedAndReasonsStayOneEscapedLine) {
  std::mt19937 rng(9);
  for (int round = 0; round < 50; ++round) {
    std::string junk(200 * 1024, '\0');
    for (char& c : junk) c = char(rng() & 0xff);
    if (round % 2 == 0) junk[0] = '<';  // looks like markup at first
    XmlPrefix p = ClassifyVolumeXmlPrefix(junk);
    ASSERT_EQ(p.state, XmlPrefixState::kInvalid) << round;
    EXPECT_EQ(p.reason.find('\n'), std::string::npos) << p.reason;
    EXPECT_LT(p.reason.size(), 200u) << p.reason;
    for (char c : p.reason) EXPECT_FALSE(c >= 0 && c < 0x20) << p.reason;
  }
  // Over the size cap, even if it would be well-formed some day.
  std::string huge = "<volume><name>x</name><!-- " + std::string(kMaxVolumeXmlBytes, 'a');
  XmlPrefix p = ClassifyVolumeXmlPrefix(huge);
  EXPECT_EQ(p.state, XmlPrefixState::kInvalid);
  EXPECT_NE(p.reason.find("at most"), std::string::npos) << p.reason;
  // Blank, or only a prolog: still waiting.
  EXPECT_EQ(ClassifyVolumeXmlPrefix("").state, XmlPrefixState::kIncomplete);
  EXPECT_EQ(ClassifyVolumeXmlPrefix(" \n").state, XmlPrefixState::kIncomplete);
  EXPECT_EQ(ClassifyVolumeXmlPrefix("<?xml version='1.0'?>\n").state, XmlPrefixState::kIncomplete);
  // A complete document with another root is complete here; ParseVolumeXml
  // refuses it (with its own reason).
  EXPECT_EQ(ClassifyVolumeXmlPrefix("<volume/>").state, XmlPrefixState::kComplete);
}

TEST(DependentsReason, NamesEveryDependentUpToTenThenCounts) {
  std::vector<Dependent> direct;
  for (int i = 0; i < 3; ++i) {
    Dependent d;
    d.path = "/p/overlay" + std::to_string(i);
    direct.push_back(d);
  }
  std::vector<ChainUser> users;
  ChainUser same;  // a direct dependent is named once, as an overlay
  same.volume = "/p/overlay0";
  same.index = 1;
  users.push_back(same);
  for (int i = 0; i < 11; ++i) {
    ChainUser u;
    u.volume = "/p/top" + std::to_string(i);
    u.index = 2;
    u.above = "/p/overlay1";
    users.push_back(u);
  }
  std::string r = DependentsReason("/p/base", direct, users);
  EXPECT_NE(r.find("14 volume(s)"), std::string::npos) << r;
  for (int i = 0; i < 3; ++i) {
    EXPECT_NE(r.find("'/p/overlay" + std::to_string(i) + "' (its overlay)"), std::string::npos)
        << r;
  }
  for (int i = 0; i < 7; ++i) {
    EXPECT_NE(r.find("'/p/top" + std::to_string(i) + "' (chain index 2, below '/p/overlay1')"),
              std::string::npos)
        << r;
  }
  EXPECT_EQ(r.find("/p/top7"), std::string::npos) << r;
  EXPECT_NE(r.find(" and 4 more; remove or rebase them first"), std::string::npos) << r;
  EXPECT_EQ(r.find('\n'), std::string::npos);

  // A short list: "a, b and c".
  direct.resize(2);
  EXPECT_EQ(DependentsReason("/p/base", direct, {}),
            "'/p/base' is used as a backing by 2 volume(s): '/p/overlay0' (its overlay) and "
            "'/p/overlay1' (its overlay); remove or rebase them first");
  EXPECT_EQ(DependentsReason("/p/base", {}, {}), "");
}

TEST(Suggestions, ChainctlPhrasesEveryFixAsAChainctlCommandNeverAMountFile) {
  for (Suggestion what :
       {Suggestion::kDeclareFormatForCreate, Suggestion::kDeclareFormatForRetarget,
        Suggestion::kDeclareFormatForRebase, Suggestion::kRetargetInstead,
        Suggestion::kFlattenInstead}) {
    std::string s = ChainctlSuggestion({what, "/p/my disk.qcow2", "base.raw"});
    EXPECT_EQ(s.rfind("chainctl ", 0), 0u) << s;
    EXPECT_EQ(s.find("echo"), std::string::npos) << s;
    EXPECT_EQ(s.find("VOL/"), std::string::npos) << s;
    EXPECT_EQ(s.find(".create"), std::string::npos) << s;
    EXPECT_NE(s.find("'/p/my disk.qcow2'"), std::string::npos) << s;  // shell-quoted
  }
  EXPECT_EQ(ChainctlSuggestion({Suggestion::kDeclareFormatForRetarget, "/p/t", "b"}),
            "chainctl rebase -u -F FMT -b b /p/t");
  // A front end's own phrasing replaces chainctl's.
  TrustContext mount;
  mount.suggest = [](const SuggestionArgs& a) { return "echo FMT > " + a.image; };
  EXPECT_EQ(Suggest(mount, {Suggestion::kDeclareFormatForRetarget, "/p/t", "b"}),
            "echo FMT > /p/t");
  EXPECT_EQ(Suggest(TrustContext{}, {Suggestion::kFlattenInstead, "/p/t", ""}),
            "chainctl rebase -b '' /p/t");
}

}  // namespace
}  // namespace chainfs::core
