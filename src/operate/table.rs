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

#[cfg(test)]
mod tests {
    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let rows = vec![vec!["events:incoming", "3"], vec!["a", "12345"]];
        let text = super::render(&["stream", "length"], &rows);
        assert_eq!(text, "stream           length\nevents:incoming  3\na                12345\n");
    }
}
