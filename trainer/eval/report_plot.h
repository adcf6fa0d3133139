// The ID-vs-CLIP scatter plot of the report: inline SVG, one point per run with its 95 % error
// bars, axes on 1/2/5 x 10^k ticks.
#pragma once

#include <ostream>
#include <vector>

#include "trainer/eval/eval_report.h"
#include "trainer/eval/report_summary.h"

namespace lookahead::trainer::report {

/// Writes the plot's <h2>, svg#id-vs-clip (circle.point[data-label] with data-x / data-y) and its
/// notes; runs without an ID similarity (no face found) are listed as not plotted.
void write_scatter(std::ostream& out, const std::vector<ReportEntry>& entries, const std::vector<Row>& rows);

}  // namespace lookahead::trainer::report
