//! The report's charts, drawn by plotters as SVG kept inline in the page: the
//! candidate's traffic with its stages and events, and each gate's two sides with the
//! judge's evidence beneath. Every measured point is drawn as a marker, so a chart with
//! data shows it even where a line has a single point.

use plotters::coord::Shift;
use plotters::prelude::*;

use coalmine::text::duration;

pub const CANARY: RGBColor = RGBColor(214, 96, 39);
pub const STABLE: RGBColor = RGBColor(44, 110, 170);
pub const LIMIT: RGBColor = RGBColor(70, 70, 70);
pub const ROLLBACK: RGBColor = RGBColor(190, 30, 45);
const BAND: [RGBColor; 2] = [RGBColor(244, 246, 249), RGBColor(232, 237, 244)];
const GRID: RGBColor = RGBColor(226, 226, 226);
const FONT: &str = "sans-serif";
const WIDTH: u32 = 880;

/// A stretch of the release under one phase: a stage, or the shadow.
pub struct Band {
    pub from: f64,
    pub to: f64,
    pub label: String,
}

/// A moment on the time axis worth a marker: its number in the events list.
pub struct Marker {
    pub at: f64,
    pub number: usize,
}

/// The time axis every chart of one report shares, in seconds since the start.
pub struct Span {
    pub end: f64,
    pub bands: Vec<Band>,
    pub markers: Vec<Marker>,
}

/// One gate's chart: its two sides, its tolerance, and the share of the way to a
/// rollback the evidence had come at each check.
pub struct GateSeries<'a> {
    pub unit: &'a str,
    pub canary: Vec<(f64, f64)>,
    pub stable: Vec<(f64, f64)>,
    pub tolerance: Vec<(f64, f64)>,
    /// 0 to 100.
    pub way: Vec<(f64, f64)>,
}

type Failed = String;

fn failed<E: std::fmt::Debug>(what: &str) -> impl Fn(E) -> Failed + '_ {
    move |e| format!("drawing the {what} chart failed: {e:?}")
}

/// The candidate's share of traffic over time (a step at each check), the stages as
/// bands, and numbered markers where something happened. The legends are the page's, in
/// HTML beside each chart, where they never cover a point.
pub fn traffic(span: &Span, weights: &[(f64, f64)]) -> Result<String, Failed> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 250)).into_drawing_area();
        root.fill(&WHITE).map_err(failed("traffic"))?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(52)
            .build_cartesian_2d(0.0..span.end, 0.0..105.0)
            .map_err(failed("traffic"))?;
        bands(&mut chart, span, 0.0, 105.0).map_err(failed("traffic"))?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .x_labels(x_labels(span))
            .y_labels(6)
            .x_label_formatter(&|t| duration(t.max(0.0) as u64))
            .y_label_formatter(&|y| format!("{y:.0}%"))
            .y_desc("candidate's traffic")
            .label_style((FONT, 12))
            .draw()
            .map_err(failed("traffic"))?;
        let steps = steps(weights, span.end);
        chart.draw_series(LineSeries::new(steps, CANARY.stroke_width(2))).map_err(failed("traffic"))?;
        chart
            .draw_series(weights.iter().map(|&(t, w)| Circle::new((t, w), 3, CANARY.filled())))
            .map_err(failed("traffic"))?;
        markers(&mut chart, span, 105.0).map_err(failed("traffic"))?;
        root.present().map_err(failed("traffic"))?;
    }
    Ok(svg)
}

/// A gate: canary and stable per check with the tolerance dashed above them, and beneath,
/// how far the evidence had come to a rollback (100% rolls back).
pub fn gate(span: &Span, series: &GateSeries<'_>) -> Result<String, Failed> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 330)).into_drawing_area();
        root.fill(&WHITE).map_err(failed("gate"))?;
        let (top, bottom) = root.split_vertically(210);
        values(&top, span, series)?;
        way(&bottom, span, &series.way)?;
        root.present().map_err(failed("gate"))?;
    }
    Ok(svg)
}

fn values(area: &DrawingArea<SVGBackend<'_>, Shift>, span: &Span, series: &GateSeries<'_>) -> Result<(), Failed> {
    let all = series.canary.iter().chain(&series.stable).chain(&series.tolerance).map(|(_, v)| *v);
    let top = all.fold(0.0_f64, f64::max);
    let top = if top > 0.0 { top * 1.15 } else { 1.0 };
    let unit = series.unit.to_owned();
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .margin_bottom(0)
        .x_label_area_size(0)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..span.end, 0.0..top)
        .map_err(failed("gate"))?;
    bands(&mut chart, span, 0.0, top).map_err(failed("gate"))?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID)
        .disable_x_mesh()
        .y_labels(5)
        .y_label_formatter(&|y| format!("{}{unit}", coalmine::release::judge::figure(*y)))
        .label_style((FONT, 12))
        .draw()
        .map_err(failed("gate"))?;
    // The tolerance as it stood at each check: a dash there, dashed between.
    let dash = span.end / 120.0;
    chart
        .draw_series(DashedLineSeries::new(series.tolerance.clone(), 6, 4, LIMIT.stroke_width(1)))
        .map_err(failed("gate"))?;
    chart
        .draw_series(
            series
                .tolerance
                .iter()
                .map(|&(t, v)| PathElement::new(vec![(t - dash, v), (t + dash, v)], LIMIT.stroke_width(2))),
        )
        .map_err(failed("gate"))?;
    for (points, colour) in [(&series.stable, STABLE), (&series.canary, CANARY)] {
        chart.draw_series(LineSeries::new(points.iter().copied(), colour.stroke_width(2))).map_err(failed("gate"))?;
        chart
            .draw_series(points.iter().map(|&(t, v)| Circle::new((t, v), 3, colour.filled())))
            .map_err(failed("gate"))?;
    }
    markers(&mut chart, span, top).map_err(failed("gate"))?;
    Ok(())
}

fn way(area: &DrawingArea<SVGBackend<'_>, Shift>, span: &Span, way: &[(f64, f64)]) -> Result<(), Failed> {
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .margin_top(4)
        .x_label_area_size(28)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..span.end, 0.0..110.0)
        .map_err(failed("evidence"))?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID)
        .x_labels(x_labels(span))
        .y_labels(3)
        .x_label_formatter(&|t| duration(t.max(0.0) as u64))
        .y_label_formatter(&|y| format!("{y:.0}%"))
        .y_desc("to a rollback")
        .label_style((FONT, 12))
        .draw()
        .map_err(failed("evidence"))?;
    chart
        .draw_series(DashedLineSeries::new(vec![(0.0, 100.0), (span.end, 100.0)], 6, 4, ROLLBACK.stroke_width(1)))
        .map_err(failed("evidence"))?;
    chart.draw_series(LineSeries::new(way.iter().copied(), ROLLBACK.stroke_width(2))).map_err(failed("evidence"))?;
    chart
        .draw_series(way.iter().map(|&(t, w)| Circle::new((t, w), 3, ROLLBACK.filled())))
        .map_err(failed("evidence"))?;
    Ok(())
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

fn bands(
    chart: &mut Chart<'_, '_>,
    span: &Span,
    low: f64,
    high: f64,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    chart.draw_series(
        span.bands
            .iter()
            .enumerate()
            .map(|(i, band)| Rectangle::new([(band.from, low), (band.to, high)], BAND[i % 2].filled())),
    )?;
    chart.draw_series(
        span.bands
            .iter()
            .map(|band| Text::new(band.label.clone(), (band.from, high), (FONT, 11).into_font().color(&LIMIT))),
    )?;
    Ok(())
}

fn markers(chart: &mut Chart<'_, '_>, span: &Span, high: f64) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    chart.draw_series(
        span.markers.iter().map(|m| PathElement::new(vec![(m.at, 0.0), (m.at, high * 0.93)], LIMIT.mix(0.5))),
    )?;
    chart.draw_series(
        span.markers
            .iter()
            .map(|m| Text::new(format!("{}", m.number), (m.at, high * 0.97), (FONT, 11).into_font().color(&LIMIT))),
    )?;
    Ok(())
}

/// As many time labels as there are whole seconds to label, up to eight.
fn x_labels(span: &Span) -> usize {
    (span.end as usize + 1).clamp(2, 8)
}

/// A share that holds from one check to the next: a step at each.
fn steps(points: &[(f64, f64)], end: f64) -> Vec<(f64, f64)> {
    let mut stepped = Vec::with_capacity(points.len() * 2 + 1);
    for (i, &(t, w)) in points.iter().enumerate() {
        stepped.push((t, w));
        let next = points.get(i + 1).map_or(end, |(t, _)| *t);
        stepped.push((next, w));
    }
    stepped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span() -> Span {
        Span {
            end: 120.0,
            bands: vec![Band { from: 0.0, to: 60.0, label: "stage 1".into() }],
            markers: vec![Marker { at: 60.0, number: 1 }],
        }
    }

    #[test]
    fn each_check_is_a_marker_on_the_chart() {
        let svg = traffic(&span(), &[(0.0, 5.0), (60.0, 25.0), (120.0, 0.0)]).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert_eq!(svg.matches("<circle").count(), 3, "one per check");
        let series = GateSeries {
            unit: "%",
            canary: vec![(0.0, 1.0), (60.0, 4.0)],
            stable: vec![(0.0, 0.5), (60.0, 0.5)],
            tolerance: vec![(0.0, 0.5), (60.0, 0.5)],
            way: vec![(0.0, 10.0), (60.0, 100.0)],
        };
        let svg = gate(&span(), &series).unwrap();
        assert_eq!(svg.matches("<circle").count(), 6, "canary, stable and evidence, two checks each");
    }

    #[test]
    fn a_share_holds_until_the_next_check() {
        assert_eq!(steps(&[(0.0, 5.0), (10.0, 25.0)], 30.0), [(0.0, 5.0), (10.0, 5.0), (10.0, 25.0), (30.0, 25.0)]);
    }
}
