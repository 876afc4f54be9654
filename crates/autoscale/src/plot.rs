//! SVG plots of a timeline: backlog and outstanding work (left axis) and
//! replicas (right axis) against time.

use plotters::prelude::*;

use crate::sim::Sample;

/// Draws `samples` into an SVG file at `path` with `title`.
pub fn plot_svg(path: &std::path::Path, title: &str, samples: &[Sample]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("plotting {}: {e}", path.display());
    let root = SVGBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let t_max = samples.last().map_or(1.0, |s| s.t_s.max(1.0));
    let jobs_max = samples
        .iter()
        .map(|s| s.outstanding.max(s.backlog))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let reps_max = samples.iter().map(|s| s.replicas).max().unwrap_or(1).max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .right_y_label_area_size(52)
        .build_cartesian_2d(0.0..t_max, 0.0..jobs_max * 1.05)
        .map_err(|e| err(&e))?
        .set_secondary_coord(0.0..t_max, 0.0..reps_max * 1.2);
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("jobs")
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .configure_secondary_axes()
        .y_desc("replicas")
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (s.t_s, s.outstanding as f64)),
            &BLUE,
        ))
        .map_err(|e| err(&e))?
        .label("outstanding work")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (s.t_s, s.backlog as f64)),
            &GREEN,
        ))
        .map_err(|e| err(&e))?
        .label("backlog")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    chart
        .draw_secondary_series(LineSeries::new(
            samples.iter().map(|s| (s.t_s, f64::from(s.replicas))),
            &RED,
        ))
        .map_err(|e| err(&e))?
        .label("replicas (right axis)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
