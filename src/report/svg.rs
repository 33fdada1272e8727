//! Plots as inline SVG strings: line charts (training curves, ROC, precision–recall) drawn with
//! plotters' SVG backend, and the confusion matrix and build timeline written directly (they
//! are grids of boxes, simpler as plain SVG than as charts).

use std::fmt::Write as _;

use plotters::prelude::*;

/// A named series of points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Escapes text for SVG/HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A line chart. `unit_square` fixes both axes to [0, 1] and draws the chance diagonal (ROC).
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    unit_square: bool,
) -> String {
    let mut buf = String::new();
    let (w, h) = (460u32, 300u32);
    {
        let root = SVGBackend::with_string(&mut buf, (w, h)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let pts = series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts {
            if x.is_finite() && y.is_finite() {
                x0 = x0.min(x);
                x1 = x1.max(x);
                y0 = y0.min(y);
                y1 = y1.max(y);
            }
        }
        if unit_square || x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if x1 - x0 < 1e-12 {
            x1 = x0 + 1.0;
        }
        if y1 - y0 < 1e-12 {
            y1 = y0 + 1.0;
        }
        let pad = if unit_square { 0.0 } else { (y1 - y0) * 0.05 };
        let chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(34)
            .y_label_area_size(52)
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad));
        let Ok(mut chart) = chart else {
            return buf_fallback(title);
        };
        let _ = chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .light_line_style(RGBColor(235, 235, 235))
            .draw();
        if unit_square {
            let _ = chart.draw_series(LineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                ShapeStyle::from(&RGBColor(180, 180, 180)).stroke_width(1),
            ));
        }
        for (i, s) in series.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let drawn = chart.draw_series(LineSeries::new(
                s.points
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite()),
                ShapeStyle::from(&colour).stroke_width(2),
            ));
            if let Ok(d) = drawn {
                d.label(s.name.clone()).legend(move |(x, y)| {
                    PathElement::new(
                        vec![(x, y), (x + 16, y)],
                        ShapeStyle::from(&colour).stroke_width(2),
                    )
                });
            }
        }
        if series.len() > 1 || series.first().is_some_and(|s| !s.name.is_empty()) {
            let _ = chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(200, 200, 200))
                .position(SeriesLabelPosition::LowerRight)
                .draw();
        }
        let _ = root.present();
    }
    with_class(buf, "chart")
}

fn buf_fallback(title: &str) -> String {
    format!(
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"460\" height=\"60\"><text x=\"10\" y=\"30\">{}: no data</text></svg>",
        esc(title)
    )
}

/// Adds a class to the root `<svg>` element, so that tests and CSS can find the plots.
fn with_class(svg: String, class: &str) -> String {
    svg.replacen("<svg ", &format!("<svg class=\"{class}\" "), 1)
}

/// A 2×2 confusion matrix `[[tn, fp], [fn, tp]]`, shaded by the share of each row.
pub fn confusion_matrix(title: &str, cm: [[u64; 2]; 2]) -> String {
    let cell = 90;
    let (ox, oy) = (110, 50);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart confusion\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\">",
        ox + 2 * cell + 20,
        oy + 2 * cell + 40
    );
    let _ = write!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = write!(
        s,
        "<text x=\"10\" y=\"20\" font-size=\"14\">{}</text>",
        esc(title)
    );
    let labels = ["normal", "attack"];
    for (r, row) in cm.iter().enumerate() {
        let total: u64 = row.iter().sum::<u64>().max(1);
        for (c, &v) in row.iter().enumerate() {
            let share = v as f64 / total as f64;
            let (x, y) = (ox + c * cell, oy + r * cell);
            let shade = 255 - (share * 170.0) as u8;
            let fill = if r == c {
                format!("rgb({shade},{},{shade})", 255 - (share * 60.0) as u8)
            } else {
                format!("rgb(255,{shade},{shade})")
            };
            let _ = write!(
                s,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{cell}\" height=\"{cell}\" fill=\"{fill}\" stroke=\"#888\"/>\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"16\">{v}</text>",
                x + cell / 2,
                y + cell / 2 + 6
            );
        }
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"12\">true {}</text>",
            ox - 6,
            oy + r * cell + cell / 2 + 4,
            labels[r]
        );
    }
    for (c, l) in labels.iter().enumerate() {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\">predicted {l}</text>",
            ox + c * cell + cell / 2,
            oy + 2 * cell + 18
        );
    }
    s.push_str("</svg>");
    s
}

/// One bar of the build timeline.
pub struct Span {
    pub label: String,
    pub lane: String,
    /// Unix milliseconds.
    pub start: i64,
    pub end: i64,
}

/// A Gantt chart of builds: one row per build, coloured by where it ran.
pub fn timeline(spans: &[Span]) -> String {
    let row_h = 22;
    let (label_w, plot_w) = (230.0, 560.0);
    let t0 = spans.iter().map(|s| s.start).min().unwrap_or(0);
    let t1 = spans.iter().map(|s| s.end).max().unwrap_or(1).max(t0 + 1);
    let scale = plot_w / (t1 - t0) as f64;
    let mut lanes: Vec<&str> = Vec::new();
    for s in spans {
        if !lanes.contains(&s.lane.as_str()) {
            lanes.push(&s.lane);
        }
    }
    let height = 40 + spans.len() * row_h + 24 * lanes.len();
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"chart timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>",
        label_w + plot_w + 20.0
    );
    for (i, s) in spans.iter().enumerate() {
        let y = 20 + i * row_h;
        let colour = PALETTE[lanes.iter().position(|l| *l == s.lane).unwrap_or(0) % PALETTE.len()];
        let x = label_w + (s.start - t0) as f64 * scale;
        let w = ((s.end - s.start) as f64 * scale).max(2.0);
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{x:.1}\" y=\"{}\" width=\"{w:.1}\" height=\"{}\" fill=\"rgb({},{},{})\"><title>{} on {}: {:.1} s</title></rect>",
            label_w - 6.0,
            y + 15,
            esc(&s.label),
            y + 3,
            row_h - 6,
            colour.0,
            colour.1,
            colour.2,
            esc(&s.label),
            esc(&s.lane),
            (s.end - s.start) as f64 / 1000.0
        );
    }
    let axis_y = 24 + spans.len() * row_h;
    let _ = write!(
        out,
        "<text x=\"{label_w}\" y=\"{axis_y}\">0 s</text><text x=\"{}\" y=\"{axis_y}\" text-anchor=\"end\">{:.1} s</text>",
        label_w + plot_w,
        (t1 - t0) as f64 / 1000.0
    );
    for (i, lane) in lanes.iter().enumerate() {
        let y = axis_y + 20 + i * 24;
        let c = PALETTE[i % PALETTE.len()];
        let _ = write!(
            out,
            "<rect x=\"{label_w}\" y=\"{}\" width=\"14\" height=\"14\" fill=\"rgb({},{},{})\"/><text x=\"{}\" y=\"{}\">{}</text>",
            y - 11,
            c.0,
            c.1,
            c.2,
            label_w + 20.0,
            y,
            esc(lane)
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_charts_are_svg_with_paths() {
        let s = line_chart(
            "loss",
            "epoch",
            "loss",
            &[Series {
                name: "train".into(),
                points: vec![(0.0, 1.0), (1.0, 0.5), (2.0, 0.25)],
            }],
            false,
        );
        assert!(
            s.starts_with("<svg class=\"chart\""),
            "{}",
            &s[..60.min(s.len())]
        );
        assert!(
            s.contains("<polyline") || s.contains("<path"),
            "a drawn line"
        );
        assert!(s.contains(">\nloss\n</text>"), "the title: {s}");
    }

    #[test]
    fn confusion_and_timeline_show_their_numbers() {
        let c = confusion_matrix("gat", [[90, 2], [1, 7]]);
        assert!(c.contains(">90<") && c.contains(">7<"));
        let t = timeline(&[
            Span {
                label: "a".into(),
                lane: "host1".into(),
                start: 0,
                end: 1000,
            },
            Span {
                label: "b".into(),
                lane: "host1".into(),
                start: 500,
                end: 3000,
            },
        ]);
        assert!(t.contains(">3.0 s<"), "{t}");
    }
}
