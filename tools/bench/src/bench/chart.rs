//! The bench's figures as a picture: namespaces over time through the operator and applied
//! directly, and the operator's memory over time. A few dozen lines of SVG by hand rather
//! than a plotting crate: two panels of polylines need no dependency (and no compile time on
//! the machines the bench runs on).
use std::fmt::Write;

const W: f64 = 760.0;
const PANEL_H: f64 = 220.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const GAP: f64 = 70.0;

/// One line of a panel: its legend, colour and points (seconds, value).
pub struct Line<'a> {
    pub label: &'a str,
    pub colour: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// An SVG with two panels sharing the time axis: `upper` (namespaces) and `lower` (MiB).
pub fn svg(
    title: &str,
    upper: &[Line],
    upper_unit: &str,
    lower: &[Line],
    lower_unit: &str,
) -> String {
    let t_max = nice(
        upper
            .iter()
            .chain(lower)
            .flat_map(|l| l.points.iter().map(|p| p.0))
            .fold(1.0, f64::max),
    );
    let h = TOP + 2.0 * PANEL_H + GAP + 40.0;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>
"#,
        escape(title)
    );
    panel(&mut out, TOP, upper, upper_unit, t_max);
    panel(&mut out, TOP + PANEL_H + GAP, lower, lower_unit, t_max);
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, top: f64, lines: &[Line], unit: &str, t_max: f64) {
    let v_max = nice(
        lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .fold(1.0, f64::max),
    );
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, top + PANEL_H, top);
    let x = |t: f64| x0 + (x1 - x0) * t / t_max;
    let y = |v: f64| y0 - (y0 - y1) * v / v_max;
    let _ = writeln!(
        out,
        r##"<rect x="{x0}" y="{y1}" width="{}" height="{PANEL_H}" fill="none" stroke="#999"/>"##,
        x1 - x0
    );
    for i in 0..=5 {
        let (t, v) = (t_max * i as f64 / 5.0, v_max * i as f64 / 5.0);
        let _ = writeln!(
            out,
            r##"<line x1="{x0}" x2="{x1}" y1="{yv:.1}" y2="{yv:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text><text x="{xt:.1}" y="{}" text-anchor="middle">{} s</text>"##,
            x0 - 6.0,
            y(v) + 4.0,
            short(v),
            y0 + 16.0,
            short(t),
            yv = y(v),
            xt = x(t),
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text>"#,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0,
        escape(unit)
    );
    for (i, line) in lines.iter().enumerate() {
        let points: Vec<String> = line
            .points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/><text x="{:.1}" y="{:.1}" fill="{}">{}</text>"#,
            line.colour,
            points.join(" "),
            x0 + 10.0,
            y1 + 16.0 + 16.0 * i as f64,
            line.colour,
            escape(line.label)
        );
    }
}

/// The next round number at or above `v` (1, 2, 2.5, 4, 5, 6 or 8 times a power of ten).
fn nice(v: f64) -> f64 {
    let p = 10f64.powf(v.max(1e-9).log10().floor());
    [1.0, 2.0, 2.5, 4.0, 5.0, 6.0, 8.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|n| *n >= v)
        .unwrap_or(10.0 * p)
}

fn short(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice(7.3), 8.0);
        assert_eq!(nice(180.0), 200.0);
        assert_eq!(nice(3.3), 4.0);
        assert_eq!(nice(2300.0), 2500.0);
        assert_eq!(nice(600.0), 600.0);
        assert_eq!(nice(610.0), 800.0);
    }

    #[test]
    fn a_chart_holds_one_polyline_per_line() {
        let up = [
            Line {
                label: "operator",
                colour: "#1f77b4",
                points: vec![(0.0, 0.0), (5.0, 600.0)],
            },
            Line {
                label: "direct",
                colour: "#ff7f0e",
                points: vec![(0.0, 0.0), (4.0, 600.0)],
            },
        ];
        let down = [Line {
            label: "RSS",
            colour: "#2ca02c",
            points: vec![(0.0, 20.0), (5.0, 40.0)],
        }];
        let s = svg("a & b", &up, "namespaces", &down, "MiB");
        assert_eq!(s.matches("<polyline").count(), 3);
        assert!(s.contains("a &amp; b") && s.ends_with("</svg>\n"));
    }
}
