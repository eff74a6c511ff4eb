// report.html in a real browser: Debian's chromium, headless, opens the report of a finished
// short run. The rendered DOM holds the loss curve (a polyline through every logged step), the
// sample picture (embedded, so the page needs no other file) and the evaluation table with one
// row per NFE; the screenshots show the curve's stroke colour and the picture's pixels (the
// same page without the picture has far fewer coloured pixels). Skipped where chromium is not
// installed (`make test` installs it: scripts/packages-browser.txt).
#include <gtest/gtest.h>
#include <stb/stb_image.h>

#include <filesystem>
#include <sstream>

#include "test_support.h"

namespace fs = std::filesystem;
using namespace onestep::testing_support;

namespace {

constexpr const char* kChromium = "/usr/bin/chromium";

class ReportInBrowser : public TempFolderTest {
 protected:
  // Runs headless chromium on the local file `page` with `action` (--dump-dom or --screenshot=...),
  // its stdout into `out`; returns the exit status.
  int chromium(const std::string& page, const std::string& action, const std::string& out) {
    const std::string command = std::string(kChromium) +
                                " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
                                "--disable-background-networking --disable-component-update --disable-sync "
                                "--hide-scrollbars --window-size=1000,3000 --user-data-dir=" +
                                path("profile") + " " + action + " file://" + page + " > " + out + " 2>/dev/null";
    return std::system(command.c_str());
  }

  // Pixels of the screenshot `png` that are not white, and those near the loss curve's stroke.
  std::pair<int64_t, int64_t> coloured_pixels(const std::string& png) {
    int width = 0, height = 0, channels = 0;
    unsigned char* pixels = stbi_load(png.c_str(), &width, &height, &channels, 3);
    EXPECT_NE(pixels, nullptr) << png;
    if (pixels == nullptr) return {0, 0};
    int64_t not_white = 0, stroke = 0;
    for (int64_t i = 0; i < static_cast<int64_t>(width) * height; ++i) {
      const int r = pixels[3 * i], g = pixels[3 * i + 1], b = pixels[3 * i + 2];
      not_white += r + g + b < 3 * 235;
      stroke += std::abs(r - 0x1f) < 40 && std::abs(g - 0x4e) < 40 && std::abs(b - 0x9e) < 40;
    }
    stbi_image_free(pixels);
    return {not_white, stroke};
  }
};

}  // namespace

TEST_F(ReportInBrowser, ShowsTheLossCurveTheSamplesAndTheEvaluationTable) {
  if (!fs::exists(kChromium)) GTEST_SKIP() << kChromium << " is not installed (scripts/packages-browser.txt)";
  const pid_t pid = spawn_onestep("train data.name=8gaussians model.width=16 model.depth=2 train.steps=40 "
                                  "train.log_every=2 train.sample_every=0 train.threads=1 eval.num=300 "
                                  "eval.nfe=1,2 --out " + path("run"),
                                  {}, path("train.log"));
  ASSERT_EQ(wait_for_exit(pid, std::chrono::seconds(300)), 0) << read_raw(path("train.log"));
  const std::string report = path("run/report.html");

  ASSERT_EQ(chromium(report, "--dump-dom", path("dom.html")), 0);
  const std::string dom = read_raw(path("dom.html"));
  // The attribute value after `marker` (up to the next quote), or "" when `marker` is absent.
  const auto value_after = [&](const std::string& marker) {
    const size_t at = dom.find(marker);
    if (at == std::string::npos) return std::string();
    const size_t begin = at + marker.size();
    return dom.substr(begin, dom.find('"', begin) - begin);
  };
  std::istringstream points(value_after("<polyline fill=\"none\" stroke=\"#1f4e9e\" stroke-width=\"1.5\" points=\""));
  int count = 0;
  for (std::string point; points >> point;) ++count;
  EXPECT_EQ(count, 20) << "one point per logged step";
  EXPECT_GT(value_after("<img id=\"samples\" alt=\"samples\" src=\"data:image/png;base64,").size(), 1000u);
  const size_t table_at = dom.find("<table id=\"evaluation\">");
  ASSERT_NE(table_at, std::string::npos) << dom.substr(0, 3000);
  const std::string table = dom.substr(table_at, dom.find("</table>", table_at) - table_at);
  EXPECT_TRUE(contains(table, "energy_distance")) << table;
  int rows = 0;
  for (size_t at = table.find("<tr>"); at != std::string::npos; at = table.find("<tr>", at + 1)) ++rows;
  EXPECT_EQ(rows, 3) << "a header and one row per NFE: " << table;

  ASSERT_EQ(chromium(report, "--screenshot=" + path("shot.png"), path("shot.log")), 0);
  const auto with_picture = coloured_pixels(path("shot.png")).first;
  std::string without = read_raw(report);
  const size_t image_at = without.find("<img id='samples'");
  ASSERT_NE(image_at, std::string::npos);
  without.erase(image_at, without.find('>', image_at) + 1 - image_at);
  write_raw(path("without.html"), without);
  ASSERT_EQ(chromium(path("without.html"), "--screenshot=" + path("without.png"), path("without.log")), 0);
  // Without the picture (whose dots share the curve's blue), the curve's stroke alone.
  const auto [without_picture, stroke] = coloured_pixels(path("without.png"));
  EXPECT_GT(stroke, 200) << "the loss curve's stroke";
  EXPECT_GT(with_picture, without_picture + 5000) << "the sample picture is drawn";
}
