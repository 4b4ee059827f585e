//! The one table renderer of the reports (simulate's patients, check's
//! cases, bench's pairs): columns sized to their contents, numbers right
//! aligned, no borders, so a table reads well in a terminal, a file or a
//! grader's log alike. `comfy-table` does the layout.

use comfy_table::{CellAlignment, ColumnConstraint, ContentArrangement, Table, presets};

/// How a column's cells are aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Renders `rows` under `header`, `align` giving each column's alignment.
/// Lines carry no trailing spaces; the text ends in a newline.
pub fn render<R, C>(header: &[(&str, Align)], rows: R) -> String
where
    R: IntoIterator<Item = C>,
    C: IntoIterator<Item = String>,
{
    layout(header, true, rows)
}

/// As [`render`], without the header line (for lines that name
/// themselves, as check's verdicts do).
pub fn render_rows<R, C>(columns: &[(&str, Align)], rows: R) -> String
where
    R: IntoIterator<Item = C>,
    C: IntoIterator<Item = String>,
{
    layout(columns, false, rows)
}

fn layout<R, C>(header: &[(&str, Align)], with_header: bool, rows: R) -> String
where
    R: IntoIterator<Item = C>,
    C: IntoIterator<Item = String>,
{
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    if with_header {
        table.set_header(header.iter().map(|(name, _)| *name));
    }
    for row in rows {
        table.add_row(row);
    }
    for (k, (_, align)) in header.iter().enumerate() {
        if let Some(column) = table.column_mut(k) {
            column.set_cell_alignment(match align {
                Align::Left => CellAlignment::Left,
                Align::Right => CellAlignment::Right,
            });
            // Cells are never wrapped: a long evidence line stays one line.
            column.set_constraint(ColumnConstraint::ContentWidth);
        }
    }
    let mut out = String::new();
    for line in table.lines() {
        // The preset pads each cell by one space on both sides.
        let line = line.strip_prefix(' ').unwrap_or(&line).trim_end();
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_contents_and_numbers_align_right() {
        let text = render(
            &[("user", Align::Left), ("slot", Align::Right)],
            [
                vec!["patient1".to_owned(), "3".to_owned()],
                vec!["p2".to_owned(), "12".to_owned()],
            ],
        );
        assert_eq!(
            text, "user      slot\npatient1     3\np2          12\n",
            "{text}"
        );
    }
}
