// report.html writer (see report.h).
#include "onestep/train/report.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "onestep/core/file_io.h"
#include "onestep/train/ema.h"

namespace onestep {
namespace {

std::string escape_html(const std::string& text) {
  std::string out;
  for (char ch : text) {
    switch (ch) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      default: out += ch;
    }
  }
  return out;
}

std::string base64(const std::string& bytes) {
  static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t group = static_cast<uint8_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) group |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    if (i + 2 < bytes.size()) group |= static_cast<uint8_t>(bytes[i + 2]);
    out += alphabet[(group >> 18) & 63];
    out += alphabet[(group >> 12) & 63];
    out += i + 1 < bytes.size() ? alphabet[(group >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? alphabet[group & 63] : '=';
  }
  return out;
}

// Loss against step as an SVG polyline (log-scaled loss when it spans a decade or more).
std::string loss_curve_svg(const std::vector<std::pair<double, double>>& points) {
  if (points.size() < 2) return "<p>(not enough logged steps for a curve)</p>";
  double x_min = points.front().first, x_max = points.back().first;
  double y_min = 1e300, y_max = -1e300;
  for (const auto& [x, y] : points) {
    y_min = std::min(y_min, y);
    y_max = std::max(y_max, y);
  }
  const bool log_scale = y_min > 0 && y_max / y_min >= 10;
  const auto transform = [&](double y) { return log_scale ? std::log10(y) : y; };
  const double lo = transform(y_min), hi = transform(y_max) + 1e-12;
  const double width = 640, height = 240, pad = 40;
  std::ostringstream svg;
  svg << "<svg id='loss-curve' width='" << width << "' height='" << height << "' style='border:1px solid #ccc'>";
  svg << "<polyline fill='none' stroke='#1f4e9e' stroke-width='1.5' points='";
  for (const auto& [x, y] : points) {
    const double px = pad + (x - x_min) / std::max(x_max - x_min, 1e-12) * (width - 2 * pad);
    const double py = height - pad - (transform(y) - lo) / (hi - lo) * (height - 2 * pad);
    svg << px << "," << py << " ";
  }
  svg << "'/><text x='" << pad << "' y='20' font-size='12'>loss" << (log_scale ? " (log scale)" : "") << ": "
      << y_max << " .. " << y_min << "</text><text x='" << pad << "' y='" << height - 10
      << "' font-size='12'>step " << x_min << " .. " << x_max << "</text></svg>";
  return svg.str();
}

}  // namespace

void write_report(const std::string& path, const Config& config, const std::string& metrics_path,
                  const std::string& samples_path, const std::vector<EvalRow>& rows) {
  std::vector<std::pair<double, double>> loss_points;
  std::vector<nlohmann::ordered_json> evaluations;  // the records of eval.every, before the last step
  std::ifstream metrics(metrics_path);
  for (std::string line; std::getline(metrics, line);) {
    const auto record = nlohmann::ordered_json::parse(line, nullptr, false);
    if (record.is_discarded()) continue;
    if (record.contains("loss")) loss_points.emplace_back(record["step"].get<double>(), record["loss"].get<double>());
    if (record.contains("eval") && record["step"].get<int64_t>() < config.get_int("train.steps"))
      evaluations.push_back(record);
  }
  std::ostringstream html;
  html << "<!doctype html><html><head><meta charset='utf-8'><title>onestep run</title>"
       << "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 10px;text-align:right}"
       << "pre{background:#f4f4f4;padding:1em}</style></head><body>";
  html << "<h1>onestep: " << escape_html(config.get_string("method.name")) << " on "
       << escape_html(config.get_string("data.name")) << "</h1>";
  if (!rows.empty()) {
    html << "<h2>Evaluation (held-out data)</h2><table id='evaluation'><tr><th>nfe</th>";
    for (const auto& [name, value] : rows.front().metrics) html << "<th>" << name << "</th>";
    html << "</tr>";
    for (const auto& row : rows) {
      html << "<tr><td>" << row.nfe << "</td>";
      for (const auto& [name, value] : row.metrics) html << "<td>" << value << "</td>";
      html << "</tr>";
    }
    html << "</table>";
  }
  if (!evaluations.empty() && !evaluations.front()["eval"].empty()) {
    // With EMA weights, the share of the initial weights they still hold: why early rows look worse.
    const bool ema = config.get_bool("eval.use_ema");
    const EmaSchedule schedule = EmaSchedule::from_config(config);
    html << "<h2>Evaluations during training (eval.every, " << config.get_int("eval.every_num")
         << " samples, " << (ema ? "EMA" : "raw") << " weights)</h2><table id='evaluations'><tr><th>step</th>"
         << (ema ? "<th>initial weights in the EMA</th>" : "");
    for (const auto& [name, value] : evaluations.front()["eval"][0].items()) html << "<th>" << name << "</th>";
    html << "</tr>";
    for (const auto& record : evaluations) {
      const int64_t step = record["step"].get<int64_t>();
      for (const auto& result : record["eval"]) {
        html << "<tr><td>" << step << "</td>";
        if (ema) html << "<td>" << std::lround(100 * schedule.initial_share(step)) << "%</td>";
        for (const auto& [name, value] : result.items()) html << "<td>" << value.dump() << "</td>";
        html << "</tr>";
      }
    }
    html << "</table>";
  }
  html << "<h2>Samples</h2>";
  if (!samples_path.empty() && std::filesystem::exists(samples_path))
    html << "<img id='samples' alt='samples' src='data:image/png;base64," << base64(read_file(samples_path)) << "'>";
  else
    html << "<p>(no sample picture yet)</p>";
  html << "<h2>Training loss</h2>" << loss_curve_svg(loss_points);
  html << "<h2>Config</h2><pre>" << escape_html(config.to_toml()) << "</pre></body></html>\n";
  write_file_atomically(path, html.str());
}

}  // namespace onestep
