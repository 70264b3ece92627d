//! The report's PNG plots (plotters' bitmap backend; text drawn with ab_glyph from the
//! DejaVu Sans file in `tests/assets/`, so no system font or library is needed).

use std::path::Path;
use std::sync::Once;

use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub type PlotResult = Result<(), String>;

pub const SIZE: (u32, u32) = (900, 500);
const FONT: &str = "sans-serif";
/// The minor grid lines: barely there.
const LIGHT: RGBColor = RGBColor(0xee, 0xee, 0xee);

/// certflow, and the two reference flavours.
pub const CERTFLOW: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
pub const STANDARD: RGBColor = RGBColor(0xd6, 0x27, 0x28);
pub const EXPRESS: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
pub const GREY: RGBColor = RGBColor(0x88, 0x88, 0x88);

static FONT_ONCE: Once = Once::new();

/// Registers the bundled font (once per process).
pub fn register_font() {
    FONT_ONCE.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/DejaVuSans.ttf");
        if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_err() {
            eprintln!("report: the bundled font could not be read; plots will lack text");
        }
    });
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn font(size: u32) -> TextStyle<'static> {
    (FONT, size).into_font().color(&BLACK)
}

/// Bars grouped by category: one bar per series in each category, its value above it.
pub fn grouped_bars(
    path: &Path,
    title: &str,
    y_desc: &str,
    categories: &[String],
    series: &[(&str, RGBColor, Vec<f64>)],
    legend: SeriesLabelPosition,
) -> PlotResult {
    register_font();
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let max = series
        .iter()
        .flat_map(|(_, _, v)| v.iter().copied())
        .fold(0.0f64, f64::max);
    let top = if max > 0.0 { max * 1.25 } else { 1.0 };
    let n = categories.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, font(22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n as f64, 0f64..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .light_line_style(LIGHT)
        .y_desc(y_desc)
        .y_label_formatter(&|y| si(*y))
        .label_style(font(14))
        .axis_desc_style(font(15))
        .draw()
        .map_err(err)?;

    // Category names under the axis, drawn at the pixels of each category's centre.
    for (i, name) in categories.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        root.draw(&Text::new(
            name.clone(),
            (px, py + 8),
            font(14).pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(err)?;
    }
    // Each category spans [i, i + 1); its bars share the middle 80 % of it.
    let k = series.len().max(1) as f64;
    for (si_, (name, color, values)) in series.iter().enumerate() {
        let c = *color;
        let bars: Vec<(f64, f64, f64)> = values
            .iter()
            .enumerate()
            .filter(|(_, v)| **v > 0.0)
            .map(|(ci, v)| {
                let x0 = ci as f64 + 0.1 + 0.8 * si_ as f64 / k;
                (x0, x0 + 0.8 / k, *v)
            })
            .collect();
        chart
            .draw_series(
                bars.iter()
                    .map(|&(x0, x1, v)| Rectangle::new([(x0, 0.0), (x1, v)], c.filled())),
            )
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], c.filled()));
        chart
            .draw_series(bars.iter().map(|&(x0, x1, v)| {
                Text::new(
                    value_label(v),
                    ((x0 + x1) / 2.0, v),
                    font(12).pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            }))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.9))
        .border_style(GREY)
        .label_font(font(14))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Lines over a log x axis and a log y axis, each point labelled with its value.
pub fn log_lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    xs: &[f64],
    series: &[(&str, RGBColor, Vec<f64>)],
    label: impl Fn(f64) -> String,
) -> PlotResult {
    register_font();
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let ys = series.iter().flat_map(|(_, _, v)| v.iter().copied());
    let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
    let (lo, hi) = if lo > 0.0 && hi > lo {
        (lo / 2.0, hi * 3.0)
    } else {
        (0.1, 10.0)
    };
    let x_lo = xs.iter().copied().fold(f64::MAX, f64::min) / 2.0;
    let x_hi = xs.iter().copied().fold(f64::MIN, f64::max) * 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, font(22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), (lo..hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .light_line_style(LIGHT)
        .x_label_formatter(&|x| si(*x))
        .y_label_formatter(&|y| format!("${}", si(*y)))
        .label_style(font(14))
        .axis_desc_style(font(15))
        .draw()
        .map_err(err)?;
    for (name, color, values) in series {
        let pts: Vec<(f64, f64)> = xs.iter().copied().zip(values.iter().copied()).collect();
        let c = *color;
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(3)))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], c.filled()));
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 5, c.filled())))
            .map_err(err)?;
        chart
            .draw_series(pts.iter().map(|&(x, y)| {
                EmptyElement::at((x, y))
                    + Text::new(
                        label(y),
                        (8, -4),
                        font(13).pos(Pos::new(HPos::Left, VPos::Bottom)),
                    )
            }))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(GREY)
        .label_font(font(14))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// A line: its legend, colour, points, and whether it is dashed (a reference line).
pub type LineSpec<'a> = (&'a str, RGBColor, Vec<(f64, f64)>, bool);

/// A line chart over linear axes, with an optional vertical marker (`mark`: x, label).
#[allow(clippy::too_many_arguments)]
pub fn lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[LineSpec],
    mark: Option<(f64, String)>,
    y_top: Option<f64>,
) -> PlotResult {
    register_font();
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let pts = || series.iter().flat_map(|(_, _, p, _)| p.iter().copied());
    let x_hi = pts().map(|p| p.0).fold(0.0f64, f64::max) * 1.08;
    let y_hi = y_top.unwrap_or_else(|| pts().map(|p| p.1).fold(0.0f64, f64::max) * 1.15);
    let x_hi = if x_hi > 0.0 { x_hi } else { 1.0 };
    let y_hi = if y_hi > 0.0 { y_hi } else { 1.0 };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, font(22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_hi, 0f64..y_hi)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .light_line_style(LIGHT)
        .x_label_formatter(&|x| si(*x))
        .y_label_formatter(&|y| si(*y))
        .label_style(font(14))
        .axis_desc_style(font(15))
        .draw()
        .map_err(err)?;
    for (name, color, points, dashed) in series {
        let c = *color;
        let visible: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.1 <= y_hi).collect();
        if *dashed {
            chart
                .draw_series(DashedLineSeries::new(visible, 8, 6, c.stroke_width(2)))
                .map_err(err)?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c));
        } else {
            chart
                .draw_series(LineSeries::new(visible.clone(), c.stroke_width(3)))
                .map_err(err)?
                .label(*name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], c.filled()));
            chart
                .draw_series(visible.iter().map(|p| Circle::new(*p, 5, c.filled())))
                .map_err(err)?;
        }
    }
    if let Some((x, text)) = mark {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x, 0.0), (x, y_hi)],
                6,
                4,
                GREY.stroke_width(2),
            ))
            .map_err(err)?;
        // The label runs away from the legend (upper left): rightwards from a marker
        // in the left half, leftwards from one in the right half.
        let (h, dx) = if x < x_hi / 2.0 {
            (HPos::Left, 6)
        } else {
            (HPos::Right, -6)
        };
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((x, y_hi))
                    + Text::new(text, (dx, 6), font(14).pos(Pos::new(h, VPos::Top))),
            ))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(GREY)
        .label_font(font(14))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn value_label(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// 1500 → "1.5k", 1e6 → "1M", 0.5 → "0.5".
pub fn si(x: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    let a = x.abs();
    if a >= 1e6 {
        format!("{}M", trim(format!("{:.1}", x / 1e6)))
    } else if a >= 1e3 {
        format!("{}k", trim(format!("{:.1}", x / 1e3)))
    } else if a >= 10.0 || a == 0.0 {
        trim(format!("{x:.0}"))
    } else if a >= 1.0 {
        trim(format!("{x:.1}"))
    } else {
        trim(format!("{x:.2}"))
    }
}
