//! Charts drawn as inline SVG: no script, no font or file from elsewhere,
//! so the page shows the same offline, in a mail client or printed.

use std::fmt::Write;

/// Text safe inside SVG and HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A series of a column chart.
#[derive(Clone, Debug)]
pub struct Series<'a> {
    pub name: &'a str,
    pub color: &'a str,
    pub values: Vec<f64>,
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Horizontal bars, one per item, longest first as given; `suffix` follows
/// each value (`" %"`).
pub fn bars(title: &str, items: &[(String, f64)], suffix: &str, color: &str) -> String {
    let row = 22.0;
    let label_width = 230.0;
    let bar_width = 420.0;
    let height = 34.0 + row * items.len() as f64;
    let max = items.iter().map(|(_, v)| *v).fold(0.0, f64::max).max(1e-9);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" role="img" aria-label="{t}" width="{w}" height="{height}" viewBox="0 0 {w} {height}"><title>{t}</title><text x="0" y="16" class="chart-title">{t}</text>"#,
        t = escape(title),
        w = label_width + bar_width + 70.0,
    );
    for (i, (label, value)) in items.iter().enumerate() {
        let y = 28.0 + row * i as f64;
        let w = (bar_width * value / max).max(if *value > 0.0 { 1.0 } else { 0.0 });
        let _ = write!(
            svg,
            r#"<text x="{lx}" y="{ty}" text-anchor="end">{label}</text><rect x="{bx}" y="{y}" width="{w:.1}" height="16" fill="{color}"/><text x="{vx:.1}" y="{ty}">{v}{suffix}</text>"#,
            lx = label_width - 6.0,
            ty = y + 12.5,
            label = escape(label),
            bx = label_width,
            vx = label_width + w + 4.0,
            v = number(*value),
            suffix = escape(suffix),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Stacked columns over `labels` (weeks), with a legend.
pub fn columns(title: &str, labels: &[String], series: &[Series<'_>], suffix: &str) -> String {
    let plot_height = 180.0;
    let column = 26.0_f64.min(640.0 / labels.len().max(1) as f64);
    let left = 44.0;
    let width = left + column * labels.len() as f64 + 20.0;
    let width = width.max(360.0);
    let totals: Vec<f64> = (0..labels.len())
        .map(|i| {
            series
                .iter()
                .map(|s| s.values.get(i).copied().unwrap_or(0.0))
                .sum()
        })
        .collect();
    let max = totals.iter().copied().fold(0.0, f64::max).max(1e-9);
    let top = 40.0;
    let height = top + plot_height + 70.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" role="img" aria-label="{t}" width="{width}" height="{height}" viewBox="0 0 {width} {height}"><title>{t}</title><text x="0" y="16" class="chart-title">{t}</text>"#,
        t = escape(title),
    );
    let mut x = 0.0;
    for s in series {
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="24" width="10" height="10" fill="{c}"/><text x="{tx}" y="33">{n}</text>"#,
            c = s.color,
            tx = x + 14.0,
            n = escape(s.name),
        );
        x += 24.0 + 7.0 * s.name.chars().count() as f64;
    }
    let base = top + plot_height;
    let _ = write!(
        svg,
        r##"<line x1="{left}" y1="{base}" x2="{r}" y2="{base}" stroke="#888"/><text x="{lx}" y="{ty}" text-anchor="end">{m}{suffix}</text><text x="{lx}" y="{base}" text-anchor="end">0</text>"##,
        r = left + column * labels.len() as f64,
        lx = left - 4.0,
        ty = top + 4.0,
        m = number(max),
        suffix = escape(suffix),
    );
    for (i, label) in labels.iter().enumerate() {
        let cx = left + column * i as f64;
        let mut y = base;
        for s in series {
            let v = s.values.get(i).copied().unwrap_or(0.0);
            let h = plot_height * v / max;
            if h > 0.0 {
                y -= h;
                let _ = write!(
                    svg,
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{c}"><title>{l}: {n} {v}{suffix}</title></rect>"#,
                    x = cx + 2.0,
                    w = column - 4.0,
                    c = s.color,
                    l = escape(label),
                    n = escape(s.name),
                    v = number(v),
                    suffix = escape(suffix),
                );
            }
        }
        let _ = write!(
            svg,
            r#"<text transform="translate({tx:.1},{ty}) rotate(-60)" text-anchor="end">{l}</text>"#,
            tx = cx + column / 2.0 + 3.0,
            ty = base + 10.0,
            l = escape(label.rsplit('-').next().unwrap_or(label)),
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_escape_their_text_and_draw_a_shape_per_value() {
        let svg = bars(
            "A <b>",
            &[("x&y".into(), 2.0), ("z".into(), 1.0)],
            " %",
            "#2b6cb0",
        );
        assert!(svg.contains("A &lt;b&gt;") && svg.contains("x&amp;y"));
        assert_eq!(svg.matches("<rect").count(), 2);
        let svg = columns(
            "t",
            &["2025-W36".into(), "2025-W37".into()],
            &[Series {
                name: "errors",
                color: "#c53030",
                values: vec![1.0, 0.0],
            }],
            "",
        );
        // A legend swatch and one column (a zero draws nothing).
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains(">W36<"));
    }
}
