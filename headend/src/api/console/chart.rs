//! A trend chart as server-rendered SVG (no script, so it shows with
//! JavaScript off and under the console's Content-Security-Policy): the
//! band of each interval's min..max, its mean as a line, gaps shaded,
//! marks (deliveries) as vertical lines, and an optional projection drawn
//! ahead (a tank's rate down to its runout). Pure: the points and the
//! window in, markup out; however many points come in, at most one per
//! pixel column goes out (a year of hourly rollups is 8,760 points and
//! draws as 760).

use jiff::Timestamp;
use jiff::tz::TimeZone;
use maud::{Markup, html};

/// The drawing's size in SVG units (it scales to the page's width).
const W: f64 = 800.0;
const H: f64 = 260.0;
/// Margins: left for the value axis, bottom for the time axis.
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// One interval's values (a raw reading has lo = mid = hi).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub t_ms: i64,
    pub lo: f64,
    pub mid: f64,
    pub hi: f64,
}

/// A vertical mark (a delivery) with what its tooltip says.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub t_ms: i64,
    pub label: String,
}

/// A straight projection from (t0, v0) to (t1, v1), drawn dashed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ahead {
    pub from: (i64, f64),
    pub to: (i64, f64),
}

/// What to draw.
pub struct Chart<'a> {
    /// The window shown, ms.
    pub from_ms: i64,
    pub to_ms: i64,
    /// Oldest first.
    pub points: Vec<Point>,
    /// A longer silence between points than this is a gap (shaded).
    pub gap_after_ms: i64,
    pub marks: Vec<Mark>,
    pub ahead: Option<Ahead>,
    pub unit: &'a str,
    /// Said to screen readers (the chart's accessible name).
    pub title: &'a str,
    pub tz: &'a TimeZone,
}

/// The spans with no point for longer than `after` in `from..to`
/// (including before the first and after the last point).
pub fn gaps(points: &[Point], from_ms: i64, to_ms: i64, after: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut last = from_ms;
    for p in points
        .iter()
        .filter(|p| (from_ms..=to_ms).contains(&p.t_ms))
    {
        if p.t_ms.saturating_sub(last) > after {
            out.push((last, p.t_ms));
        }
        last = last.max(p.t_ms);
    }
    if to_ms.saturating_sub(last) > after {
        out.push((last, to_ms));
    }
    out
}

/// At most one point per `columns` column of `from..to`: a column's band
/// is its points' lowest and highest, its line their mean; its time the
/// last point's. Points outside the window are dropped.
pub fn thin(points: &[Point], from_ms: i64, to_ms: i64, columns: usize) -> Vec<Point> {
    let span = to_ms.saturating_sub(from_ms).max(1) as f64;
    let mut out: Vec<(usize, Point, usize)> = Vec::new();
    for p in points
        .iter()
        .filter(|p| (from_ms..=to_ms).contains(&p.t_ms))
    {
        if !(p.lo.is_finite() && p.mid.is_finite() && p.hi.is_finite()) {
            continue;
        }
        let col = (((p.t_ms.saturating_sub(from_ms) as f64 / span) * columns as f64) as usize)
            .min(columns.saturating_sub(1));
        match out.last_mut() {
            Some((c, q, n)) if *c == col => {
                q.lo = q.lo.min(p.lo);
                q.hi = q.hi.max(p.hi);
                q.mid = (q.mid * *n as f64 + p.mid) / (*n + 1) as f64;
                q.t_ms = p.t_ms;
                *n += 1;
            }
            _ => out.push((col, *p, 1)),
        }
    }
    out.into_iter().map(|(_, p, _)| p).collect()
}

/// Round numbers to put on an axis from `lo` to `hi`: about `n` of them.
pub fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo || n == 0 {
        return Vec::new();
    }
    let raw = (hi - lo) / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut v = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while v <= hi + step * 1e-9 && out.len() < 4 * n {
        out.push(v);
        v += step;
    }
    out
}

fn label(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The time axis' labels: the window cut in about six, each written as
/// fits the span (hours within two days, days within two months, months).
fn time_ticks(from_ms: i64, to_ms: i64, tz: &TimeZone) -> Vec<(i64, String)> {
    let span = to_ms.saturating_sub(from_ms).max(0);
    let fmt = if span <= 2 * 86_400_000 {
        "%H:%M"
    } else if span <= 62 * 86_400_000 {
        "%d %b"
    } else {
        "%b %Y"
    };
    (0..=5)
        .map(|i| from_ms.saturating_add(span / 5 * i))
        .filter_map(|t| {
            let ts = Timestamp::from_millisecond(t).ok()?;
            Some((t, ts.to_zoned(tz.clone()).strftime(fmt).to_string()))
        })
        .collect()
}

/// The chart as SVG markup.
pub fn render(c: &Chart) -> Markup {
    let columns = (W - LEFT - RIGHT) as usize;
    let shaded = gaps(&c.points, c.from_ms, c.to_ms, c.gap_after_ms);
    let pts = thin(&c.points, c.from_ms, c.to_ms, columns);
    let mut lo = pts.iter().map(|p| p.lo).fold(f64::INFINITY, f64::min);
    let mut hi = pts.iter().map(|p| p.hi).fold(f64::NEG_INFINITY, f64::max);
    if let Some(a) = c.ahead {
        for v in [a.from.1, a.to.1] {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if !(lo.is_finite() && hi.is_finite()) {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        (lo, hi) = (lo - 1.0, hi + 1.0);
    }
    let pad = (hi - lo) * 0.05;
    let (lo, hi) = (lo - pad, hi + pad);
    let span = c.to_ms.saturating_sub(c.from_ms).max(1) as f64;
    let x = |t: i64| {
        LEFT + (t.saturating_sub(c.from_ms) as f64 / span).clamp(0.0, 1.0) * (W - LEFT - RIGHT)
    };
    let y = |v: f64| TOP + (1.0 - (v - lo) / (hi - lo)) * (H - TOP - BOTTOM);
    // the line and the band, broken at each gap
    let mut line = String::new();
    let mut band = String::new();
    let mut run: Vec<Point> = Vec::new();
    let mut flush = |run: &mut Vec<Point>| {
        if run.is_empty() {
            return;
        }
        for (i, p) in run.iter().enumerate() {
            let cmd = if i == 0 { 'M' } else { 'L' };
            line.push_str(&format!("{cmd}{:.1} {:.1}", x(p.t_ms), y(p.mid)));
        }
        if run.iter().any(|p| p.hi > p.lo) {
            for (i, p) in run.iter().enumerate() {
                let cmd = if i == 0 { 'M' } else { 'L' };
                band.push_str(&format!("{cmd}{:.1} {:.1}", x(p.t_ms), y(p.hi)));
            }
            for p in run.iter().rev() {
                band.push_str(&format!("L{:.1} {:.1}", x(p.t_ms), y(p.lo)));
            }
            band.push('Z');
        }
        run.clear();
    };
    for p in &pts {
        let broken = run
            .last()
            .is_some_and(|q| shaded.iter().any(|(a, b)| q.t_ms <= *a && p.t_ms >= *b));
        if broken {
            flush(&mut run);
        }
        run.push(*p);
    }
    flush(&mut run);
    let (top, bottom) = (TOP, H - BOTTOM);
    let desc = format!(
        "{} points from {} to {}; {} gaps shaded; {} marks",
        c.points.len(),
        label_time(c.from_ms),
        label_time(c.to_ms),
        shaded.len(),
        c.marks.len()
    );
    html! {
        svg.chart viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(c.title) {
            title { (c.title) }
            desc { (desc) }
            @for (a, b) in &shaded {
                rect.gap x=(format!("{:.1}", x(*a))) y=(top) width=(format!("{:.1}", (x(*b) - x(*a)).max(0.5))) height=(bottom - top) {
                    title { "no data" }
                }
            }
            @for v in ticks(lo, hi, 4) {
                line.grid x1=(LEFT) x2=(W - RIGHT) y1=(format!("{:.1}", y(v))) y2=(format!("{:.1}", y(v))) {}
                text.axis x=(LEFT - 6.0) y=(format!("{:.1}", y(v) + 4.0)) text-anchor="end" { (label(v)) }
            }
            @let labels = time_ticks(c.from_ms, c.to_ms, c.tz);
            @for (i, (t, l)) in labels.iter().enumerate() {
                // the last label ends at the edge, the others centre on their tick
                @let anchor = if i + 1 == labels.len() { "end" } else { "middle" };
                text.axis x=(format!("{:.1}", x(*t))) y=(H - 8.0) text-anchor=(anchor) { (l) }
            }
            text.axis x="4" y=(top + 4.0) { (c.unit) }
            @if !band.is_empty() { path.band d=(band) {} }
            @if !line.is_empty() { path.line d=(line) {} }
            @if let Some(a) = c.ahead {
                line.ahead x1=(format!("{:.1}", x(a.from.0))) y1=(format!("{:.1}", y(a.from.1)))
                    x2=(format!("{:.1}", x(a.to.0))) y2=(format!("{:.1}", y(a.to.1))) {
                    title { "forecast to the runout" }
                }
            }
            @for m in &c.marks {
                @if (c.from_ms..=c.to_ms).contains(&m.t_ms) {
                    line.mark x1=(format!("{:.1}", x(m.t_ms))) x2=(format!("{:.1}", x(m.t_ms))) y1=(top) y2=(bottom) {
                        title { (m.label) }
                    }
                }
            }
            line.axisline x1=(LEFT) x2=(W - RIGHT) y1=(bottom) y2=(bottom) {}
        }
    }
}

/// Fuzzing entry (target `console`, with the console's other parsers):
/// any points, window, marks and projection draw without a panic.
pub fn fuzz(data: &[u8]) {
    let word = |c: &[u8]| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&c[..8]);
        b
    };
    let points: Vec<Point> = data
        .chunks_exact(16)
        .map(|c| {
            let v = f64::from_le_bytes(word(&c[8..]));
            Point {
                t_ms: i64::from_le_bytes(word(c)),
                lo: v - 1.0,
                mid: v,
                hi: v + 1.0,
            }
        })
        .collect();
    let (from_ms, to_ms) = match (points.first(), points.last()) {
        (Some(a), Some(b)) => (a.t_ms.min(b.t_ms), a.t_ms.max(b.t_ms)),
        _ => (0, 1),
    };
    let ahead = points.get(1).map(|p| Ahead {
        from: (from_ms, p.mid),
        to: (p.t_ms, p.lo),
    });
    let marks = points
        .iter()
        .take(4)
        .map(|p| Mark {
            t_ms: p.t_ms,
            label: format!("{}", p.mid),
        })
        .collect();
    let gap_after_ms = points.get(2).map_or(300_000, |p| p.t_ms);
    let _ = render(&Chart {
        from_ms,
        to_ms,
        points,
        gap_after_ms,
        marks,
        ahead,
        unit: "L",
        title: "fuzz",
        tz: &TimeZone::UTC,
    });
}

fn label_time(ms: i64) -> String {
    Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: i64, v: f64) -> Point {
        Point {
            t_ms: t,
            lo: v,
            mid: v,
            hi: v,
        }
    }

    #[test]
    fn a_silence_longer_than_the_threshold_is_a_gap_at_the_edges_too() {
        let pts = [p(100, 1.0), p(110, 1.0), p(200, 1.0)];
        assert_eq!(
            gaps(&pts, 0, 300, 50),
            vec![(0, 100), (110, 200), (200, 300)]
        );
        assert_eq!(gaps(&pts, 90, 210, 50), vec![(110, 200)]);
        assert!(gaps(&[], 0, 10, 50).is_empty());
        assert_eq!(gaps(&[], 0, 100, 50), vec![(0, 100)]);
    }

    #[test]
    fn thinning_keeps_one_point_per_column_with_the_extremes() {
        let pts: Vec<Point> = (0..1000).map(|i| p(i, (i % 7) as f64)).collect();
        let out = thin(&pts, 0, 999, 10);
        assert_eq!(out.len(), 10);
        assert!(out.iter().all(|q| q.lo == 0.0 && q.hi == 6.0), "{out:?}");
        // points outside the window and non-finite values are dropped
        let out = thin(&[p(-5, 1.0), p(5, f64::NAN), p(6, 2.0)], 0, 10, 10);
        assert_eq!(out, vec![p(6, 2.0)]);
    }

    #[test]
    fn axis_ticks_are_round_and_inside_the_range() {
        assert_eq!(
            ticks(0.0, 10_000.0, 4),
            vec![0.0, 2500.0, 5000.0, 7500.0, 10_000.0]
        );
        assert_eq!(ticks(3.2, 4.1, 4), vec![3.25, 3.5, 3.75, 4.0]);
        assert!(ticks(1.0, 1.0, 4).is_empty());
        assert!(ticks(f64::NAN, 1.0, 4).is_empty());
    }

    #[test]
    fn a_year_of_hourly_points_draws_as_at_most_one_point_per_column() {
        let hour = 3_600_000;
        let pts: Vec<Point> = (0..8760)
            .map(|i| p(i * hour, 1000.0 + (i % 24) as f64))
            .collect();
        let tz = TimeZone::UTC;
        let svg = render(&Chart {
            from_ms: 0,
            to_ms: 8760 * hour,
            points: pts,
            gap_after_ms: 2 * hour,
            marks: vec![Mark {
                t_ms: 100 * hour,
                label: "delivery <12000 L>".into(),
            }],
            ahead: None,
            unit: "L",
            title: "volume",
            tz: &tz,
        })
        .into_string();
        let columns = (W - LEFT - RIGHT) as usize;
        let path = |class: &str| {
            let d = svg
                .split(&format!("class=\"{class}\" d=\""))
                .nth(1)
                .unwrap_or_default();
            let d = d.split('"').next().unwrap_or_default();
            d.matches(['M', 'L']).count()
        };
        assert!(path("line") <= columns, "{} line points", path("line"));
        assert!(path("band") <= 2 * columns, "{} band points", path("band"));
        assert!(
            path("line") > columns / 2,
            "the year is drawn across the width"
        );
        assert!(
            svg.contains("delivery &lt;12000 L&gt;"),
            "marks are escaped"
        );
        assert!(!svg.contains("class=\"gap\""), "no gap in a full year");
    }

    #[test]
    fn a_gap_breaks_the_line_and_is_shaded() {
        let hour = 3_600_000;
        let mut pts: Vec<Point> = (0..10).map(|i| p(i * hour, 5.0)).collect();
        pts.extend((20..30).map(|i| p(i * hour, 6.0)));
        let tz = TimeZone::UTC;
        let svg = render(&Chart {
            from_ms: 0,
            to_ms: 29 * hour,
            points: pts,
            gap_after_ms: 2 * hour,
            marks: vec![],
            ahead: Some(Ahead {
                from: (29 * hour, 6.0),
                to: (29 * hour, 0.0),
            }),
            unit: "L",
            title: "volume",
            tz: &tz,
        })
        .into_string();
        assert_eq!(svg.matches("class=\"gap\"").count(), 1, "{svg}");
        let line = svg.split("class=\"line\" d=\"").nth(1).unwrap_or_default();
        assert_eq!(
            line.split('"')
                .next()
                .unwrap_or_default()
                .matches('M')
                .count(),
            2
        );
        assert!(svg.contains("class=\"ahead\""));
        // SVG inside HTML has no void elements: an unclosed <line> or
        // <path> would take everything after it as its children (drawn
        // nowhere)
        for tag in ["line", "path", "rect", "text"] {
            assert_eq!(
                svg.matches(&format!("<{tag} ")).count(),
                svg.matches(&format!("</{tag}>")).count(),
                "every <{tag}> is closed: {svg}"
            );
        }
    }
}
