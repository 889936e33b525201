//! PNG charts: training curves, confusion matrices and scatter plots.

use std::path::Path;
use std::sync::Once;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::metrics::ConfusionMatrix;

/// Bundled so charts render the same on any machine, with no system font lookup.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn ensure_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        register_font("sans-serif", FontStyle::Normal, FONT).unwrap_or_else(|_| panic!("bundled font is valid"));
    });
}

/// One named line of (x, y) points.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// Draws lines against the epoch, e.g. train and valid loss.
pub fn line_chart(path: &Path, title: &str, y_label: &str, series: &[Series]) -> Result<()> {
    ensure_font();
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all.filter(|(_, y)| y.is_finite()) {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.08).max(1e-3);
    let root = BitMapBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(1.0..x_max.max(2.0), (y_min - pad)..(y_max + pad))
        .map_err(plot_err)?;
    chart.configure_mesh().x_desc("epoch").y_desc(y_label).label_style(("sans-serif", 14)).draw().map_err(plot_err)?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(s.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(plot_err)?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).label_font(("sans-serif", 14)).draw().map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Draws a confusion matrix as a heat map, rows = truth, columns = prediction.
pub fn confusion_png(path: &Path, matrix: &ConfusionMatrix, classes: &[String]) -> Result<()> {
    ensure_font();
    let n = classes.len();
    let cell = 56u32;
    let margin = 150u32; // left, for the class names
    let top = 60u32;
    let size = (margin + cell * n as u32 + 30, top + cell * n as u32 + 30);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    root.draw_text("predicted →", &("sans-serif", 16).into_text_style(&root), (margin as i32, 8)).map_err(plot_err)?;
    root.draw_text("truth ↓", &("sans-serif", 16).into_text_style(&root), (10, top as i32 - 24)).map_err(plot_err)?;
    for (i, row) in matrix.counts.iter().enumerate() {
        let total: u64 = row.iter().sum::<u64>().max(1);
        for (j, &v) in row.iter().enumerate() {
            let share = v as f64 / total as f64;
            let shade = (255.0 * (1.0 - share)) as u8;
            let (x, y) = ((margin + j as u32 * cell) as i32, (top + i as u32 * cell) as i32);
            root.draw(&Rectangle::new([(x, y), (x + cell as i32, y + cell as i32)], RGBColor(shade, shade, 255).filled())).map_err(plot_err)?;
            let color = if share > 0.5 { WHITE } else { BLACK };
            let style = ("sans-serif", 14).into_font().color(&color);
            root.draw_text(&v.to_string(), &style, (x + 6, y + cell as i32 / 2 - 7)).map_err(plot_err)?;
        }
        // Rows carry the names; columns the same indices, so no rotated text is needed.
        let label = ("sans-serif", 14).into_text_style(&root);
        let row = (top + i as u32 * cell + cell / 2 - 7) as i32;
        let column = (margin + i as u32 * cell + cell / 2 - 11) as i32;
        root.draw_text(&format!("({i}) {}", short(&classes[i])), &label, (6, row)).map_err(plot_err)?;
        root.draw_text(&format!("({i})"), &label, (column, top as i32 - 22)).map_err(plot_err)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Draws groups of 2-D points in a colour each, e.g. customer segments on their first two
/// principal components.
pub fn scatter_chart(path: &Path, title: &str, axes: (&str, &str), groups: &[Series]) -> Result<()> {
    ensure_font();
    let all: Vec<(f64, f64)> = groups.iter().flat_map(|g| g.points.iter().copied()).filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    let range = |f: fn(&(f64, f64)) -> f64| {
        let (lo, hi) = all.iter().map(f).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if lo.is_finite() { (lo - (hi - lo) * 0.05 - 1e-9, hi + (hi - lo) * 0.05 + 1e-9) } else { (-1.0, 1.0) }
    };
    let ((x0, x1), (y0, y1)) = (range(|p| p.0), range(|p| p.1));
    let root = BitMapBackend::new(path, (760, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(plot_err)?;
    chart.configure_mesh().x_desc(axes.0).y_desc(axes.1).label_style(("sans-serif", 14)).draw().map_err(plot_err)?;
    for (i, g) in groups.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(g.points.iter().map(|&p| Circle::new(p, 2, color.mix(0.7).filled())))
            .map_err(plot_err)?
            .label(g.name)
            .legend(move |(x, y)| Circle::new((x + 9, y), 4, color.filled()));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).label_font(("sans-serif", 14)).draw().map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

fn short(name: &str) -> String {
    name.chars().take(16).collect()
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing chart: {e:?}")
}
