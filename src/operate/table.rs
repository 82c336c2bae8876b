//! Plain-text tables for people: columns padded to their widest cell, two spaces apart, no
//! trailing blanks, so `column`-free shells and `grep` read them alike.

/// `rows` under `header`, one line each, every line ending in a newline.
pub fn render<S: AsRef<str>>(header: &[&str], rows: &[Vec<S>]) -> String {
    let width = |i: usize| {
        rows.iter()
            .filter_map(|r| r.get(i))
            .map(|c| c.as_ref().chars().count())
            .chain([header[i].len()])
            .max()
    };
    let widths: Vec<usize> = (0..header.len()).map(|i| width(i).unwrap_or(0)).collect();
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells.zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(&mut header.iter().copied());
    for r in rows {
        out.push_str(&line(&mut r.iter().map(AsRef::as_ref)));
    }
    out
}

/// A duration as people read it at a glance: `850ms`, `42s`, `5m12s`, `3h04m`, `12d05h`.
pub fn age(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The time in an entry id (`2026-12-01T10:00:00.123Z`), or `-` for none.
pub fn id_time(id: Option<&str>) -> String {
    id.and_then(crate::event::entry_timestamp).map_or_else(|| "-".to_string(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(super::age(Duration::from_millis(850)), "850ms");
        assert_eq!(super::age(Duration::from_secs(42)), "42s");
        assert_eq!(super::age(Duration::from_secs(312)), "5m12s");
        assert_eq!(super::age(Duration::from_secs(3 * 3600 + 240)), "3h04m");
        assert_eq!(super::age(Duration::from_secs(12 * 86_400 + 5 * 3600)), "12d05h");
    }

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let rows = vec![vec!["events:incoming", "3"], vec!["a", "12345"]];
        let text = super::render(&["stream", "length"], &rows);
        assert_eq!(text, "stream           length\nevents:incoming  3\na                12345\n");
    }
}
