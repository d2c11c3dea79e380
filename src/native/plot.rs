//! The training curve as an SVG picture: loss against step on a log scale, the logged values in
//! grey and their moving average in black.

/// Parses `loss.csv` (`step,loss,lr` with a header) into (step, loss) pairs, skipping non-finite
/// losses and malformed lines.
pub fn parse_loss_csv(csv: &str) -> Vec<(f64, f64)> {
    csv.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split(',');
            let step = fields.next()?.trim().parse::<f64>().ok()?;
            let loss = fields.next()?.trim().parse::<f64>().ok()?;
            (loss.is_finite() && loss > 0.0).then_some((step, loss))
        })
        .collect()
}

/// The chart of a run's `loss.csv` contents with its standard title, and the number of points
/// drawn (0 when the file holds no losses).
pub fn loss_chart(csv: &str, window: usize) -> (String, usize) {
    let points = parse_loss_csv(csv);
    let last = points.last().map_or(0.0, |p| p.0);
    let svg = loss_curve_svg(&points, &format!("training loss, steps 1 to {last}"), window);
    (svg, points.len())
}

/// "Nice" tick values (1, 2, 5 × 10^k) covering `lo..=hi` with about `count` ticks.
fn linear_ticks(lo: f64, hi: f64, count: usize) -> Vec<f64> {
    let raw = (hi - lo).max(f64::MIN_POSITIVE) / count.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// Tick values 1, 2, 5 × 10^k inside `lo..=hi` (positive).
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    for k in lo.log10().floor() as i32..=hi.log10().ceil() as i32 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(k);
            if v >= lo && v <= hi {
                ticks.push(v);
            }
        }
    }
    ticks
}

fn label(v: f64) -> String {
    if v >= 1000.0 && v % 1000.0 == 0.0 {
        format!("{}k", v / 1000.0)
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// An SVG line chart of `points` (step, loss), loss on a log scale, with a moving average of
/// `window` logged values.
pub fn loss_curve_svg(points: &[(f64, f64)], title: &str, window: usize) -> String {
    let (width, height) = (720.0, 400.0);
    let (left, right, top, bottom) = (70.0, 20.0, 40.0, 50.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        width / 2.0,
        escape(title)
    );
    if points.is_empty() {
        svg.push_str("<text x=\"360\" y=\"200\" text-anchor=\"middle\">no losses logged yet</text>\n</svg>\n");
        return svg;
    }
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let (y_min, y_max) = points
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let (log_lo, log_hi) = (y_min.log10(), (y_max.log10()).max(y_min.log10() + 0.1));
    let px = |x: f64| left + x / x_max * (width - left - right);
    let py = |y: f64| top + (log_hi - y.log10()) / (log_hi - log_lo) * (height - top - bottom);

    // Axes, grid and ticks.
    for t in linear_ticks(0.0, x_max, 6) {
        let x = px(t);
        svg.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            height - bottom,
            height - bottom + 16.0,
            label(t)
        ));
    }
    for t in log_ticks(y_min, 10f64.powf(log_hi)) {
        let y = py(t);
        svg.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            width - right,
            left - 6.0,
            y + 4.0,
            label(t)
        ));
    }
    svg.push_str(&format!(
        "<rect x=\"{left}\" y=\"{top}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"#444\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">training step</text>\n\
         <text transform=\"translate(16 {:.1}) rotate(-90)\" text-anchor=\"middle\">loss ‖ε − ε̂‖² (log scale)</text>\n",
        width - left - right,
        height - top - bottom,
        (left + width - right) / 2.0,
        height - 10.0,
        (top + height - bottom) / 2.0,
    ));

    // The logged losses, then their moving average.
    let polyline = |pts: &[(f64, f64)], style: &str| {
        let coords: Vec<String> = pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
        format!("<polyline fill=\"none\" {style} points=\"{}\"/>\n", coords.join(" "))
    };
    svg.push_str(&polyline(points, "stroke=\"#bbb\" stroke-width=\"1\""));
    let window = window.max(1);
    let smooth: Vec<(f64, f64)> = (0..points.len())
        .map(|i| {
            let from = i.saturating_sub(window - 1);
            let slice = &points[from..=i];
            (points[i].0, slice.iter().map(|p| p.1).sum::<f64>() / slice.len() as f64)
        })
        .collect();
    svg.push_str(&polyline(&smooth, "stroke=\"#111\" stroke-width=\"2\""));
    svg.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#111\">black: mean of the last {window} logged values; grey: logged</text>\n</svg>\n",
        width - right - 6.0,
        top + 16.0
    ));
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_parsing_skips_the_header_and_bad_lines() {
        let csv = "step,loss,lr\n25,0.5,1e-4\nbroken\n50,NaN,1e-4\n75,0.25,2e-4\n";
        assert_eq!(parse_loss_csv(csv), vec![(25.0, 0.5), (75.0, 0.25)]);
    }

    #[test]
    fn ticks_are_round_numbers() {
        // 1250 / 6 = 208 per tick → the next round step is 500.
        assert_eq!(linear_ticks(0.0, 1250.0, 6), vec![0.0, 500.0, 1000.0]);
        assert_eq!(linear_ticks(0.0, 100.0, 5), vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        let ticks = log_ticks(0.015, 1.2);
        let expected = [0.02, 0.05, 0.1, 0.2, 0.5, 1.0];
        assert_eq!(ticks.len(), expected.len());
        assert!(
            ticks.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-12),
            "{ticks:?}"
        );
        assert_eq!(label(2000.0), "2k");
        assert_eq!(label(0.05), "0.05");
    }

    #[test]
    fn the_chart_is_an_svg_with_both_lines() {
        let points: Vec<(f64, f64)> = (1..=40).map(|i| (i as f64 * 25.0, 1.0 / i as f64)).collect();
        let svg = loss_curve_svg(&points, "run <a>", 10);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("run &lt;a&gt;"));
    }
}
