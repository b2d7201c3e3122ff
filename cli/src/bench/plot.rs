//! `--plot FILE.svg`: throughput and p99 latency against concurrency, one
//! line per server.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use super::Row;

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

pub fn draw(path: &Path, rows: &[Row]) -> Result<(), Box<dyn std::error::Error>> {
    // One series per server (and workload, when several were run).
    let mut series: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        let name = if r.workload == "echo" { r.server.clone() } else { format!("{} ({})", r.server, r.workload) };
        series.entry(name).or_default().push(r);
    }
    let max_conns = rows.iter().map(|r| r.connections).max().unwrap_or(1).max(2) as f64;
    let max_rps = rows.iter().map(|r| r.requests_per_sec).fold(1.0, f64::max) * 1.1;
    let max_p99 = rows.iter().map(|r| r.p99_us).fold(1.0, f64::max) * 1.1;
    let mode = rows.first().map_or("", |r| r.mode);

    let root = SVGBackend::new(path, (900, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(400);
    let mut rps = ChartBuilder::on(&top)
        .caption(format!("{mode}: requests per second"), ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..max_conns).log_scale(), 0f64..max_rps)?;
    rps.configure_mesh().x_desc("concurrent clients").y_desc("req/s").draw()?;
    let mut p99 = ChartBuilder::on(&bottom)
        .caption(format!("{mode}: p99 latency"), ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..max_conns).log_scale(), (1f64..max_p99).log_scale())?;
    p99.configure_mesh().x_desc("concurrent clients").y_desc("p99 µs").draw()?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut pts: Vec<_> =
            points.iter().map(|r| (r.connections as f64, r.requests_per_sec, r.p99_us.max(1.0))).collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        rps.draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        rps.draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 3, color.filled())))?;
        p99.draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.2)), color.stroke_width(2)))?;
        p99.draw_series(pts.iter().map(|p| Circle::new((p.0, p.2), 3, color.filled())))?;
    }
    rps.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
