import Foundation

/// A log-log line chart of resume time against turns, as SVG text (no dependencies): one line per
/// road, a point per measured N.
struct ResumeChart {
    struct Series {
        var name: String
        var color: String
        var dashed = false
        var points: [(x: Double, y: Double)]
    }

    var title: String
    var subtitle: String
    var series: [Series]

    private let width = 840.0, height = 470.0
    private let left = 80.0, right = 280.0, top = 64.0, bottom = 58.0

    func svg() -> String {
        let all = series.flatMap(\.points).filter { $0.x > 0 && $0.y > 0 }
        guard !all.isEmpty else { return "<svg xmlns=\"http://www.w3.org/2000/svg\"/>\n" }
        let xLow = floor(log10(all.map(\.x).min() ?? 1)), xHigh = ceil(log10(all.map(\.x).max() ?? 10))
        let yLow = floor(log10(all.map(\.y).min() ?? 1)), yHigh = ceil(log10(all.map(\.y).max() ?? 10))
        let plotW = width - left - right, plotH = height - top - bottom
        func px(_ x: Double) -> Double { left + (log10(x) - xLow) / max(xHigh - xLow, 1) * plotW }
        func py(_ y: Double) -> Double { top + plotH - (log10(y) - yLow) / max(yHigh - yLow, 1) * plotH }
        func n(_ v: Double) -> String { String(format: "%.1f", v) }
        func label(_ exponent: Double) -> String {
            let value = pow(10, exponent)
            return value >= 1 ? String(format: "%.0f", value) : String(format: "%g", value)
        }
        var out = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="Helvetica, Arial, sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(n(left))" y="24" font-size="16" font-weight="bold">\(escape(title))</text>
        <text x="\(n(left))" y="44" fill="#555">\(escape(subtitle))</text>

        """
        // Grid: every decade, with the 2 and 5 in between drawn lighter.
        for e in stride(from: xLow, through: xHigh, by: 1) {
            for m in [1.0, 2, 5] where e < xHigh || m == 1 {
                let x = px(m * pow(10, e))
                out += "<line x1=\"\(n(x))\" y1=\"\(n(top))\" x2=\"\(n(x))\" y2=\"\(n(top + plotH))\" stroke=\"\(m == 1 ? "#ccc" : "#eee")\"/>\n"
            }
            out += "<text x=\"\(n(px(pow(10, e))))\" y=\"\(n(top + plotH + 18))\" text-anchor=\"middle\">\(label(e))</text>\n"
        }
        for e in stride(from: yLow, through: yHigh, by: 1) {
            for m in [1.0, 2, 5] where e < yHigh || m == 1 {
                let y = py(m * pow(10, e))
                out += "<line x1=\"\(n(left))\" y1=\"\(n(y))\" x2=\"\(n(left + plotW))\" y2=\"\(n(y))\" stroke=\"\(m == 1 ? "#ccc" : "#eee")\"/>\n"
            }
            out += "<text x=\"\(n(left - 8))\" y=\"\(n(py(pow(10, e)) + 4))\" text-anchor=\"end\">\(label(e))</text>\n"
        }
        out += "<rect x=\"\(n(left))\" y=\"\(n(top))\" width=\"\(n(plotW))\" height=\"\(n(plotH))\" fill=\"none\" stroke=\"#333\"/>\n"
        out += "<text x=\"\(n(left + plotW / 2))\" y=\"\(n(height - 14))\" text-anchor=\"middle\">turns journaled / logged before the resume (N, log scale)</text>\n"
        out += "<text transform=\"translate(22 \(n(top + plotH / 2))) rotate(-90)\" text-anchor=\"middle\">time to resume (ms, log scale)</text>\n"
        for (i, s) in series.enumerated() {
            let points = s.points.filter { $0.x > 0 && $0.y > 0 }.sorted { $0.x < $1.x }
            guard !points.isEmpty else { continue }
            let path = points.map { "\(n(px($0.x))),\(n(py($0.y)))" }.joined(separator: " ")
            out += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"2.5\"\(s.dashed ? " stroke-dasharray=\"6 4\"" : "")/>\n"
            for p in points {
                out += "<circle cx=\"\(n(px(p.x)))\" cy=\"\(n(py(p.y)))\" r=\"4\" fill=\"\(s.color)\"><title>\(escape(s.name)): N=\(Int(p.x)), \(String(format: "%.1f", p.y)) ms</title></circle>\n"
            }
            let ly = top + 12 + Double(i) * 22
            let lx = left + plotW + 16
            out += "<line x1=\"\(n(lx))\" y1=\"\(n(ly))\" x2=\"\(n(lx + 24))\" y2=\"\(n(ly))\" stroke=\"\(s.color)\" stroke-width=\"2.5\"\(s.dashed ? " stroke-dasharray=\"6 4\"" : "")/>\n"
            out += "<text x=\"\(n(lx + 30))\" y=\"\(n(ly + 4))\">\(escape(s.name))</text>\n"
        }
        out += "</svg>\n"
        return out
    }

    private func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
